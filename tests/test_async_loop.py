"""The async driver never blocks the event loop, even on a blocking storage."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from pathlib import Path

import pytest

import hookdispatch as hd


def test_thousand_sqlite_dispatches_cause_no_slow_callback(
    fast_receiver: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The receiver runs in its own process: an in-process server's threads would
    # take the GIL from the loop and make any step look slow.

    async def main() -> int:
        loop = asyncio.get_running_loop()
        loop.slow_callback_duration = 0.05
        storage = hd.SQLiteStorage(tmp_path / "hooks.db")
        async with hd.AsyncDispatcher(storage=storage, concurrency=16) as hooks:
            await hooks.add_endpoint(fast_receiver)
            for n in range(1000):
                await hooks.dispatch("user.created", {"n": n})
            assert await hooks.drain(timeout=60)
            delivered = len(await hooks.deliveries(status="succeeded"))
        storage.close()
        return delivered

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

    assert delivered == 1000
    slow = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert slow == []


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
