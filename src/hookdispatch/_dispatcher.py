"""Dispatcher: the synchronous driver, inline or on a background thread pool.

The loop is the same in both modes: claim due deliveries from storage under a
lease, ``prepare`` the signed request, send it, ``conclude`` the outcome, and
``complete`` it in storage. Inline mode runs the loop in the caller's thread for the
event just dispatched; background mode runs it on a pump thread that hands claims
to a pool of worker threads. Retries are persisted decisions (``next_attempt_at``);
no worker ever sleeps on a failing endpoint.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from types import TracebackType
from typing import Self

from ._core import Claim, Outcome, endpoint_down
from ._dispatching import (
    DEFAULT_DISABLE_AFTER,
    DEFAULT_LEASE,
    DEFAULT_TIMEOUT,
    SYNC,
    Driver,
    delivery_query,
    endpoint_query,
)
from ._group_commit import RECENT, GroupCommit, Lingering, Ticket
from ._listing import DEFAULT_PAGE_SIZE, Page, ReplayLinks
from ._models import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_ROTATION_GRACE,
    DEFAULT_TENANT,
    Attempt,
    Delivery,
    DeliveryStatus,
    Endpoint,
    Event,
)
from ._operations import log_unrecorded, refused_target, warn_if_dropping
from ._policy import RetryPolicy
from ._reporting import AttemptReport
from ._targets import TargetPolicy
from ._types import JSON, Clock, Sleep, utc_now
from .catalog import Catalog
from .storage import Storage
from .telemetry import OpenTelemetry
from .transports import SocketTransport, Transport

__all__ = ["Dispatcher"]

logger = logging.getLogger("hookdispatch")


class Dispatcher(Driver):
    """Sends events to endpoints: inline (``workers=0``) or on a background thread pool.

    * ``storage``: where endpoints, events, deliveries and attempts live.
    * ``transport``: sends the HTTP requests; a :class:`SocketTransport` by default,
      which this dispatcher then closes.
    * ``workers``: ``0`` delivers inline: :meth:`dispatch` returns once every delivery
      of the event succeeded or used up its attempts (sleeping between retries).
      ``N > 0`` runs N worker threads: :meth:`dispatch` stores the event and returns.
    * ``retry``: the :class:`RetryPolicy` (1 attempt + 3 retries, exponential backoff).
    * ``timeout``: total seconds per attempt: connect, send, wait and read (5 s).
    * ``lease``: seconds a worker holds a claimed delivery; a crashed worker's
      deliveries are claimed again after it (60 s). Must exceed ``timeout``.
    * ``poll_interval``: how often idle workers look for work that other processes
      stored, or for retries that came due (1 s).
    * ``on_endpoint_disabled``: called with the endpoint and the reason when it is
      disabled automatically: a ``410 Gone``, or ``disable_after`` failed deliveries
      in a row (also logged as a warning). If it raises, that is logged and delivery
      goes on.
    * ``disable_after``: failed deliveries in a row (each having used up its
      attempts) that disable an endpoint: 50; ``None`` turns it off. A successful
      delivery resets the count, and so does enabling the endpoint.
    * ``max_payload_bytes``: the largest encoded event body :meth:`dispatch`
      accepts (256 KiB); a larger one is refused with InvalidEventError.
    * ``targets``: the :class:`TargetPolicy` (SSRF protection). The default refuses
      ``http://`` and non-public addresses, at registration and at every connect;
      ``TargetPolicy.local()`` allows both, for local development and tests.
    * ``catalog``: the :class:`Catalog` of the event types you send. With one,
      :meth:`dispatch` and :meth:`dispatch_many` refuse (InvalidEventError, nothing
      stored) a type it does not name and data that fails the type's schema, and
      :meth:`add_endpoint` refuses (InvalidEndpointError) a subscription to a type or
      ``prefix.*`` that names nothing in it. ``None`` (the default): any valid type.
    * ``on_attempt``: called once per recorded attempt with an
      :class:`AttemptReport` (ids, outcome, duration, the decision taken; never a
      URL, secret, header or payload), on the thread that delivered it (inline: the
      caller's). Keep it quick: the worker waits for it. If it raises, that is
      logged and delivery goes on.
    * ``telemetry``: a :class:`hookdispatch.telemetry.OpenTelemetry`, for a span per
      attempt and delivery metrics (``pip install 'hookdispatch[otel]'``); ``None``
      (the default): none.

    Testing hooks, left out of the signature in the API reference and not part of
    the stable API: ``clock`` (a function returning the current UTC time) and
    ``sleep`` (how inline mode waits for a retry), so tests can control time.
    """

    _FLAVOUR = SYNC

    def __init__(
        self,
        *,
        storage: Storage,
        transport: Transport | None = None,
        workers: int = 8,
        retry: RetryPolicy | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        lease: float = DEFAULT_LEASE,
        poll_interval: float = 1.0,
        clock: Clock = utc_now,
        sleep: Sleep = time.sleep,
        on_endpoint_disabled: Callable[[Endpoint, str], None] | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        targets: TargetPolicy | None = None,
        disable_after: int | None = DEFAULT_DISABLE_AFTER,
        catalog: Catalog | None = None,
        on_attempt: Callable[[AttemptReport], None] | None = None,
        telemetry: OpenTelemetry | None = None,
    ) -> None:
        super().__init__(locals())
        self._sleep = sleep
        self._transport: Transport = transport or SocketTransport(
            max_connections=max(workers, 1), targets=self._targets
        )
        self._cond = threading.Condition()
        self._wake = False
        # Endpoint -> when its last endpoint-wide failure's retry is due; cleared by
        # a success. What a worker releases of it is due then (see _release).
        self._backoff: dict[str, datetime] = {}
        self._group = GroupCommit(self._settle, lingering=Lingering(self._busy_slots))
        self._pool: ThreadPoolExecutor | None = None
        self._pump: threading.Thread | None = None
        if workers:
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="hookdispatch-worker")
            self._pump = threading.Thread(
                target=self._run_pump, name="hookdispatch-pump", daemon=True
            )
            self._pump.start()

    @property
    def storage(self) -> Storage:
        """The storage this dispatcher reads and writes."""
        return self._storage

    # Endpoints ----------------------------------------------------------------------

    def add_endpoint(
        self,
        url: str,
        *,
        events: Iterable[str] = ("*",),
        secret: str | None = None,
        id: str | None = None,
        tenant: str = DEFAULT_TENANT,
        description: str = "",
        headers: Mapping[str, str] | None = None,
        metadata: Mapping[str, JSON] | None = None,
    ) -> Endpoint:
        """Register a receiver of ``tenant`` (your customer account's id; omitted, the
        default tenant). ``events``: exact event types, prefixes such as ``"user.*"``
        (``user.created``, ``user.subscription.updated``), or ``"*"`` for all.

        A strong secret (``whsec_`` + 32 random bytes, base64) is generated when none
        is given; hand ``endpoint.secret`` to the receiver's owner. ``description``:
        what it is for (up to 1024 characters). ``headers``: custom headers sent with
        every request (an auth token the receiver expects, say; at most 20, values
        printable ASCII up to 4 KiB, never the signature, framing or hop-by-hop
        headers, which stay hookdispatch's). ``metadata``: your own JSON object about
        it, up to 4 KiB encoded, stored and returned as given. Raises
        InvalidEndpointError for a URL that is not http(s) or is malformed, for
        invalid headers (naming the header, never quoting its value), description or
        metadata, and, with a ``catalog``, for a pattern that names none of its types.
        """
        return self._store_endpoint(
            url,
            events,
            secret,
            id,
            self._clock(),
            tenant=tenant,
            description=description,
            headers=headers,
            metadata=metadata,
        )

    def update_endpoint(
        self,
        endpoint_id: str,
        *,
        url: str | None = None,
        events: Iterable[str] | None = None,
        description: str | None = None,
        headers: Mapping[str, str] | None = None,
        metadata: Mapping[str, JSON] | None = None,
    ) -> Endpoint:
        """Change an endpoint's URL, subscriptions, description, headers or metadata:
        only the ones given (``None`` leaves one as it is; ``headers={}`` drops every
        custom header). Returns the endpoint as stored.

        Each is checked as :meth:`add_endpoint` checks it: a new URL against the
        target policy too, new ``events`` against the ``catalog``, if any; nothing
        changes unless all pass. ``headers`` and ``metadata`` replace the old ones
        whole. The tenant and the secret are not changed here (see
        :meth:`rotate_secret`). Deliveries already claimed go to the old URL; the
        next attempts use the new one. Raises UnknownEndpointError and
        InvalidEndpointError.
        """
        return self._update_endpoint(
            endpoint_id,
            url=url,
            events=events,
            description=description,
            headers=headers,
            metadata=metadata,
        )

    def endpoints(
        self, *, tenant: str | None = None, after: str | None = None, limit: int = DEFAULT_PAGE_SIZE
    ) -> Page[Endpoint]:
        """One page of endpoints, enabled or not (deleted ones never): ``tenant``'s, or
        every tenant's for ``None``, oldest first; ``limit`` (100 by default, at most
        1,000) and ``after`` page as in :meth:`deliveries`."""
        return self._page_endpoints(endpoint_query(tenant=tenant, after=after, limit=limit))

    def get_endpoint(self, endpoint_id: str, *, tenant: str | None = None) -> Endpoint:
        """The endpoint with this id. Raises UnknownEndpointError, also when ``tenant``
        is given and the endpoint is another tenant's."""
        return self._owned_endpoint(endpoint_id, tenant)

    def delete_endpoint(self, endpoint_id: str, *, tenant: str | None = None) -> int:
        """Delete an endpoint for good and cancel its unfinished deliveries; returns
        how many were cancelled.

        The endpoint stops receiving at once: its pending deliveries become
        ``cancelled`` (an attempt already under way finishes and is recorded, but
        nothing is retried), and events dispatched afterwards skip it. Its deliveries
        and their attempts stay listed, by its id, until pruned; its secrets are
        erased. Other endpoints are untouched. To stop for a while instead, use
        :meth:`disable_endpoint`. Raises UnknownEndpointError (also for another
        ``tenant``'s endpoint) and InvalidStateError for a storage that cannot delete.
        """
        return self._delete_endpoint(endpoint_id, tenant)

    def disable_endpoint(self, endpoint_id: str) -> Endpoint:
        """Stop delivering to an endpoint. Its pending deliveries wait until it is enabled;
        events dispatched meanwhile are not sent to it."""
        return self._set_enabled(endpoint_id, enabled=False)

    def enable_endpoint(self, endpoint_id: str) -> Endpoint:
        """Resume an endpoint; its waiting deliveries are attempted as scheduled."""
        return self._set_enabled(endpoint_id, enabled=True)

    def rotate_secret(
        self,
        endpoint_id: str,
        *,
        grace: float = DEFAULT_ROTATION_GRACE,
        secret: str | None = None,
    ) -> Endpoint:
        """Give an endpoint a new secret (generated, unless ``secret`` is given) and
        keep the current one signing beside it for ``grace`` seconds (default 24 hours),
        so the receiver can switch at its own pace; returns the endpoint, whose
        ``secret`` is the new one to hand to the receiver's owner.

        During the overlap every attempt (retries included) carries a Standard Webhooks
        signature for each secret, and ``X-Webhook-Signature`` stays the previous
        secret's until the overlap ends. ``grace=0``: no overlap, the old secret stops
        at once (for a leaked secret). End an overlap early with :meth:`end_rotation`.
        Raises UnknownEndpointError, InvalidInputError for a grace that is not 0 to 90
        days in seconds, InvalidEndpointError for an invalid ``secret``, and
        InvalidStateError while an earlier rotation's overlap is still live (unless
        ``grace=0``).
        """
        return self._rotate_secret(endpoint_id, grace, secret)

    def end_rotation(self, endpoint_id: str) -> Endpoint:
        """End an endpoint's rotation overlap now: its previous secret stops signing,
        only the current one signs from the next attempt on. Nothing to end is fine.
        Raises UnknownEndpointError."""
        return self._end_rotation(endpoint_id)

    def _set_enabled(self, endpoint_id: str, *, enabled: bool) -> Endpoint:
        endpoint = self._store_enabled(endpoint_id, enabled)
        self._notify()
        return endpoint

    # Events -------------------------------------------------------------------------

    def dispatch(
        self,
        event_type: str,
        data: JSON,
        *,
        id: str | None = None,
        tenant: str = DEFAULT_TENANT,
        transaction: object | None = None,
    ) -> Event:
        """Send an event to every enabled endpoint of ``tenant`` subscribed to ``event_type``.

        Only that tenant's endpoints get it (omitted: the default tenant's), looked up
        through the storage's index, whatever the number of endpoints.

        ``data`` becomes the ``data`` field of the JSON body and must be JSON (no NaN).
        ``id`` makes the call idempotent: dispatching an id that is already stored
        returns the stored event and sends nothing new. The event and its deliveries
        are stored before this returns (inline mode: after delivering them too).
        Raises InvalidEventError for bad input (with a ``catalog``: a type it does not
        name, or data that fails the type's schema), storing nothing, and
        DispatcherClosedError after :meth:`close`.

        ``transaction`` is your own open database connection (the transactional
        outbox): the event is written through it and sent only once you commit; a
        rollback means it is never sent. Background mode only; the workers see the
        event within ``poll_interval`` of your commit.
        """
        self._check_dispatch(transaction)
        now = self._clock()
        if transaction is not None:
            event, stored = self._store_event(
                event_type, data, id, now, tenant=tenant, transaction=transaction
            )
            if stored:
                self._dispatched([event.id])
                self._after_store(event.id)
            return event
        if self._capacity == 0:
            event, stored, claims = self._store_inline(event_type, data, id, now, tenant)
            if stored:
                self._dispatched([event.id])
                self._deliver_inline(event.id, claims)
            return event
        # Background mode: the deliveries that free workers can start now are leased
        # in the same storage call and handed to them, with no poll and no second
        # transaction (see Storage.add_event_and_claim).
        event = self._checked_event(event_type, data, id, now, tenant)
        with self._cond:
            held, held_back = self._lease_slots()
        try:
            event, stored, claims = self._store_and_lease(event, now, held, held_back)
        except BaseException:
            with self._cond:
                wake = self._give_back(held, [])
            if wake:
                self._notify()
            raise
        with self._cond:
            wake = self._give_back(held, claims)
        if stored:
            self._dispatched([event.id])
            assert self._pool is not None
            for claim in claims:
                self._pool.submit(self._work, claim)
        if wake:
            self._notify()  # what is left of the event's deliveries: the pump's
        return event

    def dispatch_many(
        self,
        items: Iterable[tuple[str, JSON] | tuple[str, JSON, str | None]],
        *,
        tenant: str = DEFAULT_TENANT,
    ) -> list[Event]:
        """Dispatch a batch of ``tenant``'s events: ``(event_type, data)`` or
        ``(event_type, data, id)`` items.

        Every item is validated before any is stored (one bad item raises
        InvalidEventError naming its position, and nothing is stored); the batch is
        written in one storage call, far cheaper per event than ``dispatch`` in a
        loop. Returns the events in order (for a known id, the stored one). Inline
        mode then delivers them all before returning. Python's cyclic garbage
        collector is paused while the batch is built and stored (every object it
        makes lives until then), unless it is off already.
        """
        self._check_open()
        results = self._store_events(items, self._clock(), tenant=tenant)
        self._dispatched(event.id for event, stored in results if stored)
        if self._capacity == 0:
            for event, stored in results:
                if stored:
                    self._deliver_inline(event.id)
        else:
            self._notify()
        return self._stored_events(results)

    def send_test(
        self,
        endpoint_id: str,
        event_type: str,
        data: JSON | None = None,
        *,
        tenant: str | None = None,
    ) -> Delivery:
        """Send one event to one endpoint only, whatever it subscribes to: a settings
        page's "send a test event". Returns its delivery: finished in inline mode,
        pending in background mode.

        ``data`` defaults to the ``catalog``'s example of the type (``{}`` without
        one). The event is checked, stored, signed and attempted like any other (it
        is in the delivery listings, and can be redelivered), but fans out to no other
        endpoint. Raises UnknownEndpointError (also for another ``tenant``'s),
        InvalidStateError for a disabled endpoint, InvalidEventError as ``dispatch``.
        """
        self._check_open()
        delivery = self._store_test(endpoint_id, event_type, data, tenant)
        self._dispatched([delivery.event_id])
        self._after_store(delivery.event_id)
        return self._storage.get_delivery(delivery.id)

    def get_event(self, event_id: str, *, tenant: str | None = None) -> Event:
        """The event with this id. Raises UnknownEventError, also when ``tenant`` is
        given and the event is another tenant's."""
        return self._owned_event(event_id, tenant)

    def deliveries(
        self,
        *,
        tenant: str | None = None,
        event_id: str | None = None,
        endpoint_id: str | None = None,
        event_type: str | None = None,
        status: DeliveryStatus | str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        newest_first: bool = False,
    ) -> Page[Delivery]:
        """One page of deliveries: those matching every filter given, oldest first
        (by ``created_at``, then id) or, with ``newest_first``, newest first.

        Filters: ``tenant``, ``event_id``, ``endpoint_id``, ``event_type``,
        ``status``, and ``since`` / ``until`` on ``created_at`` (timezone-aware;
        ``since`` included, ``until`` not). At most ``limit`` rows (100 by default, 1
        to 1,000); the page's ``next_cursor`` is ``None`` on the last page, otherwise
        pass it as ``after=`` with the same filters for the next one. Paging is by
        keyset, so a page costs the same deep into millions of deliveries, and
        deliveries created or pruned meanwhile never shift it. Raises
        InvalidInputError for a bad argument or a cursor not from a page.
        """
        query = delivery_query(
            tenant=tenant,
            event_id=event_id,
            endpoint_id=endpoint_id,
            event_type=event_type,
            status=status,
            since=since,
            until=until,
            after=after,
            limit=limit,
            newest_first=newest_first,
        )
        return self._page_deliveries(query)

    def get_delivery(self, delivery_id: str, *, tenant: str | None = None) -> Delivery:
        """The delivery with this id. Raises UnknownDeliveryError, also when ``tenant``
        is given and the delivery is another tenant's."""
        return self._owned_delivery(delivery_id, tenant)

    def attempts(self, delivery_id: str, *, tenant: str | None = None) -> list[Attempt]:
        """Every attempt of a delivery, in order (a handful: the retry policy bounds
        them). Raises UnknownDeliveryError, also for another ``tenant``'s delivery."""
        return self._owned_attempts(delivery_id, tenant)

    def replay_links(self, delivery_id: str, *, tenant: str | None = None) -> ReplayLinks:
        """Which delivery this one replays and which replays it (:class:`ReplayLinks`):
        a failed delivery that was replayed is not an open failure any more. Raises
        UnknownDeliveryError, also for another ``tenant``'s delivery."""
        return self._replay_links(delivery_id, tenant)

    def redeliver(self, delivery_id: str) -> Delivery:
        """Send a finished delivery's event to its endpoint again, as a new delivery.

        The new delivery gets a full set of attempts; the old one keeps its history.
        Inline mode returns it finished; background mode returns it pending. Raises
        InvalidStateError for a delivery that is still pending.
        """
        self._check_open()
        fresh = self._store_redelivery(delivery_id, self._clock())
        self._dispatched([fresh.event_id])
        self._after_store(fresh.event_id)
        return self._storage.get_delivery(fresh.id)

    def prune(self, *, older_than: timedelta | datetime, batch_size: int = 1000) -> int:
        """Delete finished deliveries (succeeded or failed) last updated before
        ``older_than`` (an age, or a time), with their attempts, and the events left
        without deliveries. Pending work is never deleted, however old.

        Works in batches of ``batch_size``, one short storage transaction each, so
        dispatching goes on meanwhile. Returns how many deliveries and events were
        deleted. Raises InvalidStateError for a storage that cannot prune.
        """
        cutoff = self._prune_cutoff(older_than)
        total = 0
        while deleted := self._prune_batch(cutoff, batch_size):
            total += deleted
        return total

    def _after_store(self, event_id: str) -> None:
        if self._capacity == 0:
            self._deliver_inline(event_id)
        else:
            self._notify()

    # The delivery loop --------------------------------------------------------------

    def _attempt(self, claim: Claim) -> None:
        """Send one claimed delivery and record what happened."""
        self._record(claim, *self._send(claim))

    def _send(self, claim: Claim) -> tuple[Attempt, Delivery]:
        """Send one claimed delivery: the attempt's record and the delivery's next state."""
        request, began = self._begin(claim)
        try:
            outcome: Outcome = refused_target(claim, self._targets) or self._transport.send(request)
        except Exception as exc:
            outcome = self._transport_raised(claim, exc)
        return self._finish(claim, outcome, began)

    def _record(self, claim: Claim, attempt: Attempt, delivery: Delivery) -> None:
        self._report(claim, attempt, delivery, self._store_attempt(claim, attempt, delivery))

    def _deliver_inline(self, event_id: str, claims: list[Claim] | None = None) -> None:
        """Attempt the event's deliveries until none is left pending (see
        :meth:`_inline_again`), starting with ``claims`` when the store leased some."""
        while True:
            if claims is None:
                claims = self._claim_inline(self._clock(), event_id)
            for claim in claims:  # one at a time: see inline_claim_limit
                self._attempt(claim)
            if not self._inline_again(claims):
                pause = self._pause(self._storage.next_due_at(event_id=event_id))
                if pause is None:
                    return
                self._sleep(pause)
            claims = None

    def _run_pump(self) -> None:
        """Background mode: claim due work while worker slots are free; else wait."""
        assert self._pool is not None
        while True:
            with self._cond:
                while self._slots.free <= 0 and not self._stopping:
                    self._pump_needs_slots = True
                    self._cond.wait()
                self._pump_needs_slots = False
                if self._stopping:
                    return
                limit = self._slots.free
                held_back = self._slots.held_back()
                self._wake = False
                self._slots.claiming += 1
            # The claim runs outside the lock, with what was read under it.
            claims = self._claim_for_pump(self._clock(), limit, held_back)
            with self._cond:
                self._slots.claiming -= 1
                self._slots.started(claims)
                self._cond.notify_all()
            for claim in claims:
                self._pool.submit(self._work, claim)
            if not claims:
                self._idle()

    def _idle(self) -> None:
        """Wait until woken (``_wake``: new work, a slot an endpoint may fill), due
        work's time, or ``poll_interval``. The condition is shared (drain(), a
        worker's free slot): its other notifications are not a reason to claim."""
        give_up = time.monotonic() + self._idle_wait(self._next_due())
        with self._cond:
            while not self._wake and not self._stopping:
                wait = give_up - time.monotonic()
                if wait <= 0:
                    return
                self._cond.wait(wait)

    def _work(self, claim: Claim | None) -> None:
        """Attempt a claim; then, while work is due, the next ones, leased in this thread.

        Going back to the pump after every attempt would cost two thread switches
        per delivery; the pump is for starting workers, not for feeding busy ones.
        After an attempt the worker hands a ticket to the group commit (see
        :mod:`._group_commit`): its success, to record, and leases on its next
        deliveries, in one storage call shared with the workers finishing at the
        same time (one transaction for the group on SQLite and PostgreSQL). While
        its attempts are fast it holds up to :data:`~._dispatching.AHEAD` leased
        beyond the next (see :meth:`_wanted`) and sends them while its tickets are
        stored; else it waits for each ticket before its next attempt. It holds one
        worker slot throughout, whatever it holds ahead.
        """
        ahead: deque[Claim] = deque()  # leased for this thread, not yet attempted
        handed: deque[Ticket] = deque()  # handed in, results not yet taken
        owed = 0  # next deliveries the handed tickets ask for
        while claim is not None:
            ticket, claim, dropped = self._attempt_and_hand_in(claim, ahead, handed, owed)
            if dropped:
                self._release(dropped)
            if ticket is not None:
                handed.append(ticket)
                if ticket.held_back is not None:
                    owed += ticket.want
                if self._grouped:  # stored with what other workers have
                    self._group.submit(ticket)
                else:
                    self._settle([ticket])  # (its claims counted held when taken)
            while claim is None and handed:
                ticket = handed.popleft()
                if ticket.held_back is not None:
                    owed -= ticket.want
                # Fresh: the ticket of the attempt just ended, and waited for: its
                # first claim goes out at once, as when a worker leases only its next.
                fresh = not handed and (not self._grouped or not ticket.done)
                if self._grouped:
                    self._group.wait(ticket)
                claims, report = self._stored_ticket(ticket)
                if report is not None:
                    self._emit(report)  # the ticket still counts: drain() waits for this
                with self._cond:
                    claim, dropped = self._take_claims(
                        claims, ahead, waiting=bool(handed), fresh=fresh
                    )
                if dropped:
                    self._release(dropped)

    def _attempt_and_hand_in(
        self, claim: Claim, ahead: deque[Claim], handed: deque[Ticket], owed: int
    ) -> tuple[Ticket | None, Claim | None, list[Claim]]:
        """Attempt ``claim`` and record a failure now. Then, under the lock: the
        ticket to hand in (a success to record, and leases on as many next
        deliveries as :meth:`_wanted` says, given what the worker holds and is
        owed), counted until its result is taken; and the worker's next delivery
        from ``ahead``, if any (see :meth:`_take_ahead`), else its slot held while it
        waits for its tickets, or given back when it has none. The ticket (None:
        nothing to store), the next delivery, and what to release."""
        success: tuple[Attempt, Delivery] | None = None
        backoff = None  # when an endpoint-wide failure lets the endpoint be tried again
        try:
            sent = self._send(claim)
            if sent[0].succeeded:
                success = sent  # recorded by the ticket
            else:
                self._record(claim, *sent)
                if endpoint_down(sent[0]):  # (recorded: its other deliveries deferred)
                    backoff = sent[1].next_attempt_at
        except Exception:
            log_unrecorded(claim)
        dropped: list[Claim] = []  # (empty unless it holds some ahead)
        with self._cond:
            slots = self._slots
            if backoff is not None:
                self._backoff[claim.endpoint.id] = backoff
            elif success is not None and self._backoff:
                self._backoff.pop(claim.endpoint.id, None)
            if slots.finished(claim, succeeded=success is not None):
                # The endpoint may now fill more slots than were claimed for it:
                # the pump hands them out (a worker only claims its own next).
                self._wake = True
                self._cond.notify_all()
            took = success[0].duration if success is not None else RECENT
            want = self._wanted(len(ahead) + owed, succeeded=success is not None, took=took)
            held_back = slots.held_back() if want else None
            storing = success is not None or held_back is not None
            if storing:
                slots.handed_in()
            following = self._take_ahead(ahead, dropped) if ahead else None
            if following is None:
                if storing or handed:
                    slots.reserve()  # this worker's slot, while it waits for its tickets
                else:
                    self._cond.notify_all()  # a slot is free: the pump may need it
        ticket = self._ticket(claim, success, held_back, want=want) if storing else None
        if ticket is not None:
            ticket.detached = following is not None or bool(handed)
        return ticket, following, dropped

    def _take_ahead(self, ahead: deque[Claim], dropped: list[Claim]) -> Claim | None:
        """Under the lock: the next delivery held for this worker, now attempted in
        its slot. Those it should no longer send go to ``dropped``, still counted
        held until :meth:`_release` gives them back: of an endpoint that failed
        since, or not yet seen to succeed and past its share (see
        :meth:`WorkerSlots.may_send_held`: so a receiver that turns bad, or a new one
        that hangs, holds workers as without leasing ahead), and any whose lease
        would not outlast two attempts."""
        slots = self._slots
        while ahead:
            claim = ahead.popleft()
            lease_end = claim.delivery.next_attempt_at
            if (
                slots.may_send_held(claim.endpoint.id)
                and lease_end is not None
                and (lease_end - self._clock()).total_seconds() > 2 * self._timeout
            ):
                slots.take_ahead(claim)
                return claim
            dropped.append(claim)
        return None

    def _take_claims(
        self, claims: list[Claim], ahead: deque[Claim], *, waiting: bool, fresh: bool
    ) -> tuple[Claim | None, list[Claim]]:
        """Under the lock, a ticket's result taken: its claims, held since its
        group's call (see :meth:`_claims_handed_out`), join those held ahead. The first
        is attempted now, in the slot the worker held while it waited, if the
        ticket is ``fresh``; else the next that is still fit to send (see
        :meth:`_take_ahead`). With none, the slot is kept while the worker is
        ``waiting`` for more tickets, else given back. The claim to attempt, and
        what to release."""
        slots = self._slots
        slots.taken_back()
        slots.release()  # the slot it held while it waited: taken again below, or kept
        grouped = self._grouped  # (else stored by this thread: counted held only now)
        if fresh and claims:  # (nothing was held ahead while it waited)
            first: Claim | None = claims[0]
            if grouped:
                slots.take_ahead(claims[0])
            else:
                slots.start(claims[0])
            if len(claims) > 1:
                if not grouped:
                    for claim in claims[1:]:
                        slots.lease_ahead(claim)
                ahead.extend(claims[1:])
            return first, []
        if not grouped:
            for claim in claims:
                slots.lease_ahead(claim)
        ahead.extend(claims)
        dropped: list[Claim] = []
        first = self._take_ahead(ahead, dropped) if ahead else None
        if first is None:
            if waiting:
                slots.reserve()
            elif not dropped:
                self._cond.notify_all()  # a slot is free: the pump may need it
        return first, dropped

    def _claims_handed_out(self, tickets: list[Ticket]) -> None:
        """A group's claims, counted held for their workers from the group's call
        on, before its tickets are marked done (see
        :meth:`WorkerSlots.lease_ahead`): holds and drain() see them while they
        wait for their workers to take them. (A ticket stored by its own worker, with
        a storage that never blocks, is counted when taken: one lock fewer.)"""
        if not self._grouped:
            return
        with self._cond:
            for ticket in tickets:
                for claim in ticket.claims:
                    self._slots.lease_ahead(claim)

    def _release(self, claims: list[Claim]) -> None:
        """Storage work: give back leases held for this worker that it will not
        attempt (see :meth:`Storage.release`): due now, or, for an endpoint whose
        last failure here was endpoint-wide, when that failure's retry is (as
        ``defer_endpoint`` moves its other deliveries). They count as held until
        then, so drain() cannot find the dispatcher idle before they are due. A
        failure is logged: they wait for their leases."""
        now = self._clock()
        with self._cond:
            dues = [max(now, self._backoff.get(c.endpoint.id, now)) for c in claims]
        try:
            for due in sorted(set(dues)):
                self._storage.release(
                    [c for c, d in zip(claims, dues, strict=True) if d == due], due=due
                )
        except Exception:
            logger.exception(
                "releasing %d leased deliveries failed; they are sent when their leases end",
                len(claims),
            )
        with self._cond:
            for claim in claims:
                self._slots.drop_ahead(claim)
            if now in dues:
                self._wake = True  # due now: the pump claims them if a slot is free
            self._cond.notify_all()

    def _busy_slots(self) -> int:
        with self._cond:  # (the group's lock, then this one: never the other way)
            return super()._busy_slots()

    def _give_back(self, held: int, claims: list[Claim]) -> bool:
        """:meth:`_return_slots`, and a wake for work another dispatch stored while
        these slots were held: its ``_notify`` found none free, so woke nobody."""
        wake = self._return_slots(held, claims)
        return wake or (held > len(claims) and self._wake)

    def _notify(self) -> None:
        with self._cond:
            self._wake = True
            # With every slot busy the pump has nothing to start; the workers claim
            # the new work as they finish. Waking it anyway costs a thread switch.
            if self._slots.free > 0:
                self._cond.notify_all()

    # Lifecycle ----------------------------------------------------------------------

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until no delivery is due now and none is in flight.

        Retries scheduled for later do not count. Returns ``False`` if ``timeout``
        seconds passed first. Inline mode has nothing to wait for.
        """
        if self._capacity == 0:
            return True
        give_up = self._give_up_at(timeout)
        while True:
            # Storage first, then the in-memory counters: a claim in progress is
            # seen by one or the other, never by neither.
            due = self._storage.next_due_at()
            with self._cond:
                if self._drained(due):
                    return True
                if self._pump is None or not self._pump.is_alive():
                    return False
                wait = self._drain_wait(give_up)
                if wait <= 0:
                    return False
                self._cond.wait(wait)

    def close(self, timeout: float | None = None) -> None:
        """Stop taking events, deliver what is due (up to ``timeout`` s), and stop.

        Attempts in flight always finish (each is bounded by the attempt timeout).
        Retries scheduled for later stay in storage for the next Dispatcher; with
        MemoryStorage they are lost, and a ResourceWarning says how many. The storage
        itself stays open: it is yours to close. Idempotent.
        """
        if self._closed:
            return
        self._mark_closed(drained=self.drain(timeout))
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._pump is not None:
            self._pump.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._owns_transport:
            self._transport.close()
        warn_if_dropping(self._storage)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
