"""The transports on their own: AsyncioTransport's keep-alive pool; every built-in
transport against misbehaving receivers, early answers, chunked bodies, TLS and
names that do not resolve.

Against raw socket receivers and pytest-httpserver on 127.0.0.1. (The dispatcher
suites run on the defaults, SocketTransport and AsyncioTransport; this file also
holds the others to the same account. The sync pool's own tests are in
test_connections.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import trustme
from pytest_httpserver import HTTPServer

import hookdispatch as hd

from receivers import (
    CountingServer,
    RawServer,
    close_after_headers,
    huge_body,
    invalid_http,
    keep_alive,
    late_response,
    never_answer,
    never_close,
    raw_server,
    read_head,
    read_one_request,
    reset_mid_response,
    serve_once_and_note_the_hang_up,
    wait_for,
)

LOCAL = hd.TargetPolicy.local()
ASYNC_TRANSPORTS = [
    pytest.param(hd.AsyncioTransport, id="asyncio"),
    pytest.param(hd.AiohttpTransport, id="aiohttp"),
]


def _request(url: str, *, timeout: float = 5.0) -> hd.Request:
    return hd.Request(
        url=url, headers={"content-type": "application/json"}, body=b"{}", timeout=timeout
    )


def statuses(outcomes: list[hd.Response | hd.TransportError]) -> list[object]:
    return [getattr(outcome, "status_code", outcome) for outcome in outcomes]


def send_all(transport: hd.AsyncTransport, requests: list[hd.Request]) -> list[object]:
    """Send ``requests`` one after another on a fresh loop, then close the transport."""

    async def run() -> list[object]:
        try:
            return [await transport.send(request) for request in requests]
        finally:
            await transport.aclose()

    return asyncio.run(run())


def send_one(transport: object, request: hd.Request) -> object:
    """Send ``request`` with a sync or an async transport (on a fresh loop); close it."""
    if isinstance(transport, hd.Transport):
        try:
            return transport.send(request)
        finally:
            transport.close()
    return send_all(transport, [request])[0]  # type: ignore[arg-type]


# Misbehaving receivers, chunked bodies, TLS --------------------------------------------

FAULTS = [
    pytest.param(invalid_http, hd.InvalidResponseError, id="invalid-http"),
    pytest.param(late_response, hd.DeliveryTimeout, id="after-deadline"),
    pytest.param(reset_mid_response, hd.ConnectionBrokenError, id="reset-mid-response"),
    pytest.param(close_after_headers, hd.ConnectionBrokenError, id="close-after-headers"),
    pytest.param(never_close, hd.DeliveryTimeout, id="never-closes"),
]


@pytest.mark.parametrize("make_transport", ASYNC_TRANSPORTS)
@pytest.mark.parametrize(("behaviour", "error"), FAULTS)
def test_a_misbehaving_receiver_is_a_classified_outcome_within_the_deadline(
    make_transport: Callable[..., hd.AsyncTransport], behaviour, error: type
) -> None:
    with raw_server(behaviour) as server:
        began = time.monotonic()
        [outcome] = send_all(make_transport(targets=LOCAL), [_request(server.url, timeout=1.0)])
        elapsed = time.monotonic() - began
    assert isinstance(outcome, error), outcome
    assert elapsed < 2.5  # the deadline's own bound is tested with the dispatchers


@pytest.mark.parametrize("make_transport", ASYNC_TRANSPORTS)
def test_a_huge_body_is_cut_at_the_cap(make_transport: Callable[..., hd.AsyncTransport]) -> None:
    with raw_server(huge_body) as server:
        transport = make_transport(targets=LOCAL, max_response_bytes=1000)
        [outcome] = send_all(transport, [_request(server.url)])
    assert isinstance(outcome, hd.Response)
    assert (outcome.status_code, outcome.body) == (500, b"x" * 1000)


@pytest.mark.parametrize("make_transport", ASYNC_TRANSPORTS)
def test_a_refused_port_is_a_connect_error(
    make_transport: Callable[..., hd.AsyncTransport],
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    [outcome] = send_all(make_transport(targets=LOCAL), [_request(f"http://127.0.0.1:{port}/")])
    assert isinstance(outcome, hd.ConnectError), outcome


def chunked_429(conn: socket.socket, stop: threading.Event) -> None:
    """Answer 429 with Retry-After and a chunked body, in pieces."""
    if not read_one_request(conn, bytearray()):
        return
    with contextlib.suppress(OSError):
        conn.sendall(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\n")
        conn.sendall(b"Transfer-Encoding: chunked\r\n\r\n5\r\nslow \r\n")
        time.sleep(0.05)
        conn.sendall(b"4\r\ndown\r\n0\r\n\r\n")


@pytest.mark.parametrize("make_transport", ASYNC_TRANSPORTS)
def test_a_chunked_answer_and_its_headers_arrive_whole(
    make_transport: Callable[..., hd.AsyncTransport],
) -> None:
    with raw_server(chunked_429) as server:
        [outcome] = send_all(make_transport(targets=LOCAL), [_request(server.url)])
    assert isinstance(outcome, hd.Response)
    assert (outcome.status_code, outcome.body) == (429, b"slow down")
    assert outcome.headers.get("retry-after") == "3"


@pytest.fixture(scope="module")
def certificate_authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def https_server(certificate_authority: trustme.CA) -> Iterator[HTTPServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate_authority.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    server = HTTPServer(host="127.0.0.1", ssl_context=context)
    server.start()
    server.expect_request("/hook").respond_with_data("secure")
    yield server
    server.clear()
    server.stop()


@pytest.mark.parametrize(
    "make_transport", [*ASYNC_TRANSPORTS, hd.SocketTransport, hd.HttpxTransport]
)
def test_tls_is_verified_against_the_trusted_authorities(
    make_transport: Callable[..., object], https_server: HTTPServer, certificate_authority
) -> None:
    trusting = ssl.create_default_context()
    certificate_authority.configure_trust(trusting)
    request = _request(https_server.url_for("/hook"))

    trusted = send_one(make_transport(targets=LOCAL, verify=trusting), request)
    unknown_authority = send_one(make_transport(targets=LOCAL), request)
    unverified = send_one(make_transport(targets=LOCAL, verify=False), request)
    assert isinstance(trusted, hd.Response)
    assert (trusted.status_code, trusted.body) == (200, b"secure")
    assert isinstance(unknown_authority, hd.TLSError), unknown_authority
    assert isinstance(unverified, hd.Response)


# AsyncioTransport's pool ------------------------------------------------------------


def test_requests_one_after_another_share_one_connection() -> None:
    with raw_server(keep_alive()) as server:
        outcomes = send_all(hd.AsyncioTransport(targets=LOCAL), [_request(server.url)] * 20)
    assert statuses(outcomes) == [200] * 20
    assert server.connections == 1


def test_asyncio_transport_runs_on_uvloop_too() -> None:
    """uvicorn runs on uvloop when it is installed, and uvloop's stream transports are
    not subclasses of asyncio.Transport: every send used to fail there."""
    uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed (not on Windows)")
    transport = hd.AsyncioTransport(targets=LOCAL)

    async def run(url: str) -> list[object]:
        try:
            return [await transport.send(_request(url)) for _ in range(3)]
        finally:
            await transport.aclose()

    with raw_server(keep_alive()) as server:
        outcomes = uvloop.run(run(server.url))
    assert statuses(outcomes) == [200] * 3
    assert server.connections == 1


def test_a_connection_the_receiver_hung_up_is_replaced_not_reused() -> None:
    async def run(url: str, server: RawServer) -> list[object]:
        transport = hd.AsyncioTransport(targets=LOCAL)
        outcomes = []
        for sent in range(1, 6):
            outcomes.append(await transport.send(_request(url)))
            for _ in range(500):  # until the receiver has hung up, and we have seen it
                idle = [c for stack in transport._pool.idle.values() for c in stack]
                if server.finished == sent and all(c.closed for c in idle):
                    break
                await asyncio.sleep(0.01)
        await transport.aclose()
        return outcomes

    with raw_server(keep_alive(per_connection=1)) as server:
        outcomes = asyncio.run(run(server.url, server))
    assert statuses(outcomes) == [200] * 5
    assert server.connections == 5


def test_a_response_cut_at_the_cap_closes_its_connection() -> None:
    with raw_server(keep_alive(body=b"x" * (8 << 20))) as server:
        transport = hd.AsyncioTransport(max_response_bytes=10, targets=LOCAL)
        first, second = send_all(transport, [_request(server.url)] * 2)
    assert isinstance(first, hd.Response)
    assert isinstance(second, hd.Response)
    assert first.body == second.body == b"x" * 10
    assert server.connections == 2  # the unread rest made the first one unusable


def test_a_body_that_arrived_whole_keeps_its_connection_even_past_the_cap() -> None:
    with raw_server(keep_alive(body=b"x" * 1000)) as server:
        transport = hd.AsyncioTransport(max_response_bytes=10, targets=LOCAL)
        outcomes = send_all(transport, [_request(server.url)] * 2)
    assert [outcome.body for outcome in outcomes] == [b"x" * 10] * 2  # type: ignore[union-attr]
    assert server.connections == 1


def test_never_more_than_max_connections_open_however_many_tasks_send() -> None:
    server = CountingServer(keep_alive(delay=0.02))
    transport = hd.AsyncioTransport(max_connections=2, targets=LOCAL)

    async def run() -> list[object]:
        try:
            return await asyncio.gather(*(transport.send(_request(server.url)) for _ in range(40)))
        finally:
            await transport.aclose()

    try:
        outcomes = asyncio.run(run())
    finally:
        server.close()
    assert statuses(outcomes) == [200] * 40
    assert server.most_open <= 2
    assert server.connections == 2  # and both were kept alive throughout


def test_waiting_for_a_connection_counts_against_the_deadline() -> None:
    async def run(url: str) -> tuple[object, float, object]:
        transport = hd.AsyncioTransport(max_connections=1, targets=LOCAL)
        slow = asyncio.create_task(transport.send(_request(url)))
        await asyncio.sleep(0.2)
        began = time.monotonic()
        outcome = await transport.send(_request(url, timeout=0.5))
        waited = time.monotonic() - began
        await slow
        after = await transport.send(_request(url))  # the waiter left no slot taken
        await transport.aclose()
        return outcome, waited, after

    with raw_server(keep_alive(delay=2.0)) as server:
        outcome, waited, after = asyncio.run(run(server.url))
    assert isinstance(outcome, hd.DeliveryTimeout)
    assert 0.4 < waited < 1.5
    assert statuses([after]) == [200]  # type: ignore[list-item]


def test_a_request_waiting_for_a_connection_gets_the_next_one_freed() -> None:
    async def run(url: str) -> list[object]:
        transport = hd.AsyncioTransport(max_connections=1, targets=LOCAL)
        try:
            return await asyncio.gather(*(transport.send(_request(url)) for _ in range(3)))
        finally:
            await transport.aclose()

    with raw_server(keep_alive(delay=0.1)) as server:
        outcomes = asyncio.run(run(server.url))
    assert statuses(outcomes) == [200] * 3
    assert server.connections == 1


def test_aclose_hangs_up_the_idle_connections() -> None:
    hung_up = threading.Event()

    async def run(url: str) -> tuple[object, bool]:
        transport = hd.AsyncioTransport(targets=LOCAL)
        outcome = await transport.send(_request(url))
        await asyncio.sleep(0.2)
        kept_alive = not hung_up.is_set()
        await transport.aclose()
        return outcome, kept_alive

    with raw_server(serve_once_and_note_the_hang_up(hung_up)) as server:
        outcome, kept_alive = asyncio.run(run(server.url))
        assert hung_up.wait(5)
    assert kept_alive
    assert statuses([outcome]) == [200]  # type: ignore[list-item]


def test_a_closed_transport_still_sends_but_keeps_no_connection() -> None:
    async def run(url: str) -> list[object]:
        transport = hd.AsyncioTransport(targets=LOCAL)
        await transport.send(_request(url))
        await transport.aclose()
        return [await transport.send(_request(url)) for _ in range(2)]

    with raw_server(keep_alive()) as server:
        outcomes = asyncio.run(run(server.url))
    assert statuses(outcomes) == [200, 200]
    assert server.connections == 3


def test_an_idle_connection_to_an_endpoint_not_sent_to_again_is_closed() -> None:
    hung_up = threading.Event()

    async def run(quiet: str, busy: str) -> bool:
        transport = hd.AsyncioTransport(targets=LOCAL, keepalive_expiry=0.2)
        try:
            await transport.send(_request(quiet))
            give_up = time.monotonic() + 5
            while not hung_up.is_set() and time.monotonic() < give_up:
                await transport.send(_request(busy))  # traffic elsewhere only
                await asyncio.sleep(0.1)
            return hung_up.is_set()
        finally:
            await transport.aclose()

    with (
        raw_server(serve_once_and_note_the_hang_up(hung_up)) as quiet,
        raw_server(keep_alive()) as busy,
    ):
        assert asyncio.run(run(quiet.url, busy.url))


def test_a_connection_is_made_only_to_addresses_the_policy_allows() -> None:
    with raw_server(keep_alive()) as server:
        request = _request(server.url.replace("127.0.0.1", "localhost"))
        [outcome] = send_all(
            hd.AsyncioTransport(targets=hd.TargetPolicy(allow_http=True)), [request]
        )
        assert isinstance(outcome, hd.BlockedTargetError)
        assert server.connections == 0
        [allowed] = send_all(hd.AsyncioTransport(targets=LOCAL), [request])
    assert statuses([allowed]) == [200]  # type: ignore[list-item]


def test_a_cancelled_send_leaves_no_connection_counted() -> None:
    async def run(url: str) -> list[object]:
        transport = hd.AsyncioTransport(max_connections=1, targets=LOCAL)
        task = asyncio.create_task(transport.send(_request(url)))
        await asyncio.sleep(0.1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        try:  # the one connection slot is free again
            return [await transport.send(_request(url, timeout=3.0))]
        finally:
            await transport.aclose()

    with raw_server(keep_alive(delay=0.3)) as server:
        outcomes = asyncio.run(run(server.url))
        assert wait_for(lambda: server.connections == 2)
    assert statuses(outcomes) == [200]


def test_aclose_does_not_lift_the_deadline_of_a_request_in_flight() -> None:
    async def run(url: str) -> tuple[object, float]:
        transport = hd.AsyncioTransport(targets=LOCAL)
        began = time.monotonic()
        sending = asyncio.create_task(transport.send(_request(url, timeout=0.5)))
        await asyncio.sleep(0.1)
        await transport.aclose()
        outcome = await asyncio.wait_for(sending, 5)
        return outcome, time.monotonic() - began

    with raw_server(never_answer) as server:
        outcome, elapsed = asyncio.run(run(server.url))
    assert isinstance(outcome, hd.DeliveryTimeout)
    assert elapsed < 3.0  # not the 5 s of wait_for: the deadline still cut it


def test_aclose_from_another_event_loop_hangs_up_the_idle_connections() -> None:
    hung_up = threading.Event()
    transport = hd.AsyncioTransport(targets=LOCAL)
    with raw_server(serve_once_and_note_the_hang_up(hung_up)) as server:
        outcome = asyncio.run(transport.send(_request(server.url)))
        asyncio.run(transport.aclose())  # the first loop is closed by now
        assert hung_up.wait(5)
    assert statuses([outcome]) == [200]  # type: ignore[list-item]


def test_an_idle_connection_is_closed_after_its_expiry_without_further_requests() -> None:
    hung_up = threading.Event()

    async def run(url: str) -> bool:
        transport = hd.AsyncioTransport(targets=LOCAL, keepalive_expiry=0.2)
        try:
            await transport.send(_request(url))
            for _ in range(50):  # no request meanwhile: a timer closes it
                if hung_up.is_set():
                    return True
                await asyncio.sleep(0.1)
            return False
        finally:
            await transport.aclose()

    with raw_server(serve_once_and_note_the_hang_up(hung_up)) as server:
        assert asyncio.run(run(server.url))


def _unresolvable(host: str, port: int) -> list[str]:
    raise OSError(f"cannot resolve {host!r}: [Errno -2] Name or service not known")


@pytest.mark.parametrize(
    "make_transport",
    [*ASYNC_TRANSPORTS, hd.AsyncHttpxTransport, hd.SocketTransport, hd.HttpxTransport],
)
@pytest.mark.parametrize(
    ("url", "policy"),
    [
        pytest.param("https://no-such-host.invalid/hook", "failing", id="name-not-found"),
        pytest.param("https://" + "a" * 64 + ".example.com/hook", "system", id="label-too-long"),
    ],
)
def test_a_host_that_cannot_be_resolved_is_a_connect_error(
    make_transport: Callable[..., object], url: str, policy: str
) -> None:
    targets = hd.TargetPolicy(resolver=_unresolvable) if policy == "failing" else hd.TargetPolicy()
    transport = make_transport(targets=targets)
    request = _request(url)
    outcome = send_one(transport, request)
    assert isinstance(outcome, hd.ConnectError), outcome


def test_aclose_from_another_loop_while_the_first_is_stopped_hangs_up_too() -> None:
    hung_up = threading.Event()
    transport = hd.AsyncioTransport(targets=LOCAL)
    first = asyncio.new_event_loop()
    try:
        with raw_server(serve_once_and_note_the_hang_up(hung_up)) as server:
            outcome = first.run_until_complete(transport.send(_request(server.url)))
            asyncio.run(transport.aclose())  # the first loop is stopped, not closed
            assert hung_up.wait(5)
    finally:
        first.close()
    assert statuses([outcome]) == [200]  # type: ignore[list-item]


def early_413(conn: socket.socket, stop: threading.Event) -> None:
    """Read the request's head only, answer 413 at once and hang up, the body unread."""
    read_head(conn)
    with contextlib.suppress(OSError):
        conn.sendall(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        conn.shutdown(socket.SHUT_WR)
        stop.wait(0.3)


@pytest.mark.parametrize(
    "make_transport", [*ASYNC_TRANSPORTS, hd.SocketTransport, hd.HttpxTransport]
)
def test_an_answer_before_the_body_was_read_is_the_outcome(
    make_transport: Callable[..., object],
) -> None:
    # Not a reset: a 413 says something about this delivery, a reset about the endpoint.
    request = hd.Request(url="", headers={}, body=b"x" * (32 << 20), timeout=5.0)
    with raw_server(early_413) as server:
        request = hd.Request(url=server.url, headers={}, body=request.body, timeout=5.0)
        transport = make_transport(targets=LOCAL)
        outcome = send_one(transport, request)
    assert statuses([outcome]) == [413]  # type: ignore[list-item]


def test_every_address_of_a_name_shares_one_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    # A listener whose backlog is full: connecting to it hangs.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(listener.getsockname())
        fillers.append(filler)
    time.sleep(0.1)
    resolve = socket.getaddrinfo

    def three_addresses(host: str, *args: object, **kwargs: object) -> list[object]:
        found = resolve("127.0.0.1" if host == "three-addresses.test" else host, *args, **kwargs)
        return found * 3 if host == "three-addresses.test" else found

    monkeypatch.setattr(socket, "getaddrinfo", three_addresses)
    transport = hd.SocketTransport()  # no policy: it resolves the name itself
    port = listener.getsockname()[1]
    try:
        began = time.monotonic()
        outcome = transport.send(_request(f"http://three-addresses.test:{port}/", timeout=1.0))
        elapsed = time.monotonic() - began
    finally:
        transport.close()
        for sock in [listener, *fillers]:
            sock.close()
    assert isinstance(outcome, hd.DeliveryTimeout), outcome
    assert elapsed < 2.0  # not 3 s: one second for the three addresses together
