"""Storage.without_waiting on SQLite, and the async dispatcher's use of it: short
storage calls run on the event loop when they can, and go to a thread, having
changed nothing, when they would wait."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

import hookdispatch as hd
from hookdispatch.storage import _sqlite

from stubs import AsyncRecording

NOW = datetime(2024, 6, 30, 15, 41, 23, tzinfo=UTC)
HOLD = 0.4  # seconds another process holds the file's write lock
T = TypeVar("T")


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[hd.SQLiteStorage]:
    store = hd.SQLiteStorage(tmp_path / "hooks.db")
    store.add_endpoint(hd.Endpoint.create("https://example.com/hooks", now=NOW))
    yield store
    store.close()


def dispatch(storage: hd.Storage, n: int = 0) -> Callable[[], bool]:
    """A call storing one event (and its delivery) when made."""
    event = hd.Event.create("user.created", {"n": n}, now=NOW)
    return lambda: storage.add_event_to_subscribers(event, now=NOW)


def stored(storage: hd.Storage) -> int:
    return len(storage.list_deliveries(limit=10_000))


class OtherProcess:
    """Another writer of the file: a connection of its own, which takes SQLite's
    write lock (``hold``) and lets go of it (``release``) from any thread."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    def hold(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        self.conn.execute("COMMIT")

    def release_later(self, seconds: float) -> threading.Timer:
        timer = threading.Timer(seconds, self.release)
        timer.start()
        return timer

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def other(storage: hd.SQLiteStorage) -> Iterator[OtherProcess]:
    process = OtherProcess(storage.path)
    yield process
    process.close()


def test_a_call_that_need_not_wait_runs_in_this_thread(storage: hd.SQLiteStorage) -> None:
    threads: list[int] = []

    def call() -> bool:
        threads.append(threading.get_ident())
        return dispatch(storage)()

    assert storage.without_waiting(call) is True
    assert threads == [threading.get_ident()]
    assert stored(storage) == 1


def test_another_process_holding_the_file_raises_at_once_and_nothing_changes(
    storage: hd.SQLiteStorage, other: OtherProcess
) -> None:
    other.hold()
    began = time.monotonic()
    with pytest.raises(hd.WouldBlockError, match="another process"):
        storage.without_waiting(dispatch(storage))
    assert time.monotonic() - began < 1  # not the busy timeout's 30 s
    other.release()
    assert stored(storage) == 0
    # A write made where waiting is fine waits for the lock again, as before.
    other.hold()
    timer = other.release_later(HOLD)
    began = time.monotonic()
    assert dispatch(storage, 1)() is True
    assert time.monotonic() - began >= HOLD - 0.05
    timer.join()
    assert stored(storage) == 1


def test_another_thread_writing_raises_at_once(
    storage: hd.SQLiteStorage, other: OtherProcess
) -> None:
    other.hold()  # the thread's write waits for it, holding this process's write lock
    writer = threading.Thread(target=dispatch(storage, 1))
    writer.start()
    time.sleep(0.1)
    with pytest.raises(hd.WouldBlockError, match="another thread"):
        storage.without_waiting(dispatch(storage, 2))
    other.release()
    writer.join()
    assert stored(storage) == 1  # the thread's


def test_a_later_write_of_the_same_call_waits_instead_of_raising(
    storage: hd.SQLiteStorage, other: OtherProcess
) -> None:
    """The first write is stored: raising now would have the caller make it twice."""

    def two_writes() -> None:
        dispatch(storage, 1)()
        other.hold()
        other.release_later(HOLD)
        dispatch(storage, 2)()

    began = time.monotonic()
    storage.without_waiting(two_writes)
    assert time.monotonic() - began >= HOLD - 0.05
    assert stored(storage) == 2


def test_full_synchronous_never_runs_here(tmp_path: Path) -> None:
    storage = hd.SQLiteStorage(tmp_path / "full.db", synchronous="FULL")
    try:
        storage.add_endpoint(hd.Endpoint.create("https://example.com/hooks", now=NOW))
        with pytest.raises(hd.WouldBlockError, match="FULL"):
            storage.without_waiting(dispatch(storage))
        assert stored(storage) == 0
    finally:
        storage.close()


def test_checkpoints_are_left_to_writes_that_may_wait(storage: hd.SQLiteStorage) -> None:
    """Writes made without waiting never checkpoint (a checkpoint syncs the file);
    one that finds a checkpoint due raises, and the write made in its place does
    it. So the WAL stays as small as SQLite's own checkpoints keep it."""
    wal = Path(f"{storage.path}-wal")
    hurried = in_place = 0
    for n in range(3000):
        try:
            storage.without_waiting(dispatch(storage, n))
            hurried += 1
        except hd.WouldBlockError:
            dispatch(storage, n)()  # where the caller may wait: in a thread, say
            in_place += 1
    assert stored(storage) == 3000
    assert hurried > 2500
    assert in_place >= 3000 * 2 // 500 // 2  # every few hundred rows changed
    # Without checkpoints, 3,000 dispatches leave about 30 MB of WAL.
    assert wal.stat().st_size < _sqlite._WAL_BYTES * 3 // 2


