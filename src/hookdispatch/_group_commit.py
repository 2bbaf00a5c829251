"""Group commit: the storage work of workers that finish at about the same time,
done as one storage call.

After an attempt a worker has up to two things to store: the attempt's success,
and a lease on its next deliveries. Done one worker at a time, each costs a
transaction (SQLite: a commit; PostgreSQL: a round trip), and the workers queue
for the write lock anyway. Here a worker hands its :class:`Ticket` in, and one
storage call (:meth:`Storage.complete_many`) stores every ticket waiting; the
tickets that arrive meanwhile wait, and go together in the next call.

On threads (:class:`GroupCommit`) a worker that has more work in hand (a delivery
it leased ahead, see ``Dispatcher._work``) hands its ticket in and sends that
while the group with its ticket is stored by a worker that waits: the storage's
time and the workers' overlap. (A thread of the group commit's own, storing
group after group, measured the same: 1.00 to 1.10 times, 7 rounds.) Under
asyncio each group's call runs as its own task (:class:`AsyncGroupCommit`).

Before a call the group waits briefly for others that may hand theirs in soon
(:class:`Lingering`): those between their attempt and the group, and those whose
attempt went out less than :data:`RECENT` ago; at most as long as the last
group's call took between two arrivals, and four times that in all. It does not
wait when there is nobody to wait for, nor, alone, when its last wait drew
nobody. A call costs about the same for one ticket as for eight, so under load
this shares it between more workers (measured with 8 threads: 1.1 to 1.3 times
the deliveries per second, and a sixth to a third less CPU per delivery, on
SQLite and PostgreSQL; see docs/scaling.md) for a wait no longer than a call or
two. Tickets that came during a call, from workers that went on meanwhile
(holding deliveries leased ahead, or other tickets), are stored next without
waiting: they made their group while the call ran, and their workers are not
waiting to join it; from workers that wait for them, the group lingers as ever.

What a group's call does is the driver's (``_settle``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from attrs import Factory, define

from ._core import Claim
from ._models import Attempt, Delivery

__all__ = ["RECENT", "AsyncGroupCommit", "GroupCommit", "Lingering", "Ticket"]

logger = logging.getLogger("hookdispatch")

MAX_GAP = 0.0025
"""The longest a group waits between two arrivals (s), however long calls take:
a call slowed by a lock wait or a checkpoint does not make the next group wait
as long."""
TIMER_FLOOR = 0.001
"""The shortest wait an event loop's timer keeps (s): epoll counts whole ms."""
RECENT = 0.01
"""A worker whose attempt has been out longer than this (s) is not waited for: its
receiver is slow, and a group would wait for it in vain."""


@define(eq=False)
class Ticket:
    """One worker's storage work after an attempt, and, once ``done``, its result."""

    claim: Claim  # the attempt's claim
    success: tuple[Attempt, Delivery] | None  # a success to record
    held_back: set[str] | None  # next deliveries are wanted, skipping these; None: not
    want: int = 1  # how many next deliveries (when held_back is not None)
    detached: bool = False  # its worker goes on meanwhile (it holds more work)
    held: bool = False  # the success's lease still held when it was recorded
    claims: list[Claim] = Factory(list)  # the worker's next deliveries, those that were due
    failed: bool = False  # the storage call raised (logged): nothing was stored
    done: bool = False


