"""MemoryStorage: everything in this process's memory, for tests and throwaway scripts."""

from __future__ import annotations

import heapq
import itertools
import secrets
import threading
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime

from attrs import evolve

from .._core import Claim
from .._listing import DeliveryQuery, EndpointQuery
from .._models import (
    Attempt,
    Delivery,
    DeliveryStatus,
    Endpoint,
    Event,
    new_delivery,
    subscription_keys,
)
from ..exceptions import (
    InvalidInputError,
    UnknownDeliveryError,
    UnknownEndpointError,
    UnknownEventError,
)
from ._base import ENDPOINT_DELETED, Storage, check_prune_limit
from ._rotation import Rotation

__all__ = ["MemoryStorage"]


def _due_at(delivery: Delivery, when: datetime) -> Delivery:
    """The delivery, due at ``when``. (attrs.evolve does the same, several times slower.)"""
    return Delivery(
        id=delivery.id,
        event_id=delivery.event_id,
        endpoint_id=delivery.endpoint_id,
        status=delivery.status,
        attempt_count=delivery.attempt_count,
        next_attempt_at=when,
        last_error=delivery.last_error,
        created_at=delivery.created_at,
        updated_at=delivery.updated_at,
        tenant=delivery.tenant,
        event_type=delivery.event_type,
    )


class _Taking:
    """One claim under way: what it asked for, and what it has taken so far."""

    __slots__ = ("claims", "exclude_endpoints", "lease_until", "limit", "now", "skipped")

    def __init__(
        self, now: datetime, lease_until: datetime, limit: int, exclude_endpoints: Collection[str]
    ) -> None:
        self.now = now
        self.lease_until = lease_until
        self.limit = limit
        self.exclude_endpoints = exclude_endpoints
        self.claims: list[Claim] = []
        # Entries of excluded endpoints, popped on the way: pushed back at the end.
        self.skipped: list[tuple[str, tuple[datetime, int, str]]] = []


_BATCH_HOLD = 1000
"""Events ``add_events`` stores per hold of the lock: the workers' claims wait for a
few milliseconds at most."""


