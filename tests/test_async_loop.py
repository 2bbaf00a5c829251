"""The async driver never blocks the event loop, even on a blocking storage."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import hookdispatch as hd


def test_thousand_sqlite_dispatches_cause_no_slow_callback(
    fast_receiver: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The receiver runs in its own process: an in-process server's threads would
    # take the GIL from the loop and make any step look slow.

    # Importing hookdispatch's async side (aiohttp: ~100 ms), opening the storage
    # (creating the file) and closing it are the application's own steps, taken
    # here outside the loop; what is tested is that no call of the dispatcher's
    # runs on it.
    dispatcher_class = hd.AsyncDispatcher
    storage = hd.SQLiteStorage(tmp_path / "hooks.db")

    async def main() -> int:
        loop = asyncio.get_running_loop()
        loop.slow_callback_duration = 0.05
        async with dispatcher_class(storage=storage, concurrency=16) as hooks:
            await hooks.add_endpoint(fast_receiver)
            for n in range(1000):
                await hooks.dispatch("user.created", {"n": n})
            assert await hooks.drain(timeout=60)
            return len(await hooks.deliveries(status="succeeded", limit=1000))

    # A full collection of everything pytest has loaded takes ~70 ms here and would
    # be reported as a slow step whatever the step was doing; freezing the objects
    # that exist before the run keeps collections to what the run itself creates.
    gc.collect()
    gc.freeze()
    try:
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            delivered = asyncio.run(main(), debug=True)
    finally:
        gc.unfreeze()
        storage.close()

    assert delivered == 1000
    slow = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert slow == []


class ThreadRecordingStorage(hd.SQLiteStorage):
    """SQLiteStorage that notes the thread of every call the dispatcher makes, and
    whether it came through ``without_waiting``."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.calls: list[tuple[int, bool]] = []
        self._in_without_waiting = False

    def without_waiting(self, call: Any) -> Any:
        self._in_without_waiting = True
        try:
            return super().without_waiting(call)
        finally:
            self._in_without_waiting = False

    def _note(self) -> None:
        self.calls.append((threading.get_ident(), self._in_without_waiting))

    def claim(self, **options: Any) -> list[hd.storage.Claim]:
        self._note()
        return super().claim(**options)

    def complete_many(self, *args: Any, **options: Any) -> Any:
        self._note()
        return super().complete_many(*args, **options)

    def add_event_and_claim(self, *args: Any, **options: Any) -> Any:
        self._note()
        return super().add_event_and_claim(*args, **options)

    def next_due_at(self, **options: Any) -> Any:
        self._note()
        return super().next_due_at(**options)


class WaitingStorage(ThreadRecordingStorage):
    """The same, as a storage that cannot tell when it would wait (the default)."""

    without_waiting = hd.Storage.without_waiting


def _run_fifty(storage: ThreadRecordingStorage, receiver: str) -> int:
    async def main() -> int:
        async with hd.AsyncDispatcher(storage=storage, concurrency=8) as hooks:
            await hooks.add_endpoint(receiver)
            for n in range(50):
                await hooks.dispatch("user.created", {"n": n})
            assert await hooks.drain(timeout=30)
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    storage.close()
    return loop_thread


def test_storage_calls_run_on_the_loop_only_without_waiting(
    fast_receiver: str, tmp_path: Path
) -> None:
    storage = ThreadRecordingStorage(tmp_path / "hooks.db")
    loop_thread = _run_fifty(storage, fast_receiver)
    on_the_loop = [hurried for thread, hurried in storage.calls if thread == loop_thread]
    assert on_the_loop, "SQLite's short calls run on the loop"
    assert all(on_the_loop), "only through without_waiting"
    assert any(thread != loop_thread for thread, _ in storage.calls), "the others in threads"


def test_a_storage_that_cannot_tell_runs_every_call_off_the_loop(
    fast_receiver: str, tmp_path: Path
) -> None:
    storage = WaitingStorage(tmp_path / "hooks.db")
    loop_thread = _run_fifty(storage, fast_receiver)
    assert storage.calls
    assert loop_thread not in {thread for thread, _ in storage.calls}


def test_the_check_above_can_fail(caplog: pytest.LogCaptureFixture) -> None:
    """Debug mode does report a blocking call, so silence above means something."""

    async def blocking() -> None:
        time.sleep(0.1)

    async def main() -> None:
        asyncio.get_running_loop().slow_callback_duration = 0.05
        await blocking()

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        asyncio.run(main(), debug=True)
    assert any("took" in r.getMessage() for r in caplog.records if r.name == "asyncio")


def test_attempts_that_never_suspend_still_let_the_loop_run() -> None:
    """A refused target fails at once, with no I/O; on MemoryStorage nothing else in
    the attempt suspends either. A task working through a backlog of those must
    still yield to the loop between attempts."""
    storage = hd.MemoryStorage()
    # Stored under a loose policy, attempted under the strict default: every attempt
    # is refused before any connection is made.
    storage.add_endpoint(hd.Endpoint.create("http://127.0.0.1:9/hook", now=datetime.now(UTC)))

    async def main() -> float:
        gaps: list[float] = []
        done = asyncio.Event()

        async def heartbeat() -> None:
            last = time.perf_counter()
            while not done.is_set():
                await asyncio.sleep(0.002)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        async with hd.AsyncDispatcher(
            storage=storage, concurrency=4, targets=hd.TargetPolicy(), disable_after=None
        ) as hooks:
            await hooks.dispatch_many([("user.created", {"n": n}) for n in range(10_000)])
            beat = asyncio.create_task(heartbeat())
            assert await hooks.drain(timeout=60)
            done.set()
            await beat
        assert len(storage.list_deliveries(status=hd.DeliveryStatus.FAILED)) == 10_000
        return max(gaps)

    gc.collect()
    gc.freeze()  # as above: a full collection of pytest's objects is not the loop's fault
    try:
        longest = asyncio.run(main())
    finally:
        gc.unfreeze()
    # Without the yield, one task ran the whole backlog in one go: ~500 ms here.
    assert longest < 0.2, f"the loop was held for {longest * 1000:.0f} ms at a stretch"


def test_a_dispatch_on_a_storage_that_never_blocks_takes_no_turn_of_the_loop() -> None:
    """MemoryStorage: dispatch() stores and hands its deliveries out without
    suspending (no task for the storage call, no wait on it). A turn of the loop per
    dispatch cost the AsyncDispatcher a third of its CPU time per delivery, and it
    came in unnoticed with the hand-off's shield for storages that block."""

    async def main() -> list[str]:
        order: list[str] = []
        async with hd.AsyncDispatcher(
            storage=hd.MemoryStorage(), concurrency=4, targets=hd.TargetPolicy.local()
        ) as hooks:
            await hooks.add_endpoint("http://127.0.0.1:9/hooks")
            asyncio.get_running_loop().call_soon(order.append, "loop turned")
            await hooks.dispatch("user.created", {"n": 1})
            order.append("dispatched")
            await hooks.aclose(timeout=0)
        return order

    assert asyncio.run(main())[:2] == ["dispatched", "loop turned"]
