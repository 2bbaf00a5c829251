"""Whose turn it is: the round robin of tenants that ``Storage.claim`` follows.

Every backend shipped with hookdispatch claims by the same rule (stated in
:meth:`Storage.claim <hookdispatch.storage.Storage.claim>`): the tenants with due
work take turns, in the order of their ids, starting after the tenant served last.
:class:`Rotation` is the bookkeeping behind it, one per storage object: which tenants
may have work due now (``ready``), which have work due later (``waiting``, by when),
and the tenant served last. A claim asks :meth:`Rotation.turn` whose turn it is, takes
their deliveries from the store, then says what it found (:meth:`Rotation.served`,
:meth:`Rotation.rest`); the store, not this picture, decides what is claimable, so a
stale picture can make a claim less fair but never wrong.

MemoryStorage tells it of every delivery it schedules (:meth:`Rotation.note`), so its
picture is exact. SQLite and PostgreSQL stores are written by other processes too:
they refresh the picture from the database (:meth:`Rotation.replace`, from a walk of
the index on (tenant, next_attempt_at), one step per tenant with pending work)
every :data:`WALK_EVERY` to :data:`WALK_MOST` seconds, more seldom the more tenants
it finds: a few tenants cost next to nothing, tens of thousands a bounded share of
the time of the worker that walks. Between walks their claims keep the picture up to
date for the tenants they visit.
"""

from __future__ import annotations

import bisect
import heapq
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import datetime

__all__ = ["WALK_EVERY", "WALK_MOST", "WALK_PER_TENANT", "Rotation", "ran_out"]

WALK_EVERY = 0.1
"""Seconds between two walks of a SQL store's tenants, at least..."""

WALK_PER_TENANT = 0.0001
"""... and this many seconds more for each tenant the last walk found (a walk costs
some 2 to 15 µs a tenant: at most about a tenth of the walker's time)..."""

WALK_MOST = 1.0
"""... up to this many seconds; but never less than four times as long as the last
walk took (a slow server, or a great many tenants)."""


