"""Total deadlines for many concurrent async requests, on one timer.

``asyncio.timeout`` schedules and cancels a timer per request, which costs a
noticeable share of a fast request's CPU. :class:`DeadlineWatch` keeps the
deadlines of the requests in flight in a dict and checks them every ``tick``
seconds on a single timer (only while any are in flight), cancelling the task of
each request whose deadline has passed. A request is cut at most ``tick`` seconds
late. Cancellation is told apart from any other as ``asyncio.timeout`` does it:
the request's own record says it expired, and ``Task.uncancel`` leaves no other
cancellation pending.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["DeadlineWatch", "Expiry"]


class Expiry:
    """One request under watch: its task, its deadline, and whether it passed."""

    __slots__ = ("cancelling", "deadline", "expired", "task")

    def __init__(self, task: asyncio.Task[object], deadline: float) -> None:
        self.task = task
        self.deadline = deadline
        self.expired = False
        self.cancelling = task.cancelling()  # cancellations already pending on entry

    def timed_out(self) -> bool:
        """After a CancelledError in the block: was it this deadline, and only it?

        Consumes the deadline's cancellation (``uncancel``) when it expired.
        """
        return self.expired and self.task.uncancel() <= self.cancelling


class DeadlineWatch:
    """Cuts requests at their deadline; belongs to one event loop."""

    def __init__(self, *, tick: float = 0.05) -> None:
        self._tick = tick
        self._watched: dict[int, Expiry] = {}
        self._timer: asyncio.TimerHandle | None = None

    @contextmanager
    def watch(self, seconds: float) -> Iterator[Expiry]:
        """Cancel the current task if the block is still running ``seconds`` from now.

        On a CancelledError inside the block, ``expiry.timed_out()`` says whether it
        was the deadline (then handle it) or anything else (then re-raise).
        """
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None, "DeadlineWatch.watch runs inside a task"
        expiry = Expiry(task, loop.time() + seconds)
        key = id(expiry)
        self._watched[key] = expiry
        if self._timer is None:
            self._timer = loop.call_later(self._tick, self._check, loop)
        try:
            yield expiry
        finally:
            del self._watched[key]

    def close(self) -> None:
        """Stop the timer (the requests still watched are no longer cut)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for expiry in self._watched.values():
            if not expiry.expired and expiry.deadline <= now:
                expiry.expired = True
                expiry.task.cancel()
        self._timer = loop.call_later(self._tick, self._check, loop) if self._watched else None