def test_the_async_dispatcher_waits_for_a_locked_file_in_a_thread(
    storage: hd.SQLiteStorage, other: OtherProcess
) -> None:
    """Another process writing: dispatch() and the deliveries' outcomes wait for it
    off the loop, and the loop keeps running meanwhile."""
    transport = AsyncRecording()

    async def main() -> tuple[float, int]:
        gaps: list[float] = []
        done = asyncio.Event()

        async def heartbeat() -> None:
            last = time.perf_counter()
            while not done.is_set():
                await asyncio.sleep(0.01)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        async with hd.AsyncDispatcher(storage=storage, concurrency=4, transport=transport) as hooks:
            beat = asyncio.create_task(heartbeat())
            for n in range(20):
                await hooks.dispatch("user.created", {"n": n})
            other.hold()
            timer = other.release_later(HOLD)
            for n in range(20, 40):
                await hooks.dispatch("user.created", {"n": n})
            assert await hooks.drain(timeout=10)
            timer.join()
            done.set()
            await beat
        return max(gaps), len(transport.urls)

    longest_gap, sent = asyncio.run(main())
    assert sent == 40
    assert stored(storage) == 40
    assert longest_gap < HOLD / 2  # the loop never waited for the lock


def hurried_or_in_place(storage: hd.SQLiteStorage, call: Callable[[], object]) -> str:
    """``call`` without waiting if it can be, else made as a thread would make it;
    why it could not be, or ""."""
    try:
        storage.without_waiting(call)
    except hd.WouldBlockError as exc:
        call()
        return str(exc)
    return ""


def test_large_bodies_checkpoint_by_the_wal_s_size(storage: hd.SQLiteStorage) -> None:
    """Rows count for little with 200 KB bodies: the WAL file's size sets the pace."""
    wal = Path(f"{storage.path}-wal")
    peak = 0
    for n in range(300):
        event = hd.Event.create("user.created", {"n": n, "blob": "x" * 200_000}, now=NOW)
        hurried_or_in_place(
            storage, functools.partial(storage.add_event_to_subscribers, event, now=NOW)
        )
        peak = max(peak, wal.stat().st_size)
    assert stored(storage) == 300
    # 60 MB of bodies; about 50 MB of WAL counting rows alone. Past the limit by at
    # most the writes between two looks at the file's size (_LOOK_EVERY) and the
    # one that checkpoints, each a body and its pages' frame headers and indexes.
    assert peak < _sqlite._WAL_BYTES + (_sqlite._LOOK_EVERY + 2) * 250_000


def test_after_a_whole_checkpoint_the_next_write_is_made_where_it_may_sync(
    storage: hd.SQLiteStorage,
) -> None:
    """The first write after a checkpoint that copied the whole WAL starts the WAL
    again and syncs its header: not on an event loop."""
    reasons = [hurried_or_in_place(storage, dispatch(storage, n)) for n in range(1000)]
    checkpoints = [n for n, why in enumerate(reasons) if why == "a checkpoint is due"]
    assert checkpoints
    for n in checkpoints:
        assert reasons[n + 1] == "the WAL starts again"
        assert reasons[n + 2] == ""


def test_a_hurried_claim_writes_out_a_short_chunk_of_waiting_dispatches(
    storage: hd.SQLiteStorage,
) -> None:
    for n in range(9):  # 10 endpoints in all
        storage.add_endpoint(hd.Endpoint.create(f"https://example.com/{n}", now=NOW))
    for n in range(100):
        dispatch(storage, n)()  # 1,000 deliveries waiting to be written out
    storage.add_endpoint(hd.Endpoint.create("https://example.com/x", now=NOW, events=["x"]))
    later = NOW + timedelta(minutes=1)
    claims = storage.without_waiting(lambda: storage.claim(now=NOW, lease_until=later, limit=8))
    assert len(claims) == 8
    # A hurried chunk is 128 deliveries or so: far from all of them.
    with sqlite3.connect(storage.path) as conn:
        written = conn.execute("SELECT count(*) FROM deliveries").fetchone()[0]
    assert 8 <= written <= 2 * 128
    assert stored(storage) == 1000  # a read writes out the rest first


