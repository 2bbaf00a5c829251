"""What an attack on the transport layer found, each now a test over all five transports.

A receiver that floods 1xx answers must not stall the event loop nor stretch the
deadline; no transport quotes the endpoint URL (and its token) in an outcome; the
async transports keep working after ``aclose`` and in a new event loop; and the
policy's refusal of plain http holds in every transport, not only in the
dispatchers' check.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

import hookdispatch as hd

from receivers import RawServer, raw_server, read_head

LOCAL = hd.TargetPolicy.local()
SYNC: list[Callable[[], Any]] = [hd.SocketTransport, hd.HttpxTransport]
ASYNC: list[Callable[[], Any]] = [hd.AsyncioTransport, hd.AsyncHttpxTransport, hd.AiohttpTransport]
ALL = SYNC + ASYNC


def _name(factory: Callable[[], Any]) -> str:
    return getattr(factory, "__name__", repr(factory))


def _send(factory: Callable[[], Any], request: hd.Request) -> hd.Response | hd.TransportError:
    """One request through a fresh transport of ``factory``, sync or async."""
    transport = factory()
    if factory in SYNC:
        try:
            return transport.send(request)  # type: ignore[no-any-return]
        finally:
            transport.close()

    async def main() -> hd.Response | hd.TransportError:
        try:
            return await transport.send(request)  # type: ignore[no-any-return]
        finally:
            await transport.aclose()

    return asyncio.run(main())


def flood_interim(conn: socket.socket, stop: threading.Event) -> None:
    """Read the request, then answer ``100 Continue`` for ever, 250 KB at a time."""
    read_head(conn)
    heads = b"HTTP/1.1 100 Continue\r\n\r\n" * 10_000
    with contextlib.suppress(OSError):
        while not stop.is_set():
            conn.sendall(heads)


def garbage(conn: socket.socket, stop: threading.Event) -> None:
    read_head(conn)
    with contextlib.suppress(OSError):
        conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")


@pytest.fixture
def flooding() -> Iterator[RawServer]:
    with raw_server(flood_interim) as server:
        yield server


def test_a_flood_of_interim_answers_neither_stalls_the_loop_nor_the_deadline(
    flooding: RawServer,
) -> None:
    request = hd.Request(
        url=f"http://127.0.0.1:{flooding.port}/hook",
        headers={},
        body=b"{}",
        timeout=1.0,
        targets=LOCAL,
    )

    async def main() -> tuple[hd.Response | hd.TransportError, float, float]:
        gaps: list[float] = []
        done = asyncio.Event()

        async def tick() -> None:
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        ticker = asyncio.create_task(tick())
        transport = hd.AsyncioTransport()
        began = time.monotonic()
        try:
            outcome = await transport.send(request)
        finally:
            elapsed = time.monotonic() - began
            done.set()
            await ticker
            await transport.aclose()
        return outcome, elapsed, max(gaps)

    outcome, elapsed, longest_gap = asyncio.run(main())
    assert isinstance(outcome, hd.DeliveryTimeout), outcome
    assert elapsed < 2.0  # the 1 s deadline, with a margin
    assert longest_gap < 0.5  # the loop kept running the other tasks


@pytest.mark.parametrize("factory", ALL, ids=_name)
def test_no_outcome_quotes_the_endpoint_url(factory: Callable[[], Any]) -> None:
    with raw_server(garbage) as server:
        request = hd.Request(
            url=f"http://127.0.0.1:{server.port}/hook?token=SECRET123",
            headers={},
            body=b"{}",
            timeout=2.0,
            targets=LOCAL,
        )
        outcome = _send(factory, request)
    assert isinstance(outcome, hd.TransportError), outcome
    assert "SECRET123" not in str(outcome)
    assert "SECRET123" not in repr(outcome)


def test_an_attempt_record_never_quotes_the_endpoint_url(httpserver: HTTPServer) -> None:
    """Whatever a transport of someone else's says, the stored error has no URL."""

    class Quoting:
        def send(self, request: hd.Request) -> hd.TransportError:
            return hd.ConnectError(f"could not reach {request.url}")

        def close(self) -> None:
            pass

    hooks = hd.Dispatcher(
        storage=hd.MemoryStorage(),
        workers=0,
        transport=Quoting(),
        retry=hd.RetryPolicy(max_attempts=1),
    )
    hooks.add_endpoint(httpserver.url_for("/hook?token=SECRET123"))
    event = hooks.dispatch("user.created", {})
    [delivery] = hooks.deliveries(event_id=event.id)
    [attempt] = hooks.attempts(delivery.id)
    hooks.close()
    assert attempt.error is not None
    assert "SECRET123" not in attempt.error
    assert "SECRET123" not in (delivery.last_error or "")


@pytest.mark.parametrize("factory", ASYNC, ids=_name)
def test_async_transports_work_after_aclose_and_in_a_new_loop(
    factory: Callable[[], Any], httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    request = hd.Request(
        url=httpserver.url_for("/hook"), headers={}, body=b"{}", timeout=5.0, targets=LOCAL
    )
    transport = factory()

    async def send_then_close() -> hd.Response | hd.TransportError:
        outcome = await transport.send(request)
        await transport.aclose()
        return outcome  # type: ignore[no-any-return]

    async def close_then_send() -> hd.Response | hd.TransportError:
        await transport.aclose()
        try:
            return await transport.send(request)  # type: ignore[no-any-return]
        finally:
            await transport.aclose()

    first = asyncio.run(transport.send(request))  # one loop
    second = asyncio.run(send_then_close())  # a new loop
    third = asyncio.run(close_then_send())  # after aclose
    for outcome in (first, second, third):
        assert isinstance(outcome, hd.Response), outcome
        assert outcome.status_code == 200


@pytest.mark.parametrize("factory", ALL, ids=_name)
def test_every_transport_refuses_plain_http_when_the_policy_does(
    factory: Callable[[], Any], httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    request = hd.Request(
        url=httpserver.url_for("/hook"),
        headers={},
        body=b"{}",
        timeout=5.0,
        targets=hd.TargetPolicy(allowed_networks=["127.0.0.0/8"]),  # the address: allowed
    )
    outcome = _send(factory, request)
    assert isinstance(outcome, hd.BlockedTargetError), outcome
    assert "http://" in str(outcome)
    assert httpserver.log == []
