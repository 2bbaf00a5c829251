"""The sync transport's keep-alive connections (``_connections.KeepAlivePool``).

Against raw socket receivers on 127.0.0.1 that count the connections they accept.
"""

from __future__ import annotations

import threading
import time

import hookdispatch as hd

from receivers import (
    CountingServer,
    keep_alive,
    raw_server,
    serve_once_and_note_the_hang_up,
    wait_for,
)


def _request(url: str, *, timeout: float = 5.0) -> hd.Request:
    return hd.Request(
        url=url, headers={"content-type": "application/json"}, body=b"{}", timeout=timeout
    )


def test_requests_one_after_another_share_one_connection() -> None:
    with raw_server(keep_alive()) as server:
        transport = hd.HttpxTransport(targets=hd.TargetPolicy.local())
        try:
            outcomes = [transport.send(_request(server.url)) for _ in range(20)]
        finally:
            transport.close()
    assert [getattr(o, "status_code", o) for o in outcomes] == [200] * 20
    assert server.connections == 1


def test_a_connection_the_receiver_hung_up_is_replaced_not_reused() -> None:
    with raw_server(keep_alive(per_connection=1)) as server:
        transport = hd.HttpxTransport(targets=hd.TargetPolicy.local())
        try:
            outcomes = []
            for sent in range(1, 6):
                outcomes.append(transport.send(_request(server.url)))
                assert wait_for(lambda sent=sent: server.finished == sent)  # it hung up
        finally:
            transport.close()
    assert [getattr(o, "status_code", o) for o in outcomes] == [200] * 5
    assert server.connections == 5


def test_a_response_cut_at_the_cap_closes_its_connection() -> None:
    with raw_server(keep_alive(body=b"x" * 1000)) as server:
        transport = hd.HttpxTransport(max_response_bytes=10, targets=hd.TargetPolicy.local())
        try:
            first, second = (transport.send(_request(server.url)) for _ in range(2))
        finally:
            transport.close()
    assert isinstance(first, hd.Response)
    assert first.body == b"x" * 10
    assert isinstance(second, hd.Response)
    assert second.body == b"x" * 10
    assert server.connections == 2  # the unread rest made the first one unusable


def test_never_more_than_max_connections_open_however_many_threads_send() -> None:
    server = CountingServer(keep_alive(delay=0.02))
    transport = hd.HttpxTransport(max_connections=2, targets=hd.TargetPolicy.local())
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


def test_waiting_for_a_connection_counts_against_the_deadline() -> None:
    with raw_server(keep_alive(delay=2.0)) as server:
        transport = hd.HttpxTransport(max_connections=1, targets=hd.TargetPolicy.local())
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


def test_close_hangs_up_the_idle_connections() -> None:
    hung_up = threading.Event()
    with raw_server(serve_once_and_note_the_hang_up(hung_up)) as server:
        transport = hd.HttpxTransport(targets=hd.TargetPolicy.local())
        outcome = transport.send(_request(server.url))
        assert not hung_up.wait(0.2)  # kept alive while the transport is open
        transport.close()
        assert hung_up.wait(5)
    assert isinstance(outcome, hd.Response)
    assert outcome.status_code == 200


def test_a_closed_transport_still_sends_but_keeps_no_connection() -> None:
    # Closing is for shutting down: a send that races with it is still made (not
    # failed and blamed on the receiver), on a connection closed right after.
    with raw_server(keep_alive()) as server:
        transport = hd.HttpxTransport(targets=hd.TargetPolicy.local())
        transport.send(_request(server.url))
        transport.close()
        outcomes = [transport.send(_request(server.url)) for _ in range(2)]
    assert [getattr(o, "status_code", o) for o in outcomes] == [200, 200]
    assert server.connections == 3


def test_an_idle_connection_to_an_endpoint_not_sent_to_again_is_closed() -> None:
    hung_up = threading.Event()
    with (
        raw_server(serve_once_and_note_the_hang_up(hung_up)) as quiet,
        raw_server(keep_alive()) as busy,
    ):
        transport = hd.HttpxTransport(targets=hd.TargetPolicy.local())
        transport._pool._keepalive_expiry = 0.2  # (30 s by default)
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
