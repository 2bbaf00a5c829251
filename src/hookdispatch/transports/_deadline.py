"""The total deadline of one request: one mechanism per I/O model.

A webhook attempt gets ``request.timeout`` seconds for everything together: the
wait for a connection, connect, TLS, sending, waiting and reading. Client
libraries' timeouts are per operation (a receiver that sends one byte every 4
seconds never trips a 5 second read timeout), so the transports enforce their own.

* Blocking I/O: a :class:`Deadline` is one absolute time; every socket operation
  gets only :meth:`Deadline.left` of it, and past it that raises :class:`Expired`.
  Code that cannot be handed the deadline (httpcore's network backend) finds the
  current one with :func:`current_deadline`, set for the block by ``with deadline:``.
* asyncio: a :class:`DeadlineWatch` keeps the deadlines of the requests in flight and
  checks them every ``tick`` seconds on a single timer (only while any are in
  flight), cancelling the task of each request whose deadline has passed; one
  ``asyncio.timeout`` per request would schedule and cancel a timer every time,
  a noticeable share of a fast request's CPU. A request is cut at most ``tick``
  seconds late. Cancellation is told apart from any other as ``asyncio.timeout``
  does it: the request's own record says it expired, and ``Task.uncancel`` leaves
  no other cancellation pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from contextvars import ContextVar, Token
from typing import TypeVar

from ..exceptions import DeliveryTimeout

__all__ = [
    "Deadline",
    "DeadlineWatch",
    "Expired",
    "Expiry",
    "current_deadline",
    "timed_out",
]

T = TypeVar("T")


def timed_out(seconds: float) -> DeliveryTimeout:
    """The outcome of a request cut at its deadline (the one wording, every transport)."""
    return DeliveryTimeout(f"no complete response within {seconds:g} s")


class Expired(Exception):
    """The request's total deadline passed (raised between socket operations)."""


_current: ContextVar[Deadline | None] = ContextVar("hookdispatch_deadline", default=None)


def current_deadline() -> Deadline | None:
    """The deadline of the ``with deadline:`` block this runs in, if any."""
    return _current.get()


class Deadline:
    """``seconds`` from now, as one absolute time on the monotonic clock.

    ``with deadline:`` makes it :func:`current_deadline` for the block. (A class
    with slots: this runs on every request.)
    """

    __slots__ = ("_token", "at", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self._token: Token[Deadline | None] | None = None

    def left(self) -> float:
        """Seconds left, always more than 0. Raises Expired once none are."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise Expired
        return left

    def remaining(self) -> float:
        """Seconds left, 0 once it has passed (for waits that give up by themselves)."""
        return max(0.0, self.at - time.monotonic())

    def __enter__(self) -> Deadline:
        self._token = _current.set(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._token is not None
        _current.reset(self._token)


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
    """Cuts requests at their deadline, on one timer of the loop they run in.

    Used from another event loop (a new ``asyncio.run``), it starts afresh there:
    the requests of the old loop are no longer cut.
    """

    def __init__(self, *, tick: float = 0.05) -> None:
        self._tick = tick
        self._watched: dict[int, Expiry] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def watch(self, seconds: float) -> Expiry:
        """``with watch(seconds) as expiry:`` cancels the current task if the block
        is still running ``seconds`` from now.

        On a CancelledError inside the block, ``expiry.timed_out()`` says whether it
        was the deadline (then handle it) or anything else (then re-raise).
        """
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self.close()
            self._watched = {}
            self._loop = loop
        task = asyncio.current_task()
        assert task is not None, "DeadlineWatch.watch runs inside a task"
        return Expiry(self, task, loop.time() + seconds)

    async def run(self, seconds: float, exchange: Awaitable[T]) -> T | DeliveryTimeout:
        """Await ``exchange``, cut at ``seconds``: its result, or a DeliveryTimeout."""
        with self.watch(seconds) as expiry:
            try:
                return await exchange
            except asyncio.CancelledError:
                if expiry.timed_out():
                    return timed_out(seconds)
                raise

    def _add(self, expiry: Expiry) -> None:
        self._watched[id(expiry)] = expiry
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._tick, self._check, loop)

    def _remove(self, expiry: Expiry) -> None:
        self._watched.pop(id(expiry), None)

    def close(self) -> None:
        """Stop the timer (the requests still watched are no longer cut)."""
        if self._timer is not None:
            with contextlib.suppress(RuntimeError):  # its loop may be closed
                self._timer.cancel()
            self._timer = None

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for expiry in self._watched.values():
            if not expiry.expired and expiry.deadline <= now:
                expiry.expired = True
                expiry.task.cancel()
        self._timer = loop.call_later(self._tick, self._check, loop) if self._watched else None
