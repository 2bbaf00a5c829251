"""PostgresStorage keeps its own pool's connections between calls, the last one
used taken first (storage/_kept.py), and gives them back to the pool in time."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

import hookdispatch as hd
from hookdispatch.storage._kept import KeptConnections
from hookdispatch.testing._concurrency import _run_threads
from pg_fixtures import new_schema, postgres_admin_dsn, postgres_dsn  # noqa: F401 - fixtures


@pytest.fixture
def storage(postgres_dsn: str) -> Iterator[hd.PostgresStorage]:  # noqa: F811
    store = hd.PostgresStorage(postgres_dsn, schema=new_schema())
    yield store
    store.close()


@pytest.fixture
def pool(postgres_dsn: str) -> Iterator[ConnectionPool[Any]]:  # noqa: F811
    with ConnectionPool(postgres_dsn, min_size=1, max_size=4, kwargs={"autocommit": True}) as p:
        yield p


def backend(storage: hd.PostgresStorage) -> int:
    """The server process that served one call."""
    return storage._connected(lambda conn: conn.info.backend_pid)


def test_calls_one_after_another_use_the_connection_given_back_last(
    storage: hd.PostgresStorage,
) -> None:
    # Two connections in use at once: the pool has two, then both are kept.
    held = threading.Event()
    release = threading.Event()
    last: list[int] = []

    def hold(conn: psycopg.Connection[Any]) -> None:
        held.set()
        release.wait(10)
        last.append(conn.info.backend_pid)

    other = threading.Thread(target=storage._connected, args=(hold,))
    other.start()
    held.wait(10)
    first = backend(storage)  # given back first
    release.set()
    other.join()  # given back last
    assert last
    assert last[0] != first
    # The pool alone would hand the two out in turn; kept, the last one serves.
    assert [backend(storage) for _ in range(6)] == last * 6


def test_a_connection_left_in_a_transaction_goes_back_to_the_pool(
    pool: ConnectionPool[Any],
) -> None:
    kept = KeptConnections(pool)
    conn = kept.take()
    conn.execute("BEGIN")
    kept.give_back(conn)
    assert kept._kept == []
    assert pool.get_stats()["pool_available"] >= 1
    again = kept.take()
    assert again.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE  # reset
    kept.give_back(again)
    assert kept._kept == [again]
    kept.close()


def test_a_broken_connection_goes_back_to_the_pool(pool: ConnectionPool[Any]) -> None:
    kept = KeptConnections(pool)
    conn = kept.take()
    conn.close()
    kept.give_back(conn)
    assert kept._kept == []
    kept.close()


def test_the_last_connection_given_back_is_taken_first(pool: ConnectionPool[Any]) -> None:
    kept = KeptConnections(pool)
    first, second = kept.take(), kept.take()
    kept.give_back(first)
    kept.give_back(second)
    assert kept._kept == [first, second]
    assert kept.take() is second
    kept.give_back(second)
    kept.close()


def test_kept_connections_go_back_to_the_pool_in_time_without_calls(
    pool: ConnectionPool[Any],
) -> None:
    kept = KeptConnections(pool, keep=0.05)
    first, second = kept.take(), kept.take()
    kept.give_back(first)
    kept.give_back(second)
    deadline = time.monotonic() + 5
    while kept._kept and time.monotonic() < deadline:  # no call comes meanwhile
        time.sleep(0.01)
    assert kept._kept == []
    # Both idle in the pool. (Not "the pool holds two": while the two were taken,
    # the pool may have started a third connection of its own.)
    assert {id(first), id(second)} <= {id(conn) for conn in pool._pool}
    taken = kept.take()  # kept again from now on, and handed back again in time
    kept.give_back(taken)
    deadline = time.monotonic() + 5
    while kept._kept and time.monotonic() < deadline:
        time.sleep(0.01)
    assert kept._kept == []
    assert id(taken) in {id(conn) for conn in pool._pool}
    kept.close()


def test_closing_stops_the_timer(pool: ConnectionPool[Any]) -> None:
    kept = KeptConnections(pool, keep=30)
    conn = kept.take()
    kept.give_back(conn)
    timer = kept._timer[0]
    assert timer is not None
    assert timer.is_alive()
    kept.close()
    timer.join(5)
    assert not timer.is_alive()
    assert kept._kept == []


def test_a_dropped_keeper_cancels_its_timer_and_lets_its_connections_go(
    pool: ConnectionPool[Any],
) -> None:
    kept = KeptConnections(pool, keep=30)
    conn = kept.take()
    kept.give_back(conn)
    timer = kept._timer[0]
    assert timer is not None
    alive = weakref.ref(kept)
    del kept, conn
    gc.collect()
    assert alive() is None  # the timer does not hold it
    timer.join(5)
    assert not timer.is_alive()  # cancelled when it was collected


def test_with_no_thread_for_a_timer_nothing_is_kept_and_the_call_goes_on(
    pool: ConnectionPool[Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    kept = KeptConnections(pool, keep=30)
    conn = kept.take()
    monkeypatch.setattr(threading.Timer, "start", refuse)
    with caplog.at_level("WARNING", logger="hookdispatch"):
        kept.give_back(conn)  # raises nothing
    assert kept._kept == []
    assert kept._timer == [None]
    assert "they go back now" in caplog.text
    monkeypatch.undo()
    again = kept.take()
    kept.give_back(again)  # a thread is to be had again: kept, with its timer
    assert kept._kept == [again]
    assert kept._timer[0] is not None
    kept.close()


def test_closing_gives_every_connection_back_even_one_in_use(postgres_dsn: str) -> None:  # noqa: F811
    storage = hd.PostgresStorage(postgres_dsn, schema=new_schema())
    in_use: list[psycopg.Connection[Any]] = []
    kept: list[psycopg.Connection[Any]] = []

    def close_meanwhile(conn: psycopg.Connection[Any]) -> None:
        in_use.append(conn)
        assert storage._kept is not None
        kept.extend(storage._kept._kept)
        storage.close()

    backend(storage)  # one connection kept
    storage._connected(close_meanwhile)
    assert in_use
    assert in_use[0].closed
    assert all(conn.closed for conn in kept)
    with pytest.raises(hd.StorageError, match="closed"):
        storage.list_endpoints()


def test_a_pool_you_pass_in_hands_out_its_connections_itself(
    pool: ConnectionPool[Any],
) -> None:
    storage = hd.PostgresStorage(pool, schema=new_schema())
    assert storage._kept is None
    storage.list_endpoints()
    assert pool.get_stats()["pool_available"] == pool.get_stats()["pool_size"]
    storage.close()


def test_every_kept_connection_is_replaced_after_the_server_dropped_them(
    storage: hd.PostgresStorage,
    postgres_dsn: str,  # noqa: F811
) -> None:
    endpoint = hd.Endpoint.create("https://example.com/hooks", now=hd._types.utc_now())
    storage.add_endpoint(endpoint)
    before = backend(storage)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    assert [e.id for e in storage.list_endpoints()] == [endpoint.id]
    assert backend(storage) != before


def test_a_call_not_retried_meets_one_dead_connection_at_most(
    storage: hd.PostgresStorage,
    postgres_dsn: str,  # noqa: F811
) -> None:
    """add_endpoint is not retried (a repeat after a commit would find its id
    taken): the first one after a server restart fails, and replaces every dead
    connection, kept or pooled, so that the next one succeeds."""
    busy = threading.Barrier(4)

    def hold(conn: psycopg.Connection[Any]) -> None:
        busy.wait(10)  # four connections in use at once: four kept afterwards

    threads = [threading.Thread(target=storage._connected, args=(hold,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert storage._kept is not None
    assert len(storage._kept._kept) == 4
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    now = hd._types.utc_now()
    with pytest.raises(hd.StorageError):
        storage.add_endpoint(hd.Endpoint.create("https://example.com/a", now=now))
    storage.add_endpoint(hd.Endpoint.create("https://example.com/b", now=now))
    assert [e.url for e in storage.list_endpoints()] == ["https://example.com/b"]


def test_a_storage_dropped_unclosed_frees_its_connections_at_once(
    postgres_dsn: str,  # noqa: F811
) -> None:
    def backends() -> int:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND application_name = ''"
                " AND backend_type = 'client backend'"
            ).fetchone()
            assert row is not None
            return int(row[0])

    before = backends()
    storage = hd.PostgresStorage(postgres_dsn, schema=new_schema())
    storage.list_endpoints()  # a connection kept, its timer pending
    # (The pool may still be opening a connection of its own in the background: one
    # it finishes after the drop lingers until its worker stops, which is the pool's
    # affair, not the kept connections'. Let it finish first.)
    storage._pool.wait(timeout=5)
    assert storage._kept is not None
    assert storage._kept._timer[0] is not None
    del storage
    gc.collect()
    deadline = time.monotonic() + 5
    while backends() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backends() <= before


def small_pool(dsn: str, size: int) -> ConnectionPool[Any]:
    """A pool of ``size`` connections at most, waiting 5 s for one (to be entered)."""
    return ConnectionPool(dsn, min_size=1, max_size=size, timeout=5, kwargs={"autocommit": True})


def test_a_connection_given_back_goes_to_a_caller_waiting_on_the_pool(
    postgres_dsn: str,  # noqa: F811
) -> None:
    with small_pool(postgres_dsn, 1) as small:
        kept = KeptConnections(small)
        first = kept.take()  # the pool's only connection
        got: list[psycopg.Connection[Any]] = []
        waiter = threading.Thread(target=lambda: got.append(kept.take()))
        waiter.start()
        deadline = time.monotonic() + 5
        while not kept._waiting and time.monotonic() < deadline:
            time.sleep(0.001)
        began = time.monotonic()
        kept.give_back(first)  # kept, it would leave the waiter waiting 5 s, then failing
        waiter.join(5)
        assert got == [first]
        assert time.monotonic() - began < 1
        kept.give_back(got[0])
        assert kept._kept == [first]  # nobody waiting now: kept
        kept.close()


def test_threads_sharing_a_small_pool_never_wait_for_a_kept_connection(
    postgres_dsn: str,  # noqa: F811
) -> None:
    with small_pool(postgres_dsn, 2) as small:
        kept = KeptConnections(small)

        def work(_: int) -> None:
            for _ in range(200):
                conn = kept.take()
                try:
                    conn.execute("SELECT 1")
                finally:
                    kept.give_back(conn)

        _run_threads(6, work)  # each raising PoolTimeout after 5 s, were it kept waiting
        kept.close()
        assert small.get_stats()["pool_available"] == small.get_stats()["pool_size"]
