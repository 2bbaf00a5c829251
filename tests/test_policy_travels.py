"""The target policy travels with every request: a transport the user built and
passed in enforces the dispatcher's policy as one the dispatcher built does.

The attack: a host name that resolves to a public address when the endpoint is
registered and to 127.0.0.1 when the webhook is sent (DNS rebinding). Every
shipped transport, built by the user with no policy of its own, must refuse it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

import hookdispatch as hd
import hookdispatch._targets

REBOUND = "rebinding.test"
PUBLIC = "93.184.216.34"

SYNC_TRANSPORTS: list[Callable[[], Any]] = [hd.SocketTransport, hd.HttpxTransport]
ASYNC_TRANSPORTS: list[Callable[[], Any]] = [
    hd.AsyncioTransport,
    hd.AsyncHttpxTransport,
    hd.AiohttpTransport,
]
ASYNC_IDS = ["AsyncioTransport", "AsyncHttpxTransport", "AiohttpTransport"]


@pytest.fixture
def rebinding_dns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``rebinding.test`` resolves to a public address the first time, then to
    127.0.0.1, for every resolver that asks the system (getaddrinfo). Yields the
    answers given, in order."""
    real = socket.getaddrinfo
    answers: list[str] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in (REBOUND, REBOUND.encode()):
            answer = PUBLIC if not answers else "127.0.0.1"
            answers.append(answer)
            return real(answer, port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


@pytest.fixture
def strict_default(monkeypatch: pytest.MonkeyPatch) -> hd.TargetPolicy:
    """The real default policy (conftest makes it local for the other tests), with
    plain http allowed so that the local receiver is refused for its address only."""
    policy = hd.TargetPolicy(allow_http=True)
    monkeypatch.setattr(hookdispatch._targets, "_default", policy)
    return policy


def _assert_blocked(attempts: list[hd.Attempt], httpserver: HTTPServer) -> None:
    [attempt] = attempts
    assert attempt.failure is hd.FailureKind.BLOCKED, attempt.error
    assert httpserver.log == []


@pytest.mark.parametrize("make_transport", SYNC_TRANSPORTS, ids=lambda t: t.__name__)
def test_a_user_built_sync_transport_refuses_a_rebound_name(
    make_transport: Callable[[], hd.Transport],
    rebinding_dns: list[str],
    strict_default: hd.TargetPolicy,
    httpserver: HTTPServer,
) -> None:
    httpserver.expect_request("/hook").respond_with_data("")
    url = f"http://{REBOUND}:{httpserver.port}/hook"
    transport = make_transport()
    with hd.Dispatcher(
        storage=hd.MemoryStorage(), workers=0, transport=transport, targets=strict_default
    ) as hooks:
        hooks.add_endpoint(url)  # resolves to the public address: accepted
        event = hooks.dispatch("user.created", {})
        [delivery] = hooks.deliveries(event_id=event.id)
        _assert_blocked(hooks.attempts(delivery.id), httpserver)
    transport.close()
    assert rebinding_dns[0] == PUBLIC
    assert "127.0.0.1" in rebinding_dns[1:]


@pytest.mark.parametrize("make_transport", ASYNC_TRANSPORTS, ids=ASYNC_IDS)
def test_a_user_built_async_transport_refuses_a_rebound_name(
    make_transport: Callable[[], hd.AsyncTransport],
    rebinding_dns: list[str],
    strict_default: hd.TargetPolicy,
    httpserver: HTTPServer,
) -> None:
    httpserver.expect_request("/hook").respond_with_data("")
    url = f"http://{REBOUND}:{httpserver.port}/hook"

    async def main() -> list[hd.Attempt]:
        transport = make_transport()
        try:
            async with hd.AsyncDispatcher(
                storage=hd.MemoryStorage(),
                concurrency=0,
                transport=transport,
                targets=strict_default,
            ) as hooks:
                await hooks.add_endpoint(url)
                event = await hooks.dispatch("user.created", {})
                [delivery] = await hooks.deliveries(event_id=event.id)
                return await hooks.attempts(delivery.id)
        finally:
            await transport.aclose()

    _assert_blocked(asyncio.run(main()), httpserver)
    assert rebinding_dns[0] == PUBLIC
    assert "127.0.0.1" in rebinding_dns[1:]


@pytest.mark.parametrize("make_transport", SYNC_TRANSPORTS, ids=lambda t: t.__name__)
def test_a_request_without_a_policy_is_held_to_the_default(
    make_transport: Callable[[], hd.Transport],
    strict_default: hd.TargetPolicy,
    httpserver: HTTPServer,
) -> None:
    """Used on its own, a transport built without ``targets`` still refuses what the
    default policy refuses: no transport is ever unguarded."""
    httpserver.expect_request("/hook").respond_with_data("")
    transport = make_transport()
    try:
        outcome = transport.send(
            hd.Request(url=httpserver.url_for("/hook"), headers={}, body=b"{}", timeout=5.0)
        )
    finally:
        transport.close()
    assert isinstance(outcome, hd.BlockedTargetError)
    assert httpserver.log == []


@pytest.mark.parametrize("make_transport", ASYNC_TRANSPORTS, ids=ASYNC_IDS)
def test_the_requests_policy_wins_over_the_transports(
    make_transport: Callable[[], hd.AsyncTransport], httpserver: HTTPServer
) -> None:
    """A connection opened under a lenient policy is never reused for a request
    under a strict one: connections are kept per policy."""
    httpserver.expect_request("/hook").respond_with_data("")
    url = httpserver.url_for("/hook")

    async def main() -> tuple[hd.Response | hd.TransportError, ...]:
        transport = make_transport()
        try:
            lenient = hd.Request(
                url=url, headers={}, body=b"{}", timeout=5.0, targets=hd.TargetPolicy.local()
            )
            strict = hd.Request(
                url=url,
                headers={},
                body=b"{}",
                timeout=5.0,
                targets=hd.TargetPolicy(allow_http=True),
            )
            return (await transport.send(lenient), await transport.send(strict))
        finally:
            await transport.aclose()

    allowed, refused = asyncio.run(main())
    assert isinstance(allowed, hd.Response)
    assert allowed.status_code == 200
    assert isinstance(refused, hd.BlockedTargetError)
    assert len(httpserver.log) == 1