class Lingering:
    """How long a group waits for more tickets before its call (pure: the waiting
    is the caller's). ``busy()``: how many workers may hand a ticket in soon
    (waiting here, storing, or sending for less than :data:`RECENT`); a stale
    count only shortens or lengthens one wait, within its bounds. ``clock``:
    seconds, for the bounds."""

    def __init__(
        self,
        busy: Callable[[], int],
        *,
        clock: Callable[[], float] = time.perf_counter,
        max_gap: float = MAX_GAP,
    ) -> None:
        self._busy = busy
        self.clock = clock
        self._max_gap = max_gap
        self.last_call = 0.0  # how long the last group's call took (s)
        self._company = True  # the last wait found others to wait for

    def came_during_call(self) -> None:
        """Tickets came while the last call was under way: the workers are busy
        handing work in, so a group of one ticket waits again (two workers out of
        step would otherwise store one ticket a call, each alone, for good)."""
        self._company = True

    def waits(self, waiting: Callable[[], int]) -> Iterator[float]:
        """The waits (s) before the group is taken, one at a time: the caller waits
        up to each for the next arrival, then asks for the next.

        None when every busy worker has a ticket in (``waiting()``), when calls
        cost nothing yet, or when the group is one ticket alone and the last wait
        drew nobody: workers busy on a slow receiver hold their slots for seconds,
        and a worker beside them must not wait for them group after group (it
        waits again once a group has others in it without waiting). The first
        wait is as long as the last call took; each next one twice the time the
        arrivals so far took apiece, no longer (once they stop, the group need not
        wait a whole call for workers that are not coming). They end once every
        busy worker is in, once a wait passed with no arrival, or after four calls'
        time in all."""
        gap = min(self.last_call, self._max_gap)
        first = waiting()
        if gap <= 0 or first >= self._busy() or (first == 1 and not self._company):
            return
        began = now = self.clock()
        give_up = now + 4 * gap
        wait, before = gap, first
        while waiting() < self._busy():
            left = min(give_up - now, wait)
            if left <= 0:
                break
            yield left
            now = self.clock()
            if waiting() <= before:
                break  # nobody came within a wait
            before = waiting()
            wait = min(gap, 2 * (now - began) / (before - first))
        self._company = before > first or first > 1


class GroupCommit:
    """Tickets of worker threads, stored in groups by ``store`` (which never raises).

    A worker hands its ticket in (:meth:`submit`) and goes on with other work, or
    waits for it (:meth:`wait`; :meth:`join` does both). A waiting worker that finds
    no group being stored stores every ticket waiting, its own among them, once
    ``lingering`` has waited; the tickets that come meanwhile go in the next group.
    It does not linger when tickets of workers that went on (``Ticket.detached``)
    came during the last call: they made their group while it ran."""

    def __init__(self, store: Callable[[list[Ticket]], None], *, lingering: Lingering) -> None:
        self._store = store
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # a group stored
        self._arrived = threading.Condition(lock)  # a ticket in, while a group lingers
        self._lingering = lingering
        self._waiting: list[Ticket] = []
        self._storing = False
        self._back_to_back = False  # tickets came while the last call was under way

    def submit(self, ticket: Ticket) -> None:
        """Hand ``ticket`` in, and return at once: it is stored with the group of the
        next worker that waits (see :meth:`wait`)."""
        with self._cond:
            self._waiting.append(ticket)
            self._arrived.notify()

    def wait(self, ticket: Ticket) -> None:
        """Return once ``ticket`` (handed in) is stored: by this thread, with whatever
        else is waiting, or by the thread storing a group when it came."""
        with self._cond:
            while self._storing and not ticket.done:
                self._cond.wait()
            if ticket.done:
                return
            self._storing = True
            back_to_back = self._back_to_back
        lingering, began = self._lingering, None
        group: list[Ticket] = []
        try:
            with self._cond:
                if not back_to_back or not any(t.detached for t in self._waiting):
                    if back_to_back:
                        lingering.came_during_call()
                    for wait in lingering.waits(self._waiting.__len__):
                        self._arrived.wait(wait)
                group, self._waiting = self._waiting, []
            began = lingering.clock()
            self._store(group)
        except BaseException:  # (store never raises: no waiter may hang if it did)
            logger.exception("storing a group of tickets failed")
            for taken in group:
                taken.failed = True
        finally:
            with self._cond:
                if began is not None:
                    lingering.last_call = lingering.clock() - began
                for taken in group:
                    taken.done = True
                self._back_to_back = bool(self._waiting)
                self._storing = False
                self._cond.notify_all()

    def join(self, ticket: Ticket) -> None:
        """Hand ``ticket`` in and return once it is stored."""
        self.submit(ticket)
        self.wait(ticket)


class _Group:
    """One group of an AsyncGroupCommit: the task storing it, the futures of the
    tasks waiting on it, and the tickets it took (once it has lingered)."""

    __slots__ = ("sleepers", "task", "tickets")

    def __init__(self) -> None:
        self.sleepers: list[asyncio.Future[None]] = []
        self.tickets: list[Ticket] = []
        self.task: asyncio.Task[None] | None = None