class Rotation:
    """The tenants with due work as one storage object sees them, and whose turn it is.

    Thread-safe (with the one caveat of :meth:`note`): every method takes the
    rotation's own lock, briefly.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.last: str | None = None
        """The tenant served last: the next turn starts after it."""
        self._ready: list[str] = []  # sorted by id
        self._is_ready: set[str] = set()
        # (when, tenant), a heap; an entry is current while _wake[tenant] == when.
        self._waiting: list[tuple[datetime, str]] = []
        self._wake: dict[str, datetime] = {}
        self._walked_at: float | None = None  # time.monotonic() of the last walk
        self._walk_every = WALK_EVERY
        self._walking = False

    def __repr__(self) -> str:
        return f"<Rotation ready={len(self._ready)} waiting={len(self._wake)} last={self.last!r}>"

    # What the store tells it ----------------------------------------------------------

    def note(self, tenant: str, when: datetime) -> None:
        """``tenant`` has pending work due at ``when`` (just stored or rescheduled).

        Called for every delivery a store schedules, so a tenant already ready, or
        already due to wake up by ``when``, costs a lookup only, outside the lock: a
        store that notes while another thread may :meth:`rest` the same tenant must
        serialise the two itself (MemoryStorage holds its own lock around both)."""
        if tenant in self._is_ready:
            return
        wake = self._wake.get(tenant)
        if wake is not None and wake <= when:
            return
        with self._lock:
            self._note(tenant, when)

    def _note(self, tenant: str, when: datetime) -> None:
        if tenant in self._is_ready:
            return
        wake = self._wake.get(tenant)
        if wake is None or when < wake:
            self._wake[tenant] = when
            heapq.heappush(self._waiting, (when, tenant))
            if len(self._waiting) > 2 * len(self._wake) + 64:  # drop the outdated entries
                self._waiting = [(w, t) for w, t in self._waiting if self._wake.get(t) == w]
                heapq.heapify(self._waiting)

    def rest(self, tenant: str, until: datetime | None) -> None:
        """A claim found no claimable work of ``tenant`` due now: it waits until
        ``until``, its earliest pending work (``None``: it has none, forget it)."""
        with self._lock:
            if tenant in self._is_ready:
                self._is_ready.discard(tenant)
                del self._ready[bisect.bisect_left(self._ready, tenant)]
            self._wake.pop(tenant, None)
            if until is not None:
                self._note(tenant, until)

    def served(self, tenant: str) -> None:
        """``tenant`` was served last: the next turn starts after it."""
        self.last = tenant

    def served_in_rounds(self, tenants: list[str], counts: Mapping[str, int]) -> None:
        """A claim served ``tenants`` (in turn) in rounds, ``counts`` deliveries each:
        the last one served is the last in turn of those that had the most."""
        rounds = max(counts.get(tenant, 0) for tenant in tenants)
        self.last = next(t for t in reversed(tenants) if counts.get(t, 0) == rounds)

    def replace(self, earliest: Iterable[tuple[str, datetime]], now: datetime) -> None:
        """The whole picture anew, from a walk of the store: each tenant with pending
        work and the due time of its earliest (``now``: the time to judge them by)."""
        ready: list[str] = []
        waiting: list[tuple[datetime, str]] = []
        for tenant, when in earliest:
            if when <= now:
                ready.append(tenant)
            else:
                waiting.append((when, tenant))
        ready.sort()
        heapq.heapify(waiting)
        with self._lock:
            self._ready, self._is_ready = ready, set(ready)
            self._waiting, self._wake = waiting, {tenant: when for when, tenant in waiting}

    # What a claim asks ----------------------------------------------------------------

    def contended(self, now: datetime) -> bool:
        """Whether more than one tenant may have work due at ``now``. When not, the
        round robin is the plain earliest-due order, and a claim takes that path."""
        with self._lock:
            self._promote(now)
            return len(self._ready) > 1

    def turn(self, now: datetime, count: int | None = None) -> list[str]:
        """Up to ``count`` tenants (all when ``None``) that may have work due at
        ``now``, in turn: by id, starting after the tenant served last, wrapping round."""
        with self._lock:
            self._promote(now)
            ready = self._ready
            start = 0 if self.last is None else bisect.bisect_right(ready, self.last)
            if count is None or count >= len(ready):
                return ready[start:] + ready[:start]
            taken = ready[start : start + count]
            if len(taken) < count:
                taken += ready[: count - len(taken)]
            return taken

    def _promote(self, now: datetime) -> None:
        waiting = self._waiting
        while waiting and waiting[0][0] <= now:
            when, tenant = heapq.heappop(waiting)
            if self._wake.get(tenant) == when:
                del self._wake[tenant]
                self._is_ready.add(tenant)
                bisect.insort(self._ready, tenant)

    # Walks (SQL stores) ---------------------------------------------------------------

    def walk_due(self) -> bool:
        """Whether the caller should walk the store now; if so, it must then call
        :meth:`walked` (or :meth:`walk_failed`). One caller at a time gets ``True``."""
        with self._lock:
            if self._walking:
                return False
            clock = time.monotonic()
            if self._walked_at is not None and clock - self._walked_at < self._walk_every:
                return False
            self._walking = True
            return True

    def walked(
        self, earliest: Iterable[tuple[str, datetime]], now: datetime, seconds: float
    ) -> None:
        """A walk that took ``seconds`` found ``earliest`` (see :meth:`replace`)."""
        found = list(earliest)
        self.replace(found, now)
        pause = WALK_EVERY + min(WALK_MOST - WALK_EVERY, WALK_PER_TENANT * len(found))
        with self._lock:
            self._walking = False
            self._walked_at = time.monotonic()
            self._walk_every = max(pause, 4 * seconds)

    def walk_failed(self) -> None:
        """The walk raised: keep the old picture, and try again after the interval."""
        with self._lock:
            self._walking = False
            self._walked_at = time.monotonic()


def ran_out(tenants: list[str], counts: Mapping[str, int], *, cap: int, full: bool) -> list[str]:
    """Which of ``tenants`` (in turn) a claim in rounds found without more due work,
    from how many deliveries each gave (``counts``, at most ``cap`` each): all that
    gave fewer than ``cap`` when the claim came up short of its limit (each gave all
    it had); when it was ``full``, those that missed a round before the last, or the
    last round before the tenant served last (after it, the limit cut the round)."""
    if not full:
        return [tenant for tenant in tenants if counts.get(tenant, 0) < cap]
    rounds = max(counts.get(tenant, 0) for tenant in tenants)
    last = max(i for i, tenant in enumerate(tenants) if counts.get(tenant, 0) == rounds)
    return [
        tenant
        for i, tenant in enumerate(tenants)
        if counts.get(tenant, 0) < rounds - 1 or (counts.get(tenant, 0) == rounds - 1 and i < last)
    ]
