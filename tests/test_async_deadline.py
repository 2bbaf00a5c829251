"""DeadlineWatch: one timer cuts every request at its deadline, and only at it."""

from __future__ import annotations

import asyncio
import time

import pytest

from hookdispatch.transports._deadline import DeadlineWatch


async def wait_under_watch(watch: DeadlineWatch, seconds: float, work: float) -> str:
    with watch.watch(seconds) as expiry:
        try:
            await asyncio.sleep(work)
        except asyncio.CancelledError:
            if expiry.timed_out():
                return "timed out"
            raise
    return "finished"


def test_a_request_past_its_deadline_is_cut_within_a_tick() -> None:
    async def main() -> tuple[str, float]:
        watch = DeadlineWatch(tick=0.02)
        began = time.monotonic()
        outcome = await wait_under_watch(watch, 0.2, 10)
        return outcome, time.monotonic() - began

    outcome, elapsed = asyncio.run(main())
    assert outcome == "timed out"
    assert 0.2 <= elapsed < 0.2 + 0.5  # a tick late at most, with room for a busy machine


def test_requests_within_their_deadline_finish_and_the_timer_stops() -> None:
    async def main() -> tuple[list[str], object]:
        watch = DeadlineWatch(tick=0.01)
        outcomes = await asyncio.gather(*(wait_under_watch(watch, 1.0, 0.05) for _ in range(50)))
        await asyncio.sleep(0.05)  # a tick with nothing watched
        return outcomes, watch._timer

    outcomes, timer = asyncio.run(main())
    assert outcomes == ["finished"] * 50
    assert timer is None


def test_only_the_late_ones_of_many_are_cut() -> None:
    async def main() -> list[str]:
        watch = DeadlineWatch(tick=0.01)
        return await asyncio.gather(
            *(wait_under_watch(watch, 0.1, work) for work in (0.01, 5, 0.02, 5))
        )

    assert asyncio.run(main()) == ["finished", "timed out", "finished", "timed out"]


def test_a_cancellation_from_outside_is_not_taken_for_the_deadline() -> None:
    async def main() -> None:
        watch = DeadlineWatch(tick=0.01)
        task = asyncio.create_task(wait_under_watch(watch, 5.0, 10))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_outside_cancellation_and_deadline_together_still_cancel() -> None:
    """Both land before the task runs again: the deadline's is consumed, the other's
    propagates (the task was asked to stop, and stops)."""

    async def main() -> None:
        watch = DeadlineWatch(tick=0.01)
        check = watch._check
        victims: list[asyncio.Task[str]] = []

        def check_then_cancel_too(loop: asyncio.AbstractEventLoop) -> None:
            check(loop)
            if any(expiry.expired for expiry in watch._watched.values()):
                for task in victims:
                    task.cancel()  # in the same turn of the loop as the deadline's

        watch._check = check_then_cancel_too  # type: ignore[method-assign]
        task = asyncio.create_task(wait_under_watch(watch, 0.03, 10))
        victims.append(task)
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
