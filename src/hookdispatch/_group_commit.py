"""Group commit: the storage work of workers that finish at about the same time,
done as one storage call.

After an attempt a worker has up to two things to store: the attempt's success,
and a lease on its next delivery. Done one worker at a time, each costs a
transaction (SQLite: a commit; PostgreSQL: a round trip), and the workers queue
for the write lock anyway. Here a worker hands its :class:`Ticket` in; the first
worker to find no group being stored takes every ticket waiting, its own
included, and stores them all in one call (:meth:`Storage.complete_many`); the
tickets that arrive meanwhile wait, and go together in the next call. Nobody
waits for a group to fill: a worker alone is stored at once, as before, and under
load the groups grow by themselves, as long as one call takes.

:class:`GroupCommit` is the face for threads, :class:`AsyncGroupCommit` the one
for an event loop; what a group's call does is the driver's (``_settle``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from attrs import Factory, define

from ._core import Claim
from ._models import Attempt, Delivery

__all__ = ["AsyncGroupCommit", "GroupCommit", "Ticket"]


@define(eq=False)
class Ticket:
    """One worker's storage work after an attempt, and, once ``done``, its result."""

    claim: Claim  # the attempt's claim
    success: tuple[Attempt, Delivery] | None  # a success to record
    held_back: set[str] | None  # a next delivery is wanted, skipping these; None: not
    held: bool = False  # the success's lease still held when it was recorded
    claims: list[Claim] = Factory(list)  # the worker's next delivery, if one was due
    failed: bool = False  # the storage call raised (logged): nothing was stored
    done: bool = False


class GroupCommit:
    """Tickets of worker threads, stored in groups by ``store`` (which never raises)."""

    def __init__(self, store: Callable[[list[Ticket]], None]) -> None:
        self._store = store
        self._cond = threading.Condition(threading.Lock())
        self._waiting: list[Ticket] = []
        self._storing = False

    def join(self, ticket: Ticket) -> None:
        """Return once ``ticket`` is stored: by this thread, with whatever else is
        waiting, or by the thread storing a group when it came."""
        with self._cond:
            self._waiting.append(ticket)
            while self._storing and not ticket.done:
                self._cond.wait()
            if ticket.done:
                return
            self._storing = True
            group, self._waiting = self._waiting, []
        try:
            self._store(group)
        finally:
            with self._cond:
                self._storing = False
                self._cond.notify_all()


class AsyncGroupCommit:
    """Tickets of tasks on one event loop, stored in groups by ``store`` (a
    coroutine that never raises; a group's call runs as its own task, so a waiting
    task that is cancelled leaves it, and the others' tickets, to finish)."""

    def __init__(self, store: Callable[[list[Ticket]], Coroutine[Any, Any, None]]) -> None:
        self._store = store
        self._waiting: list[Ticket] = []
        self._storing: asyncio.Task[None] | None = None

    async def join(self, ticket: Ticket) -> None:
        """Return once ``ticket`` is stored (see :meth:`GroupCommit.join`)."""
        self._waiting.append(ticket)
        while not ticket.done:
            if self._storing is None or self._storing.done():
                group, self._waiting = self._waiting, []
                self._storing = asyncio.get_running_loop().create_task(self._store(group))
            await asyncio.shield(self._storing)

    async def wait(self) -> None:
        """Return once no group is being stored (closing waits for this)."""
        while self._storing is not None and not self._storing.done():
            await asyncio.shield(self._storing)
