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
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from types import TracebackType
from typing import Self

from ._core import Claim, Outcome, conclude, prepare
from ._models import DEFAULT_MAX_PAYLOAD_BYTES, Attempt, Delivery, DeliveryStatus, Endpoint, Event
from ._operations import (
    DEFAULT_DISABLE_AFTER,
    check_options,
    check_transaction_mode,
    log_attempt,
    log_unrecorded,
    parse_status,
    record_attempt,
    record_success_and_claim,
    refused_target,
    set_endpoint_enabled,
    store_endpoint,
    store_event,
    store_events,
    store_redelivery,
    unexpected_failure,
    warn_if_dropping,
)
from ._policy import RetryPolicy
from ._slots import WorkerSlots
from ._targets import TargetPolicy, default_targets
from ._types import JSON, Clock, Sleep, utc_now
from .exceptions import DispatcherClosedError, InvalidInputError
from .storage import Storage
from .transports import SocketTransport, Transport

__all__ = ["Dispatcher"]

logger = logging.getLogger("hookdispatch")

DEFAULT_TIMEOUT = 5.0
DEFAULT_LEASE = 60.0


class Dispatcher:
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
    * ``clock`` and ``sleep``: injected time, for tests.
    * ``on_endpoint_disabled``: called with the endpoint and the reason when it is
      disabled automatically: a ``410 Gone``, or ``disable_after`` failed deliveries
      in a row (also logged as a warning).
    * ``disable_after``: failed deliveries in a row (each having used up its
      attempts) that disable an endpoint: 50; ``None`` turns it off. A successful
      delivery resets the count, and so does enabling the endpoint.
    * ``max_payload_bytes``: the largest encoded event body :meth:`dispatch`
      accepts (256 KiB); a larger one is refused with InvalidEventError.
    * ``targets``: the :class:`TargetPolicy` (SSRF protection). The default refuses
      ``http://`` and non-public addresses, at registration and at every connect;
      ``TargetPolicy.local()`` allows both, for local development and tests.
    """

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
    ) -> None:
        check_options(storage=storage, timeout=timeout, lease=lease, poll_interval=poll_interval)
        if workers < 0:
            raise InvalidInputError("workers must be 0 (inline) or a positive number of threads")
        if transport is not None and not isinstance(transport, Transport):
            raise InvalidInputError(
                "Dispatcher needs a Transport (send() and close()), such as SocketTransport();"
                " AsyncDispatcher takes the async ones"
            )
        self._storage = storage
        self._owns_transport = transport is None
        self._targets = targets or default_targets()
        self._transport: Transport = transport or SocketTransport(
            max_connections=max(workers, 1), targets=self._targets
        )
        self._workers = workers
        self._retry = retry or RetryPolicy()
        self._timeout = timeout
        self._lease = timedelta(seconds=lease)
        self._poll_interval = poll_interval
        self._clock = clock
        self._sleep = sleep
        self._on_endpoint_disabled = on_endpoint_disabled
        self._disable_after = disable_after
        self._max_payload_bytes = max_payload_bytes
        self._closed = False
        self._cond = threading.Condition()
        self._slots = WorkerSlots(workers)
        self._wake = False
        self._stopping = False
        self._pool: ThreadPoolExecutor | None = None
        self._pump: threading.Thread | None = None
        if workers:
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="hookdispatch-worker")
            self._pump = threading.Thread(
                target=self._run_pump, name="hookdispatch-pump", daemon=True
            )
            self._pump.start()

    def __repr__(self) -> str:
        mode = "inline" if self._workers == 0 else f"workers={self._workers}"
        state = " closed" if self._closed else ""
        return f"<Dispatcher {mode} storage={self._storage!r}{state}>"

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
    ) -> Endpoint:
        """Register a receiver. ``events``: exact event types, or ``"*"`` for all.

        A strong secret (``whsec_`` + 32 random bytes, base64) is generated when none
        is given; hand ``endpoint.secret`` to the receiver's owner. Raises
        InvalidEndpointError for a URL that is not http(s) or is malformed.
        """
        return store_endpoint(
            self._storage,
            url,
            events=events,
            secret=secret,
            id=id,
            now=self._clock(),
            targets=self._targets,
        )

    def endpoints(self) -> list[Endpoint]:
        """Every registered endpoint, enabled or not."""
        return self._storage.list_endpoints()

    def get_endpoint(self, endpoint_id: str) -> Endpoint:
        """The endpoint with this id. Raises UnknownEndpointError."""
        return self._storage.get_endpoint(endpoint_id)

    def disable_endpoint(self, endpoint_id: str) -> Endpoint:
        """Stop delivering to an endpoint. Its pending deliveries wait until it is enabled;
        events dispatched meanwhile are not sent to it."""
        return self._set_enabled(endpoint_id, enabled=False)

    def enable_endpoint(self, endpoint_id: str) -> Endpoint:
        """Resume an endpoint; its waiting deliveries are attempted as scheduled."""
        return self._set_enabled(endpoint_id, enabled=True)

    def _set_enabled(self, endpoint_id: str, *, enabled: bool) -> Endpoint:
        endpoint = set_endpoint_enabled(self._storage, endpoint_id, enabled=enabled)
        self._notify()
        return endpoint

    # Events -------------------------------------------------------------------------

    def dispatch(
        self,
        event_type: str,
        data: JSON,
        *,
        id: str | None = None,
        transaction: object | None = None,
    ) -> Event:
        """Send an event to every enabled endpoint subscribed to ``event_type``.

        ``data`` becomes the ``data`` field of the JSON body and must be JSON (no NaN).
        ``id`` makes the call idempotent: dispatching an id that is already stored
        returns the stored event and sends nothing new. The event and its deliveries
        are stored before this returns (inline mode: after delivering them too).
        Raises InvalidEventError for bad input, storing nothing, and
        DispatcherClosedError after :meth:`close`.

        ``transaction`` is your own open database connection (the transactional
        outbox): the event is written through it and sent only once you commit; a
        rollback means it is never sent. Background mode only; the workers see the
        event within ``poll_interval`` of your commit.
        """
        self._check_open()
        if transaction is not None:
            check_transaction_mode(inline=self._workers == 0)
        event, stored = store_event(
            self._storage,
            event_type,
            data,
            id=id,
            now=self._clock(),
            transaction=transaction,
            max_bytes=self._max_payload_bytes,
        )
        if not stored:
            return event
        if self._workers == 0:
            self._deliver_inline(event.id)
        else:
            self._notify()
        return event

    def dispatch_many(
        self, items: Iterable[tuple[str, JSON] | tuple[str, JSON, str | None]]
    ) -> list[Event]:
        """Dispatch a batch: ``(event_type, data)`` or ``(event_type, data, id)`` items.

        Every item is validated before any is stored (one bad item raises
        InvalidEventError naming its position, and nothing is stored); the batch is
        written in one storage call, far cheaper per event than ``dispatch`` in a
        loop. Returns the events in order (for a known id, the stored one). Inline
        mode then delivers them all before returning.
        """
        self._check_open()
        results = store_events(
            self._storage, items, now=self._clock(), max_bytes=self._max_payload_bytes
        )
        if self._workers == 0:
            for event, stored in results:
                if stored:
                    self._deliver_inline(event.id)
        else:
            self._notify()
        return [event if stored else self._storage.get_event(event.id) for event, stored in results]

    def get_event(self, event_id: str) -> Event:
        """The event with this id. Raises UnknownEventError."""
        return self._storage.get_event(event_id)

    def deliveries(
        self,
        *,
        event_id: str | None = None,
        endpoint_id: str | None = None,
        status: DeliveryStatus | str | None = None,
        limit: int | None = None,
    ) -> list[Delivery]:
        """Deliveries matching every given filter, oldest first."""
        return self._storage.list_deliveries(
            event_id=event_id, endpoint_id=endpoint_id, status=parse_status(status), limit=limit
        )

    def get_delivery(self, delivery_id: str) -> Delivery:
        """The delivery with this id. Raises UnknownDeliveryError."""
        return self._storage.get_delivery(delivery_id)

    def attempts(self, delivery_id: str) -> list[Attempt]:
        """Every attempt of a delivery, in order. Raises UnknownDeliveryError."""
        return self._storage.list_attempts(delivery_id)

    def redeliver(self, delivery_id: str) -> Delivery:
        """Send a finished delivery's event to its endpoint again, as a new delivery.

        The new delivery gets a full set of attempts; the old one keeps its history.
        Inline mode returns it finished; background mode returns it pending. Raises
        InvalidStateError for a delivery that is still pending.
        """
        self._check_open()
        fresh = store_redelivery(self._storage, delivery_id, now=self._clock())
        if self._workers == 0:
            self._deliver_inline(fresh.event_id)
        else:
            self._notify()
        return self._storage.get_delivery(fresh.id)

    # The delivery loop --------------------------------------------------------------

    def _attempt(self, claim: Claim) -> bool:
        """Send one claimed delivery and record what happened. True if it succeeded."""
        attempt, delivery = self._send(claim)
        self._record(claim, attempt, delivery)
        return attempt.succeeded

    def _send(self, claim: Claim) -> tuple[Attempt, Delivery]:
        """Send one claimed delivery: the attempt's record and the delivery's next state."""
        started_at = self._clock()
        request = prepare(claim, now=started_at, timeout=self._timeout, targets=self._targets)
        began = time.perf_counter()
        try:
            outcome: Outcome = refused_target(claim, self._targets) or self._transport.send(request)
        except Exception as exc:
            logger.exception("transport %r raised instead of returning an outcome", self._transport)
            outcome = unexpected_failure(exc)
        duration = time.perf_counter() - began
        attempt, delivery = conclude(
            claim,
            outcome,
            started_at=started_at,
            duration=duration,
            now=self._clock(),
            policy=self._retry,
        )
        log_attempt(claim, attempt, delivery)
        return attempt, delivery

    def _record(self, claim: Claim, attempt: Attempt, delivery: Delivery) -> None:
        _, disabled, reason = record_attempt(
            self._storage, claim, attempt, delivery, disable_after=self._disable_after
        )
        if disabled is not None and self._on_endpoint_disabled is not None:
            self._on_endpoint_disabled(disabled, reason)

    def _deliver_inline(self, event_id: str) -> None:
        # One claim at a time, so no lease outlives the attempt it covers.
        while True:
            now = self._clock()
            claims = self._storage.claim(
                now=now, lease_until=now + self._lease, limit=1, event_id=event_id
            )
            if claims:
                self._attempt(claims[0])
                continue
            due = self._storage.next_due_at(event_id=event_id)
            if due is None:
                return
            self._sleep(max(0.0, (due - self._clock()).total_seconds()))

    def _run_pump(self) -> None:
        """Background mode: claim due work while worker slots are free; else wait."""
        assert self._pool is not None
        while True:
            with self._cond:
                while self._slots.free <= 0 and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                limit = self._slots.free
                held_back = self._slots.held_back()
                self._wake = False
                self._slots.claiming += 1
            try:
                claims = self._claim(limit, held_back)
            except Exception:
                logger.exception("claiming due deliveries failed; trying again shortly")
                claims = []
            with self._cond:
                self._slots.claiming -= 1
                self._slots.started(claims)
                self._cond.notify_all()
            for claim in claims:
                self._pool.submit(self._work, claim)
            if claims:
                continue
            self._idle()

    def _claim(self, limit: int, held_back: set[str]) -> list[Claim]:
        """Lease up to ``limit`` due deliveries, skipping the held-back endpoints
        (read under the lock by the caller; the claim itself runs outside it)."""
        now = self._clock()
        return self._storage.claim(
            now=now, lease_until=now + self._lease, limit=limit, exclude_endpoints=held_back
        )

    def _idle(self) -> None:
        try:
            due = self._storage.next_due_at()
        except Exception:
            logger.exception("reading the next due time failed")
            due = None
        wait = self._poll_interval
        if due is not None and due > self._clock():
            wait = min(wait, (due - self._clock()).total_seconds())
        # Work due now that the claim skipped belongs to held-back endpoints: a
        # finishing worker wakes us.
        with self._cond:
            if not self._wake and not self._stopping and wait > 0:
                self._cond.wait(wait)

    def _work(self, claim: Claim | None) -> None:
        """Attempt a claim; then, while work is due, claim the next one in this thread.

        Going back to the pump after every attempt would cost two thread switches
        per delivery; the pump is for starting workers, not for feeding busy ones.
        After a success, recording it and claiming the next delivery take one
        storage call (``complete_and_claim``: one transaction on SQLite).
        """
        while claim is not None:
            endpoint_id = claim.endpoint.id
            success: tuple[Attempt, Delivery] | None = None
            try:
                attempt, delivery = self._send(claim)
                if attempt.succeeded:
                    success = attempt, delivery  # recorded below, with the next claim
                else:
                    self._record(claim, attempt, delivery)
            except Exception:
                log_unrecorded(claim)
            held_back: set[str] | None = None
            with self._cond:
                if self._slots.finished(endpoint_id, succeeded=success is not None):
                    # The endpoint may now fill more slots than were claimed for it:
                    # the pump hands them out (this worker only claims its own next).
                    self._wake = True
                    self._cond.notify_all()
                # Keep this worker's slot while it records a success or claims: the
                # pump cannot hand it out again meanwhile, and drain() cannot find
                # the dispatcher idle before the success is stored.
                reserved = success is not None or not self._stopping
                if reserved:
                    self._slots.reserve()
                if not self._stopping:
                    held_back = self._slots.held_back()
            claims: list[Claim] = []
            try:
                if success is not None:
                    claims = self._record_success(claim, *success, held_back=held_back)
                elif held_back is not None:
                    claims = self._claim(1, held_back)
            except Exception:
                logger.exception("claiming the next delivery failed; the pump takes over")
            with self._cond:
                if reserved:
                    self._slots.release()
                self._slots.started(claims)
                if not claims:
                    self._cond.notify_all()  # a slot is free: the pump may need it
            claim = claims[0] if claims else None

    def _record_success(
        self, claim: Claim, attempt: Attempt, delivery: Delivery, *, held_back: set[str] | None
    ) -> list[Claim]:
        """Record a success and, unless stopping (``held_back`` None), claim the next."""
        try:
            if held_back is None:
                self._record(claim, attempt, delivery)
                return []
            now = self._clock()
            return record_success_and_claim(
                self._storage,
                claim,
                attempt,
                delivery,
                now=now,
                lease_until=now + self._lease,
                exclude_endpoints=held_back,
            )
        except Exception:
            log_unrecorded(claim)
            return []

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
        if self._workers == 0:
            return True
        give_up = None if timeout is None else time.monotonic() + timeout
        while True:
            # Storage first, then the in-memory counters: a claim in progress is
            # seen by one or the other, never by neither.
            due = self._storage.next_due_at()
            with self._cond:
                if self._slots.idle and (due is None or due > self._clock()):
                    return True
                if self._pump is None or not self._pump.is_alive():
                    return False
                remaining = None if give_up is None else give_up - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(min(0.05, remaining) if remaining is not None else 0.05)

    def close(self, timeout: float | None = None) -> None:
        """Stop taking events, deliver what is due (up to ``timeout`` s), and stop.

        Attempts in flight always finish (each is bounded by the attempt timeout).
        Retries scheduled for later stay in storage for the next Dispatcher; with
        MemoryStorage they are lost, and a ResourceWarning says how many. The storage
        itself stays open: it is yours to close. Idempotent.
        """
        if self._closed:
            return
        if self._workers and not self.drain(timeout):
            logger.warning(
                "closing with deliveries still due; they stay pending in %r", self._storage
            )
        self._closed = True
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

    def _check_open(self) -> None:
        if self._closed:
            raise DispatcherClosedError("this Dispatcher is closed; create a new one")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
