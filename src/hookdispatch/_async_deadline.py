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

__all__ = ["DeadlineWatch", "Expiry"]


class Expiry:
    """One request under watch: its task, its deadline, and whether it passed.

    A context manager: the block it guards is watched from entry to exit. (A class
    rather than a generator context manager: this runs on every request.)
    """

    __slots__ = ("_watch", "cancelling", "deadline", "expired", "task")

    def __init__(self, watch: DeadlineWatch, task: asyncio.Task[object], deadline: float) -> None:
        self._watch = watch
        self.task = task
        self.deadline = deadline
        self.expired = False
        self.cancelling = task.cancelling()  # cancellations already pending on entry

    def __enter__(self) -> Expiry:
        self._watch._add(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._watch._remove(self)

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

    def watch(self, seconds: float) -> Expiry:
        """``with watch(seconds) as expiry:`` cancels the current task if the block
        is still running ``seconds`` from now.

        On a CancelledError inside the block, ``expiry.timed_out()`` says whether it
        was the deadline (then handle it) or anything else (then re-raise).
        """
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None, "DeadlineWatch.watch runs inside a task"
        return Expiry(self, task, loop.time() + seconds)

    def _add(self, expiry: Expiry) -> None:
        self._watched[id(expiry)] = expiry
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._tick, self._check, loop)

    def _remove(self, expiry: Expiry) -> None:
        del self._watched[id(expiry)]

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
