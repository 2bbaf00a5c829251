"""The storage contract every backend fulfils.

A backend keeps endpoints, events, deliveries and attempts, and hands out due
deliveries to workers under a *lease*. The contract, for every implementation:

* **Time.** Every datetime passed in or returned is timezone-aware UTC.
* **Atomicity.** ``add_event`` stores an event with all its deliveries, or nothing.
  ``complete`` stores the attempt and the delivery's new state together.
* **Idempotency.** ``add_event`` with an event id that is already stored changes
  nothing and returns ``False``.
* **Exclusive claims.** ``claim`` hands a pending, due delivery to one caller only, and
  moves its ``next_attempt_at`` to the lease's end, so no other caller (thread or
  process) can claim it until the lease expires. A lease that expires without
  ``complete`` makes the delivery due again: this is how work held by a crashed
  worker is recovered (at-least-once delivery).
* **Lease check.** ``complete`` updates the delivery only while the caller's lease is
  the current one; a worker whose lease expired and was taken over records its attempt
  but does not overwrite the new holder's state.
* **Final states.** Deliveries that succeeded or failed are never claimed again.
* **Disabled endpoints.** Deliveries to a disabled endpoint are neither claimed nor
  counted by ``next_due_at``; enabling the endpoint makes them due as scheduled.
* **Ordering.** ``claim`` serves the tenants with due work in turn (round robin by
  tenant id, starting after the tenant served last: see ``claim``) and takes each
  tenant's earliest-due deliveries first (returned in any order); with one tenant,
  that is the earliest-due deliveries. ``list_attempts``
  returns attempts by ``number``; listings of deliveries are in creation order.
* **Errors.** Unknown ids raise the matching ``NotFoundError`` subclass; driver
  failures are raised as :class:`~hookdispatch.exceptions.StorageError`, never as the
  driver's own exception type.
* **Tenants.** An endpoint and an event each belong to one tenant (``tenant``);
  ``endpoints_for`` returns only the asked tenant's endpoints, and the tenant of an
  endpoint or event is stored and returned as given. ``add_event`` does not check
  that the deliveries' endpoints are the event's tenant's: fan-out (through
  ``endpoints_for``) guarantees it.
* **Deletion.** ``delete_endpoint`` hides the endpoint from every lookup for good and
  cancels its unfinished deliveries (status CANCELLED, final), keeping every
  delivery and attempt. Optional: the default raises
  :class:`~hookdispatch.exceptions.InvalidStateError`.
* **Retention.** ``prune`` deletes finished (succeeded, failed or cancelled) deliveries last
  changed before a cutoff, with their attempts, and then the events created before it
  that have no delivery left, a bounded batch per call in one short transaction. It
  never deletes a pending delivery, nor an event that still has one, however old.
  Optional: the default raises :class:`~hookdispatch.exceptions.InvalidStateError`.
* **Threads.** Every method may be called from any thread at any time.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from .._core import Claim
from .._listing import DeliveryQuery, EndpointQuery
from .._models import Attempt, Delivery, DeliveryStatus, Endpoint, Event
from ..exceptions import InvalidInputError, InvalidStateError, WouldBlockError

__all__ = ["ENDPOINT_DELETED", "Storage", "check_prune_limit"]

logger = logging.getLogger("hookdispatch")

_T = TypeVar("_T")

_NEXT_CLAIM_FAILED = "claiming the next delivery failed; the pump takes over"

ENDPOINT_DELETED = "cancelled: its endpoint was deleted"
"""The ``last_error`` of a delivery cancelled by ``delete_endpoint``."""


def check_prune_limit(limit: int) -> None:
    """Raise InvalidInputError unless ``limit`` is a positive int (``prune``'s batch)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidInputError(f"limit must be a positive number of rows, not {limit!r}")


class Storage(abc.ABC):
    """Base class of storage backends. Subclass it to plug in your own.

    ``hookdispatch.testing`` ships the conformance tests a backend must pass.
    """

    blocking: ClassVar[bool] = True
    """Whether methods may block on I/O. The async dispatcher runs the methods of a
    blocking storage in worker threads, never on the event loop; set ``False`` only
    for a backend that does no I/O and holds its locks briefly (like MemoryStorage)."""

    def without_waiting(self, call: Callable[[], _T]) -> _T:
        """``call()``, work made of this storage's methods, run in the calling thread
        as long as it need not wait; its result.

        Raises :class:`WouldBlockError`, having changed nothing, when the first write
        ``call`` makes would have to wait: for a lock another thread or process
        holds, a sync to disk, a network round trip. (A later write of the same call
        waits as usual: the first is stored by then.) Other errors propagate as
        ``call`` raises them. The async dispatcher runs its short hot calls (a
        dispatch, a group of outcomes, the pump's claim) this way on the event
        loop, and in a storage thread when this raises.

        This default raises at once, so every call goes to a thread. SQLiteStorage
        overrides it: its writes take microseconds unless another writer holds
        the file, and it never syncs to disk inside the call.
        """
        raise WouldBlockError(f"{type(self).__name__} may block: run the call in a thread")

    # Endpoints ----------------------------------------------------------------------

    @abc.abstractmethod
    def add_endpoint(self, endpoint: Endpoint) -> None:
        """Store a new endpoint. Raises InvalidInputError if its id is taken."""

    @abc.abstractmethod
    def update_endpoint(self, endpoint: Endpoint) -> None:
        """Replace the stored endpoint with the same id (every field: URL, secret, events,
        enabled, description, headers, metadata and the rest).

        Raises UnknownEndpointError if there is none.
        """

    @abc.abstractmethod
    def get_endpoint(self, endpoint_id: str) -> Endpoint:
        """The endpoint with this id. Raises UnknownEndpointError."""

    @abc.abstractmethod
    def list_endpoints(self) -> list[Endpoint]:
        """Every endpoint, enabled or not, in creation order."""

    def find_endpoints(self, query: EndpointQuery) -> list[Endpoint]:
        """One page of endpoints (not deleted), as :class:`EndpointQuery` says: the
        tenant's or every one, oldest first by (``created_at``, id), strictly after
        ``query.after``, ``query.limit`` at most.

        The default filters :meth:`list_endpoints`: correct, but it reads every
        endpoint. A backend with many overrides it with an index on (tenant,
        created_at, id).
        """
        return query.select(self.list_endpoints())

    def delete_endpoint(self, endpoint_id: str, *, now: datetime) -> int:
        """Delete an endpoint and cancel its unfinished deliveries; return how many.

        Afterwards the endpoint is gone for every lookup (``get_endpoint`` raises
        UnknownEndpointError, ``list_endpoints`` and ``endpoints_for`` omit it) and its
        secrets are no longer kept. Each of its pending deliveries, leased ones
        included, becomes CANCELLED at ``now`` (``next_attempt_at`` ``None``,
        ``last_error`` saying why, lease dropped, so a worker still sending one
        records its attempt and gets ``False`` from ``complete``). Finished and
        cancelled deliveries and every attempt are kept, and still name the endpoint;
        no other endpoint's rows change. Its id is never used again: ``add_endpoint``
        with it raises InvalidInputError. One transaction. Raises
        UnknownEndpointError for an unknown or already deleted endpoint.

        Optional: the default raises InvalidStateError, saying that the backend does
        not support deleting endpoints (disable them instead).
        """
        raise InvalidStateError(
            f"{type(self).__name__} does not support deleting endpoints: it does not"
            " implement Storage.delete_endpoint(endpoint_id, now=...); disable it instead"
        )

    def endpoints_for(self, tenant: str, event_type: str) -> list[Endpoint]:
        """The enabled endpoints of ``tenant`` subscribed to ``event_type`` (exactly, by
        a ``prefix.*`` pattern, or by ``*``), in creation order: fan-out, on every
        ``dispatch()``.

        Backends answer it from an index keyed by (tenant, pattern), looking up the
        patterns that match the type (:func:`~hookdispatch._models.subscription_keys`),
        so its cost does not grow with the number of endpoints. The default filters
        :meth:`list_endpoints`, which is correct but reads every endpoint: fine for a
        few hundred, a backend with more should override it.
        """
        return [
            endpoint
            for endpoint in self.list_endpoints()
            if endpoint.tenant == tenant and endpoint.enabled and endpoint.wants(event_type)
        ]

    # Events and deliveries ----------------------------------------------------------

    @abc.abstractmethod
    def add_event(self, event: Event, deliveries: Sequence[Delivery]) -> bool:
        """Store ``event`` and its ``deliveries`` atomically.

        Returns ``True`` when stored, ``False`` (storing nothing) when an event with
        the same id already exists. Once this returns, the data is durable as far as
        the backend promises (documented per backend).
        """

    def add_event_to_subscribers(self, event: Event, *, now: datetime) -> bool:
        """Fan ``event`` out and store it with its deliveries, atomically: what every
        ``dispatch()`` does.

        The deliveries are one new :meth:`Delivery.create <hookdispatch.Delivery.create>`
        (due at ``now``) per endpoint ``endpoints_for(event.tenant, event.type)``
        returns, as that call would return them when the event is stored. Returns
        ``True`` when stored, ``False`` (storing nothing) for an event id already
        stored, as :meth:`add_event`.

        The default makes the two calls. A backend overrides it to do both in one
        transaction, or one round trip: PostgresStorage looks the endpoints up in the
        statement that stores the event. A backend may also store who gets the event
        in a form of its own and write the delivery rows later (SQLiteStorage and
        PostgresStorage do, in bulk, at a claim), as long as every method that reads
        or changes deliveries, from any process, behaves as if they had been
        written here.
        """
        endpoints = self.endpoints_for(event.tenant, event.type)
        return self.add_event(event, [Delivery.create(event, e, now=now) for e in endpoints])

    def add_event_and_claim(
        self,
        event: Event,
        *,
        now: datetime,
        lease_until: datetime,
        limit: int,
        exclude_endpoints: Collection[str] = (),
    ) -> tuple[bool, list[Claim]]:
        """``add_event_to_subscribers(event, now=now)``, then lease up to ``limit`` of
        its deliveries: ``claim(limit=limit, event_id=event.id, …)``.

        A dispatch that finds worker slots free hands its new deliveries to them at
        once, instead of waking a poller to claim them in a second transaction (an
        inline dispatch leases its first attempts so, ``limit`` its claim size). The
        event is stored (or not: an id stored already) exactly as
        ``add_event_to_subscribers`` stores it, and the claims are leased exactly as
        that ``claim`` would lease them: the endpoints in ``exclude_endpoints`` are
        left alone, and the rest of the deliveries stay due for any worker. Returns
        whether the event was new, and the claims (none for an event stored
        already, or for ``limit`` 0).

        Optional. SQLiteStorage stores the leased deliveries leased in the same
        transaction, PostgresStorage in the same statement, and MemoryStorage under
        one hold of its lock. The default makes the
        two calls; a claim that fails after the event was stored is logged and
        returns no delivery (the dispatcher's pump claims them later).
        """
        stored = self.add_event_to_subscribers(event, now=now)
        if not stored or limit <= 0:
            return stored, []
        claims = self._claim_or_log(
            "claiming the new event's deliveries failed; they stay due, to be claimed again",
            now=now,
            lease_until=lease_until,
            limit=limit,
            event_id=event.id,
            exclude_endpoints=exclude_endpoints,
        )
        return stored, claims

    def add_events(self, batch: Sequence[tuple[Event, Sequence[Delivery]]]) -> list[bool]:
        """Store many events with their deliveries; one ``add_event`` result per event.

        Each event is atomic with its deliveries, as in ``add_event``; the batch as a
        whole need not be. The default calls ``add_event`` for each; backends
        override it to write the batch in one transaction.
        """
        return [self.add_event(event, deliveries) for event, deliveries in batch]

    def add_event_in_transaction(
        self, connection: object, event: Event, deliveries: Sequence[Delivery]
    ) -> bool:
        """Store ``event`` and its ``deliveries`` through the caller's open transaction.

        The transactional outbox: ``connection`` is the application's own database
        connection (for SQLiteStorage an ``sqlite3.Connection`` to the same file, for
        PostgresStorage a psycopg connection to the same database). The rows become
        visible to workers when the caller commits and vanish if it rolls back; this
        method never commits. Returns ``False`` for an event id already stored.

        The default raises InvalidInputError: a backend opts in by overriding it.
        """
        raise InvalidInputError(
            f"{type(self).__name__} cannot join your transaction; dispatch without"
            " transaction=, or use SQLiteStorage or PostgresStorage"
        )

    @abc.abstractmethod
    def add_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        """Store new deliveries of already stored events (redelivery)."""

    @abc.abstractmethod
    def get_event(self, event_id: str) -> Event:
        """The event with this id. Raises UnknownEventError."""

    @abc.abstractmethod
    def get_delivery(self, delivery_id: str) -> Delivery:
        """The delivery with this id. Raises UnknownDeliveryError."""

    @abc.abstractmethod
    def list_deliveries(
        self,
        *,
        event_id: str | None = None,
        endpoint_id: str | None = None,
        status: DeliveryStatus | None = None,
        limit: int | None = None,
    ) -> list[Delivery]:
        """Deliveries matching every given filter, oldest first, at most ``limit``."""

    def find_deliveries(self, query: DeliveryQuery) -> list[Delivery]:
        """One page of deliveries, as :class:`DeliveryQuery` says: every given filter
        holds, in (``created_at``, id) order (reversed for ``newest_first``), strictly
        beyond ``query.after`` in that order, ``query.limit`` at most.

        Keyset paging: a page starts after the last row of the previous one, so
        rows added or deleted meanwhile never make a row appear twice or go missing
        (rows created meanwhile, before the cursor's place, are not shown).

        The default filters :meth:`list_deliveries`: correct, but it reads every
        delivery of the event, of the endpoint or in the status given (all of them
        with none of those). A backend holding many overrides it with indexes on
        (tenant, created_at, id), (endpoint_id, created_at, id) and (created_at, id),
        so that a page costs the same on any row (SQLiteStorage and PostgresStorage
        do).
        """
        return query.select(
            self.list_deliveries(
                event_id=query.event_id, endpoint_id=query.endpoint_id, status=query.status
            )
        )

    # Work ---------------------------------------------------------------------------

    @abc.abstractmethod
    def claim(
        self,
        *,
        now: datetime,
        lease_until: datetime,
        limit: int,
        event_id: str | None = None,
        exclude_endpoints: Collection[str] = (),
    ) -> list[Claim]:
        """Lease up to ``limit`` pending deliveries due at ``now``, the tenants in turn.

        **Which ones: the tenants take turns.** The tenants that have claimable
        deliveries due at ``now`` are served round robin, in the order of their ids
        (by code point), starting after the tenant served last and wrapping round:
        the first round takes the earliest-due claimable delivery of each of the
        first ``limit`` of them; while room is left, another round takes the next of
        each tenant that still has one, and so on. Within a tenant, earliest due
        first. The claim takes as many as it can: ``limit``, or every claimable
        delivery due when there are fewer. So a tenant's backlog, however large and
        however early due, costs another tenant with due work nothing but its turns:
        with tenant A's 20,000 due and B's 100, every claim of 2 or more takes B's
        share, and claims of 1 alternate. With one tenant (the default), or one with
        due work, this is simply the earliest-due deliveries. ``event_id`` restricts
        the claim to one event's deliveries, earliest due first.

        *The tenant served last* is kept by each storage object, for the claims made
        through it: several processes sharing a store each take the tenants in turn,
        not in one shared order. A backend may also learn with a delay that a tenant
        has due work it did not schedule through that object (SQLiteStorage and
        PostgresStorage: at their next walk of the tenants with pending work, within
        about a second; MemoryStorage knows at once): until then that tenant has no
        turn, and its deliveries are claimed only with the room that the tenants in
        turn leave.

        **Leases.** Each claimed delivery's ``next_attempt_at`` becomes
        ``lease_until`` and it gets a fresh lease token; no other ``claim`` returns it
        before ``lease_until``. Deliveries to a disabled endpoint are never claimed,
        and deliveries to the endpoints in ``exclude_endpoints`` are left alone (the
        dispatcher uses this to keep a failing endpoint from occupying every worker):
        a tenant whose due work is all there has no turn. The returned :class:`Claim`
        carries the delivery as it is after the claim, its endpoint as stored now, the
        event type and the event body.
        """

    @abc.abstractmethod
    def complete(self, claim: Claim, attempt: Attempt, delivery: Delivery) -> bool:
        """Record ``attempt`` and, if ``claim.lease`` still holds, store ``delivery``.

        Atomic. Returns ``False`` when the lease was lost (expired and claimed by
        someone else): the attempt is recorded, the delivery left to its new holder;
        if the delivery is gone meanwhile (finished by that holder and pruned),
        nothing is recorded, and it still returns ``False`` rather than raising.
        When the delivery becomes final, its endpoint's ``consecutive_failures``
        goes up by one (FAILED) or back to zero (SUCCEEDED), in the same transaction.
        A delivery stored as pending gets a new lease only through ``claim``.
        """

    def complete_and_claim(
        self,
        claim: Claim,
        attempt: Attempt,
        delivery: Delivery,
        *,
        now: datetime,
        lease_until: datetime,
        exclude_endpoints: Collection[str] = (),
    ) -> tuple[bool, list[Claim]]:
        """``complete(claim, attempt, delivery)``, then ``claim(limit=1, …)``.

        A worker that has just finished an attempt records it and takes its next
        delivery in one call; returns what the two calls return. Optional: a backend
        may run both in one transaction (SQLiteStorage does: a commit less per
        delivery). If this raises, the attempt must not have been recorded: the
        caller says so, and the delivery is sent again when its lease ends. The
        default makes the two calls; a claim that fails after the completion is
        logged and returns no delivery (the dispatcher's pump claims it later).
        """
        held = self.complete(claim, attempt, delivery)
        claims = self._claim_or_log(
            _NEXT_CLAIM_FAILED,
            now=now,
            lease_until=lease_until,
            limit=1,
            exclude_endpoints=exclude_endpoints,
        )
        return held, claims

    def complete_many(
        self,
        completions: Sequence[tuple[Claim, Attempt, Delivery]],
        *,
        now: datetime,
        lease_until: datetime,
        limit: int = 0,
        exclude_endpoints: Collection[str] = (),
    ) -> tuple[list[bool], list[Claim]]:
        """``complete`` each of ``completions`` in order, then ``claim(limit=limit, …)``.

        The dispatchers' group commit: the attempts several workers finished at
        about the same time are recorded, and their next deliveries leased, in one
        call. Returns what ``complete`` returned for each, in order, and the claims
        (none when ``limit`` is 0). Recording two attempts of the same endpoint
        leaves its ``consecutive_failures`` as the two ``complete`` calls in that
        order would.

        Optional. SQLiteStorage and PostgresStorage make it one transaction (one
        commit for them all), so that it records all of them or, if it raises, none:
        the caller says so, and those deliveries are sent again when their leases
        end. The default makes the calls one by one (through ``complete_and_claim``
        for one completion and one claim, so a backend that made only that one
        transaction keeps it): a backend whose ``complete`` commits each attempt
        needs nothing more. If it raises part way, the attempts recorded before stay
        recorded, and the rest are sent again when their leases end (at-least-once
        either way). As in ``complete_and_claim``, a claim that fails after the
        completions is logged and returns no delivery.
        """
        if len(completions) == 1 and limit == 1:
            held, claims = self.complete_and_claim(
                *completions[0],
                now=now,
                lease_until=lease_until,
                exclude_endpoints=exclude_endpoints,
            )
            return [held], claims
        recorded = [self.complete(*completion) for completion in completions]
        if limit <= 0:
            return recorded, []
        claims = self._claim_or_log(
            _NEXT_CLAIM_FAILED,
            now=now,
            lease_until=lease_until,
            limit=limit,
            exclude_endpoints=exclude_endpoints,
        )
        return recorded, claims

    def release(  # noqa: B027 - optional, nothing to do by default
        self, claims: Sequence[Claim], *, due: datetime
    ) -> None:
        """Give back the leases of claimed deliveries that were not attempted: each
        whose lease is still the claim's becomes due at ``due``, unleased, for the
        claim after that to take. A delivery leased anew, or finished, since is
        left as it is.

        A dispatcher releases what a worker leased ahead and will not send after
        all (its endpoint failed meanwhile, or is not yet known to answer). Optional:
        the default does nothing, and those deliveries wait for their leases to end,
        as after a crash; nothing is lost either way.
        """

    def _claim_or_log(self, failure: str, **options: Any) -> list[Claim]:
        """``claim(**options)``, for the defaults that claim after a write of their
        own: a failure is logged (``failure``) and claims nothing, since what was
        written stands and the dispatcher's pump claims later. WouldBlockError
        propagates (a claim raises it only as the first write of a
        :meth:`without_waiting` call, having done nothing)."""
        try:
            return self.claim(**options)
        except WouldBlockError:
            raise
        except Exception:
            logger.exception(failure)
            return []

    def pending_by_endpoint(self, *, limit: int) -> list[tuple[str, int]]:
        """The endpoints with the most pending deliveries, as (endpoint id, count),
        largest first, at most ``limit`` of them (endpoints with none are left out):
        the backlog an operator watches. Leased deliveries count; so do those of
        disabled endpoints, which wait.

        It reads every pending delivery (SQLiteStorage and PostgreSQL count them in
        the database): call it at a metrics collection's pace, not per delivery. The
        default counts :meth:`list_deliveries` of pending ones.
        """
        counts: dict[str, int] = {}
        for delivery in self.list_deliveries(status=DeliveryStatus.PENDING):
            counts[delivery.endpoint_id] = counts.get(delivery.endpoint_id, 0) + 1
        return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]

    def defer_endpoint(self, endpoint_id: str, *, until: datetime) -> int:
        """Move the endpoint's unleased pending deliveries due before ``until`` to ``until``.

        The dispatcher calls this when an endpoint fails at the transport or server
        level (its backoff, endpoint-wide), so a dead endpoint's backlog waits out of
        the way of the due query instead of being skipped on every claim. Returns
        how many deliveries moved. Optional: the default moves nothing, which is
        correct but lets a dead endpoint's backlog slow claims down.
        """
        return 0

    @abc.abstractmethod
    def next_due_at(self, *, event_id: str | None = None) -> datetime | None:
        """The earliest ``next_attempt_at`` of a claimable pending delivery, or ``None``.

        Claimable means its endpoint is enabled; leased deliveries count, at their
        lease's end. ``event_id`` restricts the question to one event.
        """

    @abc.abstractmethod
    def list_attempts(self, delivery_id: str) -> list[Attempt]:
        """Every attempt of the delivery, by number. Raises UnknownDeliveryError."""

    # Retention ----------------------------------------------------------------------

    def prune(self, *, older_than: datetime, limit: int) -> int:
        """Delete one batch of old finished work; return how many rows it deleted.

        First up to ``limit`` finished deliveries (succeeded, failed or cancelled) whose
        ``updated_at`` is before ``older_than``, together with their attempts; then up
        to ``limit`` events created before ``older_than`` that have no delivery left
        (those of the deliveries just deleted, and events that never had one). A
        pending delivery is never deleted, nor an event with any delivery left,
        whatever their age. Returns the number of deliveries and events deleted
        (attempts go with their deliveries, uncounted): ``0`` means nothing is left
        to prune, so a caller repeats the call until it returns ``0``. With nothing
        else going on, a call deletes ``limit`` deliveries while that many are left.

        Each call is one short transaction, so that dispatch, claims and other
        pruners are never held up for long: prune in batches of about a thousand,
        not all at once. Choose ``older_than`` far beyond the dispatcher's lease
        (days, not seconds): a worker whose lease ran out may still record an
        attempt of a delivery that another worker has finished since, and cannot
        once that delivery is deleted. ``limit`` must be at least 1
        (InvalidInputError otherwise).

        Optional: the default raises InvalidStateError, saying that the backend does
        not support pruning; everything else keeps working without it.
        """
        raise InvalidStateError(
            f"{type(self).__name__} does not support pruning: it does not implement"
            " Storage.prune(older_than=..., limit=...)"
        )

    # Lifecycle ----------------------------------------------------------------------

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Release connections and files. Idempotent. The default does nothing."""