class MemoryStorage(Storage):
    """A :class:`Storage` held in dictionaries behind one lock.

    Fast and dependency-free, but nothing survives the process: pending retries are
    lost when it exits (the Dispatcher warns when that happens). Not shared between
    processes. Due deliveries are found through one heap per tenant, keyed by
    ``next_attempt_at``; claims serve the tenants in turn (see :meth:`claim`), and
    know exactly which tenants have work due, since every change passes through here.
    """

    blocking = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._endpoints: dict[str, Endpoint] = {}
        # Fan-out's index: (tenant, subscription pattern) -> endpoint ids, in the
        # order they were stored (dicts keep it).
        self._subscribers: dict[tuple[str, str], dict[str, None]] = defaultdict(dict)
        self._rank: dict[str, int] = {}  # endpoint id -> the order it was stored in
        self._deleted: set[str] = set()  # kept in _endpoints, hidden from lookups
        self._events: dict[str, Event] = {}
        self._deliveries: dict[str, Delivery] = {}
        self._by_event: dict[str, list[str]] = defaultdict(list)
        self._by_endpoint: dict[str, list[str]] = defaultdict(list)
        self._leases: dict[str, str] = {}
        self._attempts: dict[str, list[Attempt]] = defaultdict(list)
        # Per tenant, a heap of (due time, tiebreak, delivery id); stale entries are
        # skipped when popped, and dropped all at once when they outnumber the live
        # ones (see _push). A tenant's heap goes when it empties.
        self._heaps: dict[str, list[tuple[datetime, int, str]]] = {}
        self._entries = 0  # in all the heaps together
        self._rotation = Rotation()  # whose turn it is: see claim()
        self._counter = 0
        self._pending = 0  # deliveries not final: at most one live heap entry each
        # The final deliveries, in the order they became final (roughly updated_at
        # order): prune() looks for old ones here, not among every delivery.
        self._finished: dict[str, None] = {}
        self._instance = secrets.token_hex(4)
        self._tokens = itertools.count()

    def __repr__(self) -> str:
        return f"MemoryStorage(events={len(self._events)}, deliveries={len(self._deliveries)})"

    # Endpoints ----------------------------------------------------------------------

    def add_endpoint(self, endpoint: Endpoint) -> None:
        with self._lock:
            if endpoint.id in self._endpoints:
                raise InvalidInputError(f"an endpoint with id {endpoint.id!r} already exists")
            self._endpoints[endpoint.id] = endpoint
            self._rank[endpoint.id] = len(self._rank)
            self._index(endpoint)

    def _index(self, endpoint: Endpoint) -> None:
        for pattern in endpoint.events:
            self._subscribers[endpoint.tenant, pattern][endpoint.id] = None

    def _unindex(self, endpoint: Endpoint) -> None:
        for pattern in endpoint.events:
            key = (endpoint.tenant, pattern)
            self._subscribers[key].pop(endpoint.id, None)
            if not self._subscribers[key]:
                del self._subscribers[key]

    def update_endpoint(self, endpoint: Endpoint) -> None:
        with self._lock:
            old = self._endpoint(endpoint.id)
            self._endpoints[endpoint.id] = endpoint
            if (old.tenant, old.events) != (endpoint.tenant, endpoint.events):
                self._unindex(old)
                self._index(endpoint)
            if endpoint.enabled:
                # Deliveries skipped while it was disabled become findable again.
                for delivery in self._deliveries.values():
                    if delivery.endpoint_id == endpoint.id and delivery.status.is_final is False:
                        self._push(delivery)

    def get_endpoint(self, endpoint_id: str) -> Endpoint:
        with self._lock:
            return self._endpoint(endpoint_id)

    def _endpoint(self, endpoint_id: str) -> Endpoint:
        endpoint = self._endpoints.get(endpoint_id)
        if endpoint is None or endpoint_id in self._deleted:
            raise UnknownEndpointError(f"no endpoint with id {endpoint_id!r}")
        return endpoint

    def delete_endpoint(self, endpoint_id: str, *, now: datetime) -> int:
        with self._lock:
            endpoint = self._endpoint(endpoint_id)
            self._unindex(endpoint)
            self._deleted.add(endpoint_id)
            self._endpoints[endpoint_id] = evolve(
                endpoint, enabled=False, secret="", previous_secret=None
            )
            cancelled = 0
            for delivery_id in self._by_endpoint.pop(endpoint_id, []):
                delivery = self._deliveries[delivery_id]
                if delivery.status is not DeliveryStatus.PENDING:
                    continue
                self._deliveries[delivery_id] = evolve(
                    delivery,
                    status=DeliveryStatus.CANCELLED,
                    next_attempt_at=None,
                    last_error=ENDPOINT_DELETED,
                    updated_at=now,
                )
                self._leases.pop(delivery_id, None)
                self._pending -= 1
                self._finished[delivery_id] = None
                cancelled += 1
            return cancelled

    def find_endpoints(self, query: EndpointQuery) -> list[Endpoint]:
        return query.select(self.list_endpoints())

    def list_endpoints(self) -> list[Endpoint]:
        with self._lock:
            endpoints = [e for e in self._endpoints.values() if e.id not in self._deleted]
        # Creation order is created_at order (ties: the order they were stored).
        return sorted(endpoints, key=lambda endpoint: endpoint.created_at)

    def endpoints_for(self, tenant: str, event_type: str) -> list[Endpoint]:
        with self._lock:
            return self._endpoints_for(tenant, event_type)

    def _endpoints_for(self, tenant: str, event_type: str) -> list[Endpoint]:
        """``endpoints_for``, the lock held."""
        found: dict[str, Endpoint] = {}
        for pattern in subscription_keys(event_type):
            for endpoint_id in self._subscribers.get((tenant, pattern), ()):
                endpoint = self._endpoints[endpoint_id]
                if endpoint.enabled:
                    found[endpoint_id] = endpoint
        rank = self._rank
        return sorted(found.values(), key=lambda endpoint: (endpoint.created_at, rank[endpoint.id]))

    # Events and deliveries ----------------------------------------------------------

    def add_event_to_subscribers(self, event: Event, *, now: datetime) -> bool:
        """The fan-out and the event with its deliveries under one hold of the lock."""
        return self.add_event_and_claim(event, now=now, lease_until=now, limit=0)[0]

    def add_event_and_claim(
        self,
        event: Event,
        *,
        now: datetime,
        lease_until: datetime,
        limit: int,
        exclude_endpoints: Collection[str] = (),
    ) -> tuple[bool, list[Claim]]:
        """Under one hold of the lock: the fan-out, the event and its deliveries, and
        the leases of the first ``limit`` of them to endpoints not excluded (every
        subscriber is enabled, and each delivery due at ``now``: as ``claim`` of the
        event would lease them)."""
        with self._lock:
            if event.id in self._events:
                return False, []
            endpoints = self._endpoints_for(event.tenant, event.type)
            deliveries = [new_delivery(event, endpoint.id, now) for endpoint in endpoints]
            self._events[event.id] = event
            self._store_new(deliveries)
            claims: list[Claim] = []
            for delivery in deliveries:
                if len(claims) >= limit:
                    break
                if delivery.endpoint_id not in exclude_endpoints:
                    claims.append(self._lease(delivery, lease_until))
            return True, claims

    def add_event(self, event: Event, deliveries: Sequence[Delivery]) -> bool:
        with self._lock:
            if event.id in self._events:
                return False
            for delivery in deliveries:
                self._endpoint(delivery.endpoint_id)  # all or nothing: check first
            self._events[event.id] = event
            self._store_new(deliveries)
            return True

    def add_events(self, batch: Sequence[tuple[Event, Sequence[Delivery]]]) -> list[bool]:
        """Each event as :meth:`add_event` stores it, the lock taken once per
        :data:`_BATCH_HOLD` events rather than once per event."""
        stored: list[bool] = []
        for start in range(0, len(batch), _BATCH_HOLD):
            with self._lock:
                events = self._events
                for event, deliveries in batch[start : start + _BATCH_HOLD]:
                    if event.id in events:
                        stored.append(False)
                        continue
                    for delivery in deliveries:
                        self._endpoint(delivery.endpoint_id)  # all or nothing: check first
                    events[event.id] = event
                    self._store_new(deliveries)
                    stored.append(True)
        return stored

    def add_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        with self._lock:
            for delivery in deliveries:
                if delivery.event_id not in self._events:
                    raise UnknownEventError(f"no event with id {delivery.event_id!r}")
                self._endpoint(delivery.endpoint_id)
            self._store_new(deliveries)

    def _store_new(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            self._deliveries[delivery.id] = delivery
            self._by_event[delivery.event_id].append(delivery.id)
            self._by_endpoint[delivery.endpoint_id].append(delivery.id)
            if delivery.status is DeliveryStatus.PENDING:
                self._pending += 1
            else:
                self._finished[delivery.id] = None
            self._push(delivery)

    def _push(self, delivery: Delivery) -> None:
        when = delivery.next_attempt_at
        if when is not None:
            self._counter += 1
            heap = self._heaps.get(delivery.tenant)
            if heap is None:
                heap = self._heaps[delivery.tenant] = []
            heapq.heappush(heap, (when, self._counter, delivery.id))
            self._entries += 1
            self._rotation.note(delivery.tenant, when)
            # Every lease and every outcome leaves the delivery's previous entry
            # stale, and a lease's entry stays until the lease would end: without
            # this the heaps would hold every delivery leased in the last lease
            # period (a minute of traffic), and every pop would pay for it.
            if self._entries > 2 * self._pending + 1024:
                self._rebuild_heaps(self._is_live)

    def _rebuild_heaps(self, keep: Callable[[tuple[datetime, int, str]], bool]) -> None:
        """Keep only the entries ``keep`` accepts; drop the heaps left empty."""
        heaps: dict[str, list[tuple[datetime, int, str]]] = {}
        for tenant, heap in self._heaps.items():
            kept = [entry for entry in heap if keep(entry)]
            if kept:
                heapq.heapify(kept)
                heaps[tenant] = kept
        self._heaps = heaps
        self._entries = sum(len(heap) for heap in heaps.values())

    def _is_live(self, entry: tuple[datetime, int, str]) -> bool:
        delivery = self._deliveries[entry[2]]
        return delivery.status is DeliveryStatus.PENDING and delivery.next_attempt_at == entry[0]

    def get_event(self, event_id: str) -> Event:
        with self._lock:
            try:
                return self._events[event_id]
            except KeyError:
                raise UnknownEventError(f"no event with id {event_id!r}") from None

    def get_delivery(self, delivery_id: str) -> Delivery:
        with self._lock:
            return self._delivery(delivery_id)

    def _delivery(self, delivery_id: str) -> Delivery:
        try:
            return self._deliveries[delivery_id]
        except KeyError:
            raise UnknownDeliveryError(f"no delivery with id {delivery_id!r}") from None

    def list_deliveries(
        self,
        *,
        event_id: str | None = None,
        endpoint_id: str | None = None,
        status: DeliveryStatus | None = None,
        limit: int | None = None,
    ) -> list[Delivery]:
        with self._lock:
            if event_id is not None:
                candidates = [self._deliveries[i] for i in self._by_event.get(event_id, [])]
            else:
                candidates = list(self._deliveries.values())
        found = sorted(
            (
                d
                for d in candidates
                if (endpoint_id is None or d.endpoint_id == endpoint_id)
                and (status is None or d.status == status)
            ),
            key=lambda d: d.created_at,  # stable: ties keep the order they were stored
        )
        return found if limit is None else found[:limit]

    def find_deliveries(self, query: DeliveryQuery) -> list[Delivery]:
        """A sort of the candidates: the event's or endpoint's deliveries when the
        query names one, else every delivery (memory is for thousands, not millions)."""
        with self._lock:
            if query.event_id is not None:
                ids: Iterable[str] = self._by_event.get(query.event_id, [])
                candidates = [self._deliveries[i] for i in ids]
            else:
                candidates = list(self._deliveries.values())
        return query.select(candidates)

    # Work ---------------------------------------------------------------------------

    def _claimable(self, delivery: Delivery) -> bool:
        return (
            delivery.status is DeliveryStatus.PENDING
            and self._endpoints[delivery.endpoint_id].enabled
        )

    def claim(
        self,
        *,
        now: datetime,
        lease_until: datetime,
        limit: int,
        event_id: str | None = None,
        exclude_endpoints: Collection[str] = (),
    ) -> list[Claim]:
        """The tenants with due work in turn (see :meth:`Storage.claim`), each from its
        own heap, earliest due first; with one tenant that has any, its heap alone."""
        if limit <= 0:
            return []  # (due[:-1] below would be all but one)
        with self._lock:
            if event_id is not None:
                due = [
                    d
                    for i in self._by_event.get(event_id, [])
                    if (d := self._deliveries[i]).next_attempt_at is not None
                    and d.next_attempt_at <= now
                    and self._claimable(d)
                    and d.endpoint_id not in exclude_endpoints
                ]
                due.sort(key=lambda d: d.next_attempt_at or now)
                return [self._lease(d, lease_until) for d in due[:limit]]
            taking = _Taking(now, lease_until, limit, exclude_endpoints)
            if len(self._heaps) == 1:  # one tenant has work: its heap, in due order
                [tenant] = self._heaps
                self._take(tenant, limit, taking)
            else:
                self._take_in_turn(taking)
            for tenant, entry in taking.skipped:  # excluded this time: due for the next
                heapq.heappush(self._heaps.setdefault(tenant, []), entry)
                self._entries += 1
                self._rotation.note(tenant, entry[0])
            return taking.claims

    def _take_in_turn(self, taking: _Taking) -> None:
        """Round robin: one delivery of each tenant with due work, in turn, up to
        ``limit`` tenants; while room is left, another round of those that had one."""
        claims, limit = taking.claims, taking.limit
        active: list[str] = []
        last: str | None = None
        for tenant in self._rotation.turn(taking.now):
            if len(claims) == limit:
                break
            if self._take(tenant, 1, taking):
                active.append(tenant)
                last = tenant
        while active and len(claims) < limit:
            if len(active) == 1:  # the others ran out: the rest from this one, in due order
                self._take(active[0], limit - len(claims), taking)
                last = active[0]
                break
            still: list[str] = []
            for tenant in active:
                if len(claims) == limit:
                    break
                if self._take(tenant, 1, taking):
                    still.append(tenant)
                    last = tenant
            active = still
        if last is not None:
            self._rotation.served(last)

    def _take(self, tenant: str, count: int, taking: _Taking) -> int:
        """Lease up to ``count`` of ``tenant``'s due deliveries, earliest first, onto
        ``taking.claims``; how many. Entries of excluded endpoints go to
        ``taking.skipped``. When the tenant has no more due now, the rotation learns
        when it next may have."""
        now, excluded = taking.now, taking.exclude_endpoints
        taken = 0
        while taken < count:
            heap = self._heaps.get(tenant)  # (_push may rebuild the heaps meanwhile)
            if not heap or heap[0][0] > now:
                break
            entry = heapq.heappop(heap)
            self._entries -= 1
            delivery = self._deliveries[entry[2]]
            if delivery.next_attempt_at != entry[0] or not self._claimable(delivery):
                continue  # stale entry, or parked until its endpoint is enabled
            if delivery.endpoint_id in excluded:
                taking.skipped.append((tenant, entry))
                continue
            taking.claims.append(self._lease(delivery, taking.lease_until))
            taken += 1
        if taken < count:
            heap = self._heaps.get(tenant)
            if heap:
                self._rotation.rest(tenant, heap[0][0])  # (maybe stale: then it looks again)
            else:
                self._heaps.pop(tenant, None)
                self._rotation.rest(tenant, None)
        return taken

    def _lease(self, delivery: Delivery, lease_until: datetime) -> Claim:
        leased = _due_at(delivery, lease_until)
        self._deliveries[delivery.id] = leased
        self._push(leased)
        token = f"{self._instance}-{next(self._tokens)}"  # unique; no syscall per claim
        self._leases[delivery.id] = token
        event = self._events[delivery.event_id]
        return Claim(
            delivery=leased,
            endpoint=self._endpoints[delivery.endpoint_id],
            event_type=event.type,
            body=event.body,
            lease=token,
        )

    def complete(self, claim: Claim, attempt: Attempt, delivery: Delivery) -> bool:
        with self._lock:
            if attempt.delivery_id in self._deliveries:  # not pruned since the claim
                self._attempts[attempt.delivery_id].append(attempt)
            if self._leases.get(delivery.id) != claim.lease:
                return False
            del self._leases[delivery.id]
            self._deliveries[delivery.id] = delivery
            self._push(delivery)
            if delivery.status.is_final:
                self._pending -= 1
                self._finished[delivery.id] = None
                endpoint = self._endpoints[delivery.endpoint_id]
                failures = (
                    endpoint.consecutive_failures + 1
                    if delivery.status is DeliveryStatus.FAILED
                    else 0
                )
                if failures != endpoint.consecutive_failures:
                    self._endpoints[endpoint.id] = evolve(endpoint, consecutive_failures=failures)
            return True

    def release(self, claims: Sequence[Claim], *, due: datetime) -> None:
        with self._lock:
            for claim in claims:
                delivery_id = claim.delivery.id
                delivery = self._deliveries.get(delivery_id)
                if delivery is None or self._leases.get(delivery_id) != claim.lease:
                    continue
                del self._leases[delivery_id]
                if delivery.status is DeliveryStatus.PENDING:
                    again = _due_at(delivery, due)
                    self._deliveries[delivery_id] = again
                    self._push(again)

    def defer_endpoint(self, endpoint_id: str, *, until: datetime) -> int:
        with self._lock:
            moved = 0
            still_open: list[str] = []
            for delivery_id in self._by_endpoint.get(endpoint_id, []):
                delivery = self._deliveries[delivery_id]
                if delivery.status is not DeliveryStatus.PENDING:
                    continue  # final: dropped from this endpoint's open list
                still_open.append(delivery_id)
                due = delivery.next_attempt_at
                if delivery_id in self._leases or due is None or due >= until:
                    continue
                deferred = _due_at(delivery, until)
                self._deliveries[delivery_id] = deferred
                self._push(deferred)
                moved += 1
            self._by_endpoint[endpoint_id] = still_open
            return moved

    def next_due_at(self, *, event_id: str | None = None) -> datetime | None:
        with self._lock:
            if event_id is not None:
                ids = self._by_event.get(event_id, [])
                times = [
                    d.next_attempt_at
                    for i in ids
                    if (d := self._deliveries[i]).next_attempt_at is not None and self._claimable(d)
                ]
                return min(times, default=None)
            earliest: datetime | None = None
            for tenant in list(self._heaps):  # the earliest live entry of each heap
                heap = self._heaps[tenant]
                while heap:
                    when, _, delivery_id = heap[0]
                    delivery = self._deliveries[delivery_id]
                    if delivery.next_attempt_at == when and self._claimable(delivery):
                        break
                    heapq.heappop(heap)  # stale or parked: re-pushed when enabled
                    self._entries -= 1
                if not heap:
                    del self._heaps[tenant]
                elif earliest is None or heap[0][0] < earliest:
                    earliest = heap[0][0]
            return earliest

    def list_attempts(self, delivery_id: str) -> list[Attempt]:
        with self._lock:
            self._delivery(delivery_id)
            return sorted(self._attempts.get(delivery_id, []), key=lambda a: a.number)

    # Retention ----------------------------------------------------------------------

    def prune(self, *, older_than: datetime, limit: int) -> int:
        """One batch under the lock. Old finished deliveries are found among the
        finished ones only; the events that never had a delivery, by going through
        every event, but only once no old finished delivery is left (the last call
        of a run)."""
        check_prune_limit(limit)
        with self._lock:
            doomed: list[Delivery] = []
            for delivery_id in self._finished:
                delivery = self._deliveries[delivery_id]
                if delivery.updated_at < older_than:
                    doomed.append(delivery)
                    if len(doomed) == limit:
                        break
            for delivery in doomed:
                self._forget(delivery)
            if doomed:
                self._reindex_after_prune({d.endpoint_id for d in doomed})
            candidates: Iterable[str] = dict.fromkeys(d.event_id for d in doomed)
            if len(doomed) < limit:  # the last batch: events that never had a delivery too
                candidates = itertools.chain(candidates, self._events)
            orphans: dict[str, None] = {}  # (an event may come up twice)
            for event_id in candidates:
                event = self._events.get(event_id)
                if (
                    event is not None
                    and event.created_at < older_than
                    and not self._by_event.get(event_id)
                ):
                    orphans[event_id] = None
                    if len(orphans) == limit:
                        break
            for event_id in orphans:
                del self._events[event_id]
                self._by_event.pop(event_id, None)
            return len(doomed) + len(orphans)

    def _forget(self, delivery: Delivery) -> None:
        """Drop a final delivery, its attempts and its place in the event's list."""
        del self._deliveries[delivery.id]
        del self._finished[delivery.id]
        self._attempts.pop(delivery.id, None)
        self._leases.pop(delivery.id, None)
        siblings = self._by_event.get(delivery.event_id)
        if siblings is not None:
            siblings.remove(delivery.id)
            if not siblings:
                del self._by_event[delivery.event_id]

    def _reindex_after_prune(self, endpoint_ids: set[str]) -> None:
        """Drop deleted deliveries from the endpoints' open lists and from the heap."""
        for endpoint_id in endpoint_ids:
            # As defer_endpoint does: only the open deliveries stay listed.
            self._by_endpoint[endpoint_id] = [
                i
                for i in self._by_endpoint.get(endpoint_id, [])
                if (d := self._deliveries.get(i)) is not None and d.status is DeliveryStatus.PENDING
            ]
        # Stale entries of deleted deliveries (a final delivery has no live one).
        self._rebuild_heaps(lambda entry: entry[2] in self._deliveries)