class AsyncGroupCommit:
    """Tickets of tasks on one event loop, stored in groups by ``store`` (a
    coroutine that never raises; a group's call runs as its own task, so a waiting
    task that is cancelled leaves it, and the others' tickets, to finish), each
    group once ``lingering`` has waited."""

    def __init__(
        self,
        store: Callable[[list[Ticket]], Coroutine[Any, Any, None]],
        *,
        lingering: Lingering,
    ) -> None:
        self._store = store
        self._lingering = lingering
        self._arrived: asyncio.Event | None = None  # set on a ticket in, while lingering
        self._waiting: list[Ticket] = []
        self._group: _Group | None = None  # the last group started

    async def join(self, ticket: Ticket) -> None:
        """Return once ``ticket`` is stored (see :meth:`GroupCommit.join`).

        Each waiting task sleeps on a future of its own, woken when the task storing
        the group ends, with its outcome (see :meth:`_wake`): what ``asyncio.shield``
        of that task would do, at about 2 us less per ticket. A waiting task that is
        cancelled cancels only its own future, and leaves its ticket to be stored
        all the same."""
        self._waiting.append(ticket)
        if self._arrived is not None:
            self._arrived.set()
        loop = asyncio.get_running_loop()
        while not ticket.done:
            group = self._under_way(loop)
            sleeper = loop.create_future()
            group.sleepers.append(sleeper)
            try:
                await sleeper
            except asyncio.CancelledError:
                if not sleeper.done() or sleeper.cancelled():  # (not woken: still listed)
                    with contextlib.suppress(ValueError):
                        group.sleepers.remove(sleeper)
                raise
            except Exception:
                if any(taken is ticket for taken in group.tickets):
                    raise  # its own group's call failed
                # (the group that failed had not taken it: the next one will)

    def _under_way(self, loop: asyncio.AbstractEventLoop) -> _Group:
        """The group being lingered over or stored; a new one if none is."""
        group = self._group
        if group is None or group.task is None or group.task.done():
            group = self._group = _Group()
            group.task = loop.create_task(self._linger_and_store(group))
            group.task.add_done_callback(functools.partial(self._wake, group))
        return group

    def _wake(self, group: _Group, storing: asyncio.Task[None]) -> None:
        """``group``'s task ended: wake the tasks that waited on it, with its outcome,
        its cancellation or its exception (``store`` never raises; were anything in
        its place to, the loop closing under it say, it reaches the waiters whose
        tickets that group took, as through ``asyncio.shield``; the others wait for
        the next group). Tickets handed in meanwhile start the next group now,
        whether or not a task still waits for them (one cancelled meanwhile leaves
        its ticket to be stored)."""
        cancelled = storing.cancelled()
        failure = None if cancelled else storing.exception()
        if not cancelled and self._waiting and self._group is group:
            self._under_way(storing.get_loop())
        for sleeper in group.sleepers:
            if sleeper.done():
                continue
            if cancelled:
                sleeper.cancel()
            elif failure is not None:
                sleeper.set_exception(failure)
            else:
                sleeper.set_result(None)

    async def _linger_and_store(self, group: _Group) -> None:
        """One group: the tickets waiting once it has lingered, stored.

        A wait shorter than :data:`TIMER_FLOOR` is one turn of the loop (the tasks
        ready now run, and may hand theirs in): the loop's timers round a shorter
        one up to a millisecond or more, longer than the calls it waits on."""
        arrived = self._arrived = asyncio.Event()
        lingering = self._lingering
        try:
            for wait in lingering.waits(self._waiting.__len__):
                if wait < TIMER_FLOOR:
                    await asyncio.sleep(0)
                    continue
                arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), wait)
        finally:
            self._arrived = None
        group.tickets, self._waiting = self._waiting, []
        began = lingering.clock()
        try:
            await self._store(group.tickets)
        finally:
            lingering.last_call = lingering.clock() - began

    async def wait(self) -> None:
        """Return once no group is being stored (closing waits for this)."""
        while self._group is not None and self._group.task is not None:
            if self._group.task.done():
                return
            await asyncio.shield(self._group.task)
