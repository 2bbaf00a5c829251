"""SSRF protection end to end: registration, every attempt, and DNS rebinding."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from pytest_httpserver import HTTPServer

import hookdispatch as hd

STRICT = hd.TargetPolicy()
SPELLINGS = [
    "http://127.0.0.1:{port}/hook",
    "http://2130706433:{port}/hook",
    "http://0x7f.1:{port}/hook",
    "http://017700000001:{port}/hook",
    "http://[::ffff:127.0.0.1]:{port}/hook",
    "http://localhost:{port}/hook",
]


@pytest.mark.parametrize("template", SPELLINGS)
def test_loopback_in_any_spelling_is_refused_at_registration(
    template: str, httpserver: HTTPServer, make_dispatcher: Callable[..., Any]
) -> None:
    hooks = make_dispatcher(
        storage=hd.MemoryStorage(), workers=0, targets=hd.TargetPolicy(allow_http=True)
    )
    with pytest.raises(hd.InvalidEndpointError, match=r"TargetPolicy\.local"):
        hooks.add_endpoint(template.format(port=httpserver.port))
    assert hooks.endpoints() == []


def test_http_is_refused_by_default_naming_the_switch(make_dispatcher) -> None:
    hooks = make_dispatcher(storage=hd.MemoryStorage(), workers=0, targets=STRICT)
    with pytest.raises(hd.InvalidEndpointError, match=r"https://.*TargetPolicy\.local\(\)"):
        hooks.add_endpoint("http://example.com/hooks")


@pytest.mark.parametrize("template", SPELLINGS)
def test_every_attempt_is_checked_and_a_blocked_one_is_not_retried(
    template: str, httpserver: HTTPServer, tmp_path, make_dispatcher
) -> None:
    """An endpoint stored under the local policy is refused under a strict one."""
    httpserver.expect_request("/hook").respond_with_data("")
    storage = hd.SQLiteStorage(tmp_path / "hooks.db")
    local = make_dispatcher(storage=storage, workers=0, targets=hd.TargetPolicy.local())
    local.add_endpoint(template.format(port=httpserver.port))
    strict = make_dispatcher(storage=storage, workers=0, targets=hd.TargetPolicy(allow_http=True))

    event = strict.dispatch("user.created", {})

    [delivery] = strict.deliveries(event_id=event.id)
    [attempt] = strict.attempts(delivery.id)
    assert attempt.failure is hd.FailureKind.BLOCKED
    assert delivery.status is hd.DeliveryStatus.FAILED  # not retried
    assert httpserver.log == []


def test_dns_rebinding_is_caught_at_connect_time(
    httpserver: HTTPServer, make_dispatcher, driver: str
) -> None:
    """The name resolves to a public address when registered, to 127.0.0.1 when sent."""
    httpserver.expect_request("/hook").respond_with_data("")
    answers = [["93.184.216.34"], ["127.0.0.1"]]
    asked: list[str] = []

    def rebinding_resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers[min(len(asked), len(answers)) - 1]

    policy = hd.TargetPolicy(allow_http=True, resolver=rebinding_resolver)
    hooks = make_dispatcher(storage=hd.MemoryStorage(), workers=0, targets=policy)
    hooks.add_endpoint(f"http://rebind.test:{httpserver.port}/hook")  # checked: public

    event = hooks.dispatch("user.created", {})

    [delivery] = hooks.deliveries(event_id=event.id)
    [attempt] = hooks.attempts(delivery.id)
    assert attempt.failure is hd.FailureKind.BLOCKED
    assert "127.0.0.1" in (attempt.error or "")
    assert httpserver.log == []
    assert asked == ["rebind.test", "rebind.test"]


def test_allowed_networks_let_an_internal_receiver_through(
    httpserver: HTTPServer, make_dispatcher
) -> None:
    httpserver.expect_request("/hook").respond_with_data("")
    policy = hd.TargetPolicy(allow_http=True, allowed_networks=["127.0.0.0/8"])
    hooks = make_dispatcher(storage=hd.MemoryStorage(), workers=0, targets=policy)
    hooks.add_endpoint(httpserver.url_for("/hook"))

    event = hooks.dispatch("user.created", {})

    [delivery] = hooks.deliveries(event_id=event.id)
    assert delivery.status is hd.DeliveryStatus.SUCCEEDED


@pytest.mark.parametrize("make_transport", [hd.SocketTransport, hd.HttpxTransport])
def test_the_transports_enforce_the_policy_on_their_own(
    httpserver: HTTPServer, make_transport: type[hd.Transport]
) -> None:
    """A transport given a policy refuses by itself, whatever calls it."""
    httpserver.expect_request("/hook").respond_with_data("")
    request = hd.Request(
        url=httpserver.url_for("/hook").replace("127.0.0.1", "localhost"),
        headers={},
        body=b"{}",
        timeout=5.0,
    )
    transport = make_transport(targets=hd.TargetPolicy(allow_http=True))  # type: ignore[call-arg]
    try:
        outcome = transport.send(request)
    finally:
        transport.close()
    assert isinstance(outcome, hd.BlockedTargetError)
    assert urlsplit(request.url).hostname == "localhost"
    assert httpserver.log == []
