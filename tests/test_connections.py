"""The sync transports' keep-alive connections (``transports._pool.KeepAlivePool``):
SocketTransport (the default) and HttpxTransport, each test for both.

Against raw socket receivers on 127.0.0.1 that count the connections they accept.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

import hookdispatch as hd
from hookdispatch.transports._pool import KeepAlivePool

from receivers import (
    CountingServer,
    keep_alive,
    raw_server,
    serve_once_and_note_the_hang_up,
    wait_for,
)

SYNC_TRANSPORTS = pytest.mark.parametrize(
    "make_transport",
    [pytest.param(hd.SocketTransport, id="socket"), pytest.param(hd.HttpxTransport, id="httpx")],
)


def _request(url: str, *, timeout: float = 5.0) -> hd.Request:
    return hd.Request(
        url=url, headers={"content-type": "application/json"}, body=b"{}", timeout=timeout
    )


@SYNC_TRANSPORTS
def test_requests_one_after_another_share_one_connection(
    make_transport: type[hd.Transport],
) -> None:
    with raw_server(keep_alive()) as server:
        transport = make_transport(targets=hd.TargetPolicy.local())
        try:
            outcomes = [transport.send(_request(server.url)) for _ in range(20)]
        finally:
            transport.close()
    assert [getattr(o, "status_code", o) for o in outcomes] == [200] * 20
    assert server.connections == 1


@SYNC_TRANSPORTS
def test_a_connection_the_receiver_hung_up_is_replaced_not_reused(
    make_transport: type[hd.Transport],
) -> None:
    with raw_server(keep_alive(per_connection=1)) as server:
        transport = make_transport(targets=hd.TargetPolicy.local())
        try:
            outcomes = []
            for sent in range(1, 6):
                outcomes.append(transport.send(_request(server.url)))
                assert wait_for(lambda sent=sent: server.finished == sent)  # it hung up
        finally:
            transport.close()
    assert [getattr(o, "status_code", o) for o in outcomes] == [200] * 5
    assert server.connections == 5


@SYNC_TRANSPORTS
def test_a_response_cut_at_the_cap_closes_its_connection(
    make_transport: type[hd.Transport],
) -> None:
    with raw_server(keep_alive(body=b"x" * (8 << 20))) as server:
        transport = make_transport(max_response_bytes=10, targets=hd.TargetPolicy.local())
        try:
            first, second = (transport.send(_request(server.url)) for _ in range(2))
        finally:
            transport.close()
    assert isinstance(first, hd.Response)
    assert first.body == b"x" * 10
    assert isinstance(second, hd.Response)
    assert second.body == b"x" * 10
    assert server.connections == 2  # the unread rest made the first one unusable


@SYNC_TRANSPORTS
def test_never_more_than_max_connections_open_however_many_threads_send(
    make_transport: type[hd.Transport],
) -> None:
    server = CountingServer(keep_alive(delay=0.02))
    transport = make_transport(max_connections=2, targets=hd.TargetPolicy.local())
    outcomes: list[object] = []

    def send_some() -> None:
        for _ in range(5):
            outcomes.append(transport.send(_request(server.url)))

    try:
        threads = [threading.Thread(target=send_some) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        transport.close()
        server.close()
    assert [getattr(o, "status_code", o) for o in outcomes] == [200] * 40
    assert server.most_open <= 2
    assert server.connections == 2  # and both were kept alive throughout


@SYNC_TRANSPORTS
def test_waiting_for_a_connection_counts_against_the_deadline(
    make_transport: type[hd.Transport],
) -> None:
    with raw_server(keep_alive(delay=2.0)) as server:
        transport = make_transport(max_connections=1, targets=hd.TargetPolicy.local())
        try:
            slow = threading.Thread(target=transport.send, args=(_request(server.url),))
            slow.start()
            assert wait_for(lambda: server.connections == 1)
            began = time.monotonic()
            outcome = transport.send(_request(server.url, timeout=0.5))
            waited = time.monotonic() - began
            slow.join(timeout=10)
        finally:
            transport.close()
    assert isinstance(outcome, hd.DeliveryTimeout)
    assert 0.4 < waited < 1.5


@SYNC_TRANSPORTS
def test_close_hangs_up_the_idle_connections(make_transport: type[hd.Transport]) -> None:
    hung_up = threading.Event()
    with raw_server(serve_once_and_note_the_hang_up(hung_up)) as server:
        transport = make_transport(targets=hd.TargetPolicy.local())
        outcome = transport.send(_request(server.url))
        assert not hung_up.wait(0.2)  # kept alive while the transport is open
        transport.close()
        assert hung_up.wait(5)
    assert isinstance(outcome, hd.Response)
    assert outcome.status_code == 200


@SYNC_TRANSPORTS
def test_a_closed_transport_still_sends_but_keeps_no_connection(
    make_transport: type[hd.Transport],
) -> None:
    # Closing is for shutting down: a send that races with it is still made (not
    # failed and blamed on the receiver), on a connection closed right after.
    with raw_server(keep_alive()) as server:
        transport = make_transport(targets=hd.TargetPolicy.local())
        transport.send(_request(server.url))
        transport.close()
        outcomes = [transport.send(_request(server.url)) for _ in range(2)]
    assert [getattr(o, "status_code", o) for o in outcomes] == [200, 200]
    assert server.connections == 3


@SYNC_TRANSPORTS
def test_an_idle_connection_to_an_endpoint_not_sent_to_again_is_closed(
    make_transport: type[hd.Transport],
) -> None:
    hung_up = threading.Event()
    with (
        raw_server(serve_once_and_note_the_hang_up(hung_up)) as quiet,
        raw_server(keep_alive()) as busy,
    ):
        transport = make_transport(targets=hd.TargetPolicy.local(), keepalive_expiry=0.2)
        try:
            transport.send(_request(quiet.url))
            give_up = time.monotonic() + 5
            while not hung_up.is_set() and time.monotonic() < give_up:
                transport.send(_request(busy.url))  # traffic elsewhere only
                time.sleep(0.1)
            closed_while_open = hung_up.is_set()
        finally:
            transport.close()
    assert closed_while_open


def test_a_body_that_arrived_whole_keeps_its_connection_even_past_the_cap() -> None:
    with raw_server(keep_alive(body=b"x" * 1000)) as server:
        transport = hd.SocketTransport(max_response_bytes=10, targets=hd.TargetPolicy.local())
        try:
            outcomes = [transport.send(_request(server.url)) for _ in range(2)]
        finally:
            transport.close()
    assert [getattr(o, "body", o) for o in outcomes] == [b"x" * 10] * 2
    assert server.connections == 1


# The pool itself, with stand-in connections -----------------------------------------


class _StandIn:
    def __init__(self, on_check: Callable[[], bool] = lambda: False) -> None:
        self.on_check = on_check
        self.closed = False

    def has_expired(self) -> bool:
        return self.on_check()

    def close(self) -> None:
        self.closed = True


class _Interrupt(BaseException):
    """Stands for KeyboardInterrupt (which would stop pytest if it got loose)."""


def _interrupt() -> bool:
    raise _Interrupt


def test_an_interrupt_while_an_idle_connection_is_checked_frees_its_slot() -> None:
    pool: KeepAlivePool[_StandIn] = KeepAlivePool(max_connections=1)
    pool._next_sweep = float("inf")  # the check when it is taken, not the sweep's
    assert pool.take("a", wait=0) is None
    pool.give_back("a", _StandIn(_interrupt), reusable=True)
    with pytest.raises(_Interrupt):
        pool.take("a", wait=0)
    assert pool.take("a", wait=0) is None  # the slot is free: not ConnectionsBusy


def test_an_interrupted_sweep_keeps_every_connection_accounted_for() -> None:
    pool: KeepAlivePool[_StandIn] = KeepAlivePool(max_connections=3)
    standing = [_StandIn(), _StandIn(_interrupt), _StandIn()]
    pool._next_sweep = float("inf")
    assert [pool.take(origin, wait=0) for origin in "aab"] == [None] * 3  # three opened
    for origin, connection in zip("aab", standing, strict=True):
        pool.give_back(origin, connection, reusable=True)
    pool._next_sweep = 0.0
    with pytest.raises(_Interrupt):
        pool._sweep()
    assert sorted(len(stack) for stack in pool._stacks.idle.values()) == [1, 2]
    assert pool._stacks.open == 3
    assert not any(connection.closed for connection in standing)


def test_a_close_during_a_sweep_closes_what_the_sweep_kept() -> None:
    pool: KeepAlivePool[_StandIn] = KeepAlivePool(max_connections=1)

    def close_meanwhile() -> bool:
        pool.close()  # as another thread would, while this check runs
        return False

    connection = _StandIn(close_meanwhile)
    assert pool.take("a", wait=0) is None
    pool.give_back("a", connection, reusable=True)
    pool._next_sweep = 0.0
    pool._sweep()
    assert connection.closed
    assert pool._stacks.idle == {}
    assert pool._stacks.open == 0