def test_a_wide_dispatch_is_written_out_by_a_claim_in_a_thread(storage: hd.SQLiteStorage) -> None:
    for n in range(299):
        storage.add_endpoint(hd.Endpoint.create(f"https://example.com/{n}", now=NOW))
    dispatch(storage)()  # one dispatch to 300 endpoints
    storage.add_endpoint(hd.Endpoint.create("https://example.com/x", now=NOW, events=["x"]))
    later = NOW + timedelta(minutes=1)
    with pytest.raises(hd.WouldBlockError, match="300 deliveries"):
        storage.without_waiting(lambda: storage.claim(now=NOW, lease_until=later, limit=8))
    assert len(storage.claim(now=NOW, lease_until=later, limit=8)) == 8
    event = hd.Event.create("user.created", {"n": 1}, now=NOW)
    with pytest.raises(hd.WouldBlockError, match="subscribers"):
        storage.without_waiting(
            lambda: storage.add_event_and_claim(event, now=NOW, lease_until=later, limit=8)
        )
    with pytest.raises(hd.UnknownEventError):
        storage.get_event(event.id)  # rolled back: nothing changed


class CountingWrites(hd.SQLiteStorage):
    """Counts the write transactions of each without_waiting call."""

    def __init__(self, path: Path) -> None:
        self.per_call: list[int] = []
        self._count: int | None = None
        self._thread = 0
        super().__init__(path)  # (writes: the schema)

    def without_waiting(self, call: Callable[[], T]) -> T:
        self._count, self._thread = 0, threading.get_ident()
        try:
            return super().without_waiting(call)
        finally:
            self.per_call.append(self._count)
            self._count = None

    def _write(self, *, settle: bool = False) -> Any:
        if self._count is not None and threading.get_ident() == self._thread:
            self._count += 1  # (not a storage thread's write meanwhile)
        return super()._write(settle=settle)


def test_the_dispatcher_s_hurried_calls_make_one_write_each(tmp_path: Path) -> None:
    """A later write of a hurried call would wait on the loop: the async dispatcher
    makes only calls of one write that way."""
    storage = CountingWrites(tmp_path / "hooks.db")
    transport = AsyncRecording()

    async def main() -> None:
        async with hd.AsyncDispatcher(storage=storage, concurrency=8, transport=transport) as hooks:
            await hooks.add_endpoint("https://example.com/a")
            await hooks.add_endpoint("https://example.com/b")
            for n in range(300):
                await hooks.dispatch("user.created", {"n": n})
            assert await hooks.drain(timeout=30)

    asyncio.run(main())
    storage.close()
    assert len(transport.urls) == 600
    assert storage.per_call
    assert max(storage.per_call) == 1


def test_dispatching_in_a_loop_lets_other_tasks_run(storage: hd.SQLiteStorage) -> None:
    """A store made on the loop does not suspend; dispatch() yields now and then."""

    async def main() -> int:
        ticks = 0
        stop = False

        async def ticker() -> None:
            nonlocal ticks
            while not stop:
                ticks += 1
                await asyncio.sleep(0)

        async with hd.AsyncDispatcher(
            storage=storage, concurrency=8, transport=AsyncRecording()
        ) as hooks:
            task = asyncio.create_task(ticker())
            await asyncio.sleep(0)
            before = ticks
            for n in range(320):
                await hooks.dispatch("user.created", {"n": n})
            during = ticks - before
            stop = True
            await task
            assert await hooks.drain(timeout=30)
        return during

    assert asyncio.run(main()) >= 320 // 32


def test_the_default_storage_methods_let_would_block_through() -> None:
    """A backend with without_waiting and the default complete_many: a claim that is
    the call's first write raises, and is not logged and dropped as a failure."""

    class Hurried(hd.MemoryStorage):
        def claim(self, **options: Any) -> list[hd.storage.Claim]:
            raise hd.WouldBlockError("would wait")

    storage = Hurried()
    later = NOW + timedelta(minutes=1)
    with pytest.raises(hd.WouldBlockError):
        hd.Storage.complete_many(storage, [], now=NOW, lease_until=later, limit=2)


def test_a_storage_used_from_threads_only_keeps_sqlite_s_checkpoints_at_the_same_size(
    storage: hd.SQLiteStorage,
) -> None:
    """SQLite's automatic checkpoint, its line set at ``_WAL_BYTES`` of the file's
    pages; once an event loop writes, the writer's own, at the same size."""
    dispatch(storage, 0)()
    writer = storage._writer
    assert writer is not None
    [(page_size,)] = writer.execute("PRAGMA page_size").fetchall()
    assert writer.execute("PRAGMA wal_autocheckpoint").fetchone() == (
        _sqlite._WAL_BYTES // page_size,
    )
    assert writer.execute("PRAGMA journal_size_limit").fetchone() == (_sqlite._WAL_BYTES,)
    storage.without_waiting(dispatch(storage, 1))
    assert writer.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
    assert writer.execute("PRAGMA journal_size_limit").fetchone() == (_sqlite._WAL_BYTES,)
