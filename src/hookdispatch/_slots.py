"""Worker-slot bookkeeping shared by the sync and async drivers (pure, no locking).

Tracks how many attempts are in flight, per endpoint too, and how each
endpoint's last attempt here went; and what worker threads hold leased for their
next attempts, and tickets they handed in (counted for the holds and for
``idle``, not as slots: a worker holds one slot whatever it holds). A failing
endpoint is *held back* to one attempt in flight at a time, and one not yet seen
to succeed to half the slots, so a dead receiver cannot occupy every worker
while healthy endpoints wait (head-of-line blocking). Callers serialise access
(a lock or the event loop).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable

from ._core import Claim

__all__ = ["DispatchStream", "WorkerSlots"]


class WorkerSlots:
    """``capacity`` attempts may run at once; see the module docstring."""

    def __init__(self, capacity: int, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self.capacity = capacity
        self.claiming = 0  # claims under way (the pump's, and workers' own)
        self._busy = 0
        self._clock = clock
        self._dispatching = 0  # slots held by dispatch() calls leasing their own
        self._ahead = 0  # deliveries workers leased ahead, not yet attempted
        self._handed = 0  # tickets workers handed in, whose results they have not taken
        self._per_endpoint: Counter[str] = Counter()
        self._since: dict[str, float] = {}  # delivery id -> when its attempt started
        self._failing: set[str] = set()
        self._proven: set[str] = set()
        # An endpoint not yet seen to succeed may fill half the slots: enough for a
        # healthy one to get going, not enough for a dead one to stall everything.
        self._unproven_share = max(1, capacity // 2)

    @property
    def free(self) -> int:
        """How many more attempts may start now."""
        return self.capacity - self._busy

    def coming(self, *, within: float) -> int:
        """How many workers may hand work in soon: those holding a slot between an
        attempt and its storage call, and attempts in flight that started at most
        ``within`` seconds ago. An attempt out for longer (a receiver slow to
        answer) is not waited for by a group commit (see
        ``_group_commit.Lingering``), nor is a dispatch() leasing its own."""
        since = self._clock() - within
        recent = sum(1 for start in self._since.values() if start >= since)
        return self._busy - self._dispatching - len(self._since) + recent

    @property
    def idle(self) -> bool:
        """No attempt is in flight, no claim is under way, no worker holds a
        delivery leased ahead or waits for a ticket's result."""
        return self._busy == 0 and self.claiming == 0 and self._ahead == 0 and self._handed == 0

    def held_back(self) -> set[str]:
        """Endpoints not to claim for now.

        Failing ones that already have an attempt out, and ones not yet seen to
        succeed that hold half the slots already.
        """
        return {
            endpoint
            for endpoint, busy in self._per_endpoint.items()
            if (endpoint in self._failing and busy)
            or (endpoint not in self._proven and busy >= self._unproven_share)
        }

    def reserve(self, count: int = 1, *, dispatch: bool = False) -> None:
        """Hold slots while their claim is under way: one while a worker claims its
        next delivery, the free ones while a dispatch leases its own (``dispatch``;
        see ``release``)."""
        self._busy += count
        if dispatch:
            self._dispatching += count

    def release(self, count: int = 1, *, dispatch: bool = False) -> None:
        """Give back slots held by ``reserve`` (with the same ``dispatch``)."""
        self._busy -= count
        if dispatch:
            self._dispatching -= count

    def handed_in(self) -> None:
        """A worker handed a ticket in (to a group commit): counted until
        :meth:`taken_back`, for :attr:`idle`, not as a slot (the worker holds its
        own slot, whatever it does meanwhile)."""
        self._handed += 1

    def taken_back(self) -> None:
        """A worker took a ticket's result (see :meth:`handed_in`)."""
        self._handed -= 1

    def may_send_held(self, endpoint_id: str) -> bool:
        """Whether a worker may attempt a delivery of the endpoint that it has held
        since before its last attempt (counted in :meth:`lease_ahead`): not when the
        endpoint is failing (its attempts go one at a time, each claimed after the
        one before failed), and, for one not yet seen to succeed, only within its
        share of the slots, the deliveries held for it included."""
        if endpoint_id in self._failing:
            return False
        return (
            endpoint_id in self._proven or self._per_endpoint[endpoint_id] <= self._unproven_share
        )

    def lease_ahead(self, claim: Claim) -> None:
        """``claim`` is held for a worker, to attempt after its current work: counted
        for its endpoint (so holds see it), and for :attr:`idle`, not as a slot."""
        self._ahead += 1
        self._per_endpoint[claim.endpoint.id] += 1

    def take_ahead(self, claim: Claim) -> None:
        """A delivery leased ahead is attempted now, in its worker's slot."""
        self._ahead -= 1
        self._busy += 1
        self._since[claim.delivery.id] = self._clock()

    def drop_ahead(self, claim: Claim) -> None:
        """A delivery held for a worker is given back unattempted (released)."""
        self._ahead -= 1
        self._end(claim.endpoint.id)

    def started(self, claims: Iterable[Claim]) -> None:
        """Count claimed deliveries as in flight."""
        for claim in claims:
            self.start(claim)

    def start(self, claim: Claim) -> None:
        """Count one claimed delivery as in flight."""
        self._busy += 1
        self._per_endpoint[claim.endpoint.id] += 1
        self._since[claim.delivery.id] = self._clock()

    def finished(self, claim: Claim, *, succeeded: bool | None) -> bool:
        """``claim``'s attempt ended; a success clears the endpoint's failing mark.

        ``succeeded=None``: it ended without an outcome (cancelled), which says
        nothing about the endpoint. Returns True when it lifted a hold: the
        endpoint's first success after failing or since it was first seen. Its due
        work may now take more slots, so the caller should wake whoever claims.
        """
        endpoint_id = claim.endpoint.id
        self._busy -= 1
        self._per_endpoint[endpoint_id] -= 1
        if not self._per_endpoint[endpoint_id]:
            del self._per_endpoint[endpoint_id]
        # (A delivery out twice, its first lease run out, is counted once.)
        self._since.pop(claim.delivery.id, None)
        if succeeded is None:
            return False
        if succeeded:
            self._failing.discard(endpoint_id)
            lifted = endpoint_id not in self._proven
            self._proven.add(endpoint_id)
            return lifted
        self._failing.add(endpoint_id)
        self._proven.discard(endpoint_id)
        return False

    def _end(self, endpoint_id: str) -> None:
        """One delivery of the endpoint fewer in hand."""
        self._per_endpoint[endpoint_id] -= 1
        if not self._per_endpoint[endpoint_id]:
            del self._per_endpoint[endpoint_id]


class DispatchStream:
    """Whether background dispatches come as a stream: each starting less than
    ``gap`` seconds after the one before returned, ``run`` or more in a row (a
    loop, or threads dispatching one after another). Pure; callers serialise
    access, as for :class:`WorkerSlots`. A ``gap`` of 0 sees no stream."""

    def __init__(
        self, *, gap: float, run: int, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self._gap = gap
        self._run = run
        self._clock = clock
        self._returned = float("-inf")  # when the last dispatch returned
        self._streak = 0  # dispatches in a row that started within the gap

    def starting(self) -> bool:
        """A dispatch starts: whether it comes deep in a stream (the ``run``-th in a
        row, or later, to start within the gap)."""
        if not self._gap:  # (AsyncDispatcher's: no clock read on its hot path)
            return False
        if self._clock() - self._returned < self._gap:
            self._streak += 1
        else:
            self._streak = 0
        return self._streak >= self._run

    def returned(self) -> None:
        """The dispatch's storage call ended (stored or failed)."""
        if self._gap:
            self._returned = self._clock()
