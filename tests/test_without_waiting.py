"""Storage.without_waiting on SQLite, and the async dispatcher's use of it: short
storage calls run on the event loop when they can, and go to a thread, having
changed nothing, when they would wait."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import hookdispatch as hd

from stubs import AsyncRecording

NOW = datetime(2024, 6, 30, 15, 41, 23, tzinfo=UTC)
HOLD = 0.4  # seconds another process holds the file's write lock


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
    assert wal.stat().st_size < 6 * 2**20


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
