"""What :class:`Dispatcher` and :class:`AsyncDispatcher` share that is not I/O, written once.

Both drivers subclass :class:`Driver`. It holds the options (checked once, defaults
filled in), the worker slots, and every decision of the delivery loop: what to
claim and with which lease, how long to wait, when a worker keeps its slot, what
an attempt does before and after its request is sent, and what a recorded
attempt reports. Its methods that touch storage are units of synchronous storage
work, like the ``store_*`` functions of :mod:`._operations`: the sync driver calls
them, the async driver runs them through its storage threads. What a driver adds
is only how it waits (threads and a condition variable; tasks on an event loop)
and how it calls (directly; awaiting).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from attrs import evolve, frozen

from ._core import Claim, Outcome, Request, conclude, prepare
from ._group_commit import RECENT, Ticket
from ._listing import (
    DeliveryQuery,
    EndpointQuery,
    Page,
    ReplayLinks,
    check_page_size,
    decode_cursor,
    page_of,
)
from ._models import Attempt, Delivery, DeliveryStatus, Endpoint, Event
from ._operations import (
    check_options,
    check_transaction_mode,
    checked_event,
    end_endpoint_rotation,
    lease_lost,
    log_attempt,
    log_fields,
    log_unrecorded,
    parse_status,
    record_attempt,
    rotate_endpoint_secret,
    set_endpoint_enabled,
    store_endpoint,
    store_event,
    store_event_and_claim,
    store_events,
    store_redelivery,
    stored_event,
    stored_replay_links,
    unexpected_failure,
    update_endpoint_fields,
)
from ._policy import RetryPolicy
from ._reporting import AttemptReport, report_fields, report_of
from ._slots import DispatchStream, WorkerSlots
from ._targets import TargetPolicy, default_targets
from ._types import JSON, Clock
from .catalog import Catalog
from .exceptions import (
    DispatcherClosedError,
    InvalidInputError,
    InvalidStateError,
    UnknownDeliveryError,
    UnknownEndpointError,
    UnknownEventError,
    WouldBlockError,
)
from .storage import Storage
from .telemetry import OpenTelemetry
from .transports import AsyncTransport, Transport

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = [
    "ASYNC",
    "DEFAULT_DISABLE_AFTER",
    "DEFAULT_LEASE",
    "DEFAULT_TIMEOUT",
    "SYNC",
    "Began",
    "Driver",
    "Flavour",
    "delivery_query",
    "endpoint_query",
    "inline_claim_limit",
]

logger = logging.getLogger("hookdispatch")

DEFAULT_TIMEOUT = 5.0
"""Seconds an attempt may take: connect, send, wait and read."""
DEFAULT_LEASE = 60.0
"""Seconds a claimed delivery belongs to the worker that claimed it."""
DEFAULT_DISABLE_AFTER = 50
"""Failed deliveries in a row after which an endpoint is disabled (``None``: never)."""

_INLINE_BATCH = 100
_DRAIN_POLL = 0.05  # seconds: drain() looks again at least this often


def _key(rows: Sequence[Delivery] | Sequence[Endpoint], limit: int) -> tuple[datetime, str] | None:
    """The key of the last row of a page read with one row extra, if a page follows."""
    if len(rows) <= limit:
        return None
    last = rows[limit - 1]
    return last.created_at, last.id


def _optional_text(name: str, value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidInputError(f"{name} must be a string or None, not {type(value).__name__}")
    return value


def _moment(name: str, value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise InvalidInputError(
            f"{name} must be a timezone-aware datetime, such as"
            " datetime.now(UTC) - timedelta(hours=1)"
        )
    return value


def delivery_query(
    *,
    tenant: str | None,
    event_id: str | None,
    endpoint_id: str | None,
    event_type: str | None,
    status: DeliveryStatus | str | None,
    since: datetime | None,
    until: datetime | None,
    after: str | None,
    limit: int,
    newest_first: bool,
) -> DeliveryQuery:
    """The :class:`DeliveryQuery` of ``deliveries()``' arguments, each checked
    (InvalidInputError naming the argument)."""
    return DeliveryQuery(
        tenant=_optional_text("tenant", tenant),
        event_id=_optional_text("event_id", event_id),
        endpoint_id=_optional_text("endpoint_id", endpoint_id),
        event_type=_optional_text("event_type", event_type),
        status=parse_status(status),
        since=_moment("since", since),
        until=_moment("until", until),
        after=None if after is None else decode_cursor(after),
        newest_first=bool(newest_first),
        limit=check_page_size(limit),
    )


def endpoint_query(*, tenant: str | None, after: str | None, limit: int) -> EndpointQuery:
    """The :class:`EndpointQuery` of ``endpoints()``' arguments, each checked."""
    return EndpointQuery(
        tenant=_optional_text("tenant", tenant),
        after=None if after is None else decode_cursor(after),
        limit=check_page_size(limit),
    )


def inline_claim_limit(*, concurrent: bool) -> int:
    """How many deliveries of an event inline delivery claims at once.

    A lease must cover its attempt: it starts at the claim, and the attempt has to
    be over before it ends, or another worker may claim the delivery and send it
    again (``lease > timeout`` is checked at construction). The sync driver attempts
    one delivery after another, so it claims one at a time: a second delivery
    claimed with the first would see its lease run while the first attempt does.
    The async driver attempts what it claimed concurrently, all started together
    and each cut at ``timeout``, so every lease of the batch covers its attempt: it
    claims up to 100 at once, and an event's deliveries go out side by side.
    """
    return _INLINE_BATCH if concurrent else 1


def _hand_out(claims: Sequence[Claim], wanting: Sequence[Ticket], *, deep: bool = True) -> None:
    """A group's claims to its tickets: one to each, in turn, then the further ones
    each wants, round by round, so that a short claim starts every worker before it
    feeds any ahead. Claims past what was asked for (a storage that leased more than
    its limit) go to the first ticket, to be sent (or released) rather than left
    leased; with no ticket wanting any, their leases run out, and they are sent
    after that."""
    if not wanting:
        return
    if not deep and len(claims) <= len(wanting):  # (each wants one: the usual group)
        for ticket, claimed in zip(wanting, claims, strict=False):
            ticket.claims.append(claimed)
        return
    order = [
        t for n in range(max((t.want for t in wanting), default=0)) for t in wanting if t.want > n
    ]
    for n, claimed in enumerate(claims):
        (order[n] if n < len(order) else wanting[0]).claims.append(claimed)


@frozen
class Began:
    """When an attempt started (by the clock, for its record; by the performance
    counter, for its duration), and its span when tracing."""

    started_at: datetime
    counter: float
    span: Span | None = None


@frozen
class Flavour:
    """What tells the two drivers apart in their options and messages."""

    name: str
    capacity: str  # the option that sets how many attempts run at once
    capacity_error: str
    transport: type
    transport_error: str
    inline_claims: int  # see inline_claim_limit
    stream_gap: float  # see STREAM_GAP


STREAM_GAP = 0.001
"""Seconds. On threads, a background dispatch that starts less than this after the
one before returned, when the :data:`STREAM_RUN` - 1 before it did too (a loop,
from its fourth dispatch on), leases nothing: its deliveries are stored as
pending (in the fan-out row, on SQLite and PostgreSQL), and the workers' next
claims take them, a group commit's or the pump's, which the dispatch wakes.
They are stored before ``dispatch()`` returns, as ever; only the lease at
dispatch is skipped.

Leasing at dispatch (``Storage.add_event_and_claim``) starts a lone event's
deliveries at once, with no claim by the pump. In a stream it did harm: one thread
dispatching in a loop to ``Dispatcher(workers=8)`` on PostgreSQL settled, in 3
runs of 4, into every dispatch leasing its one delivery (97%): each dispatch
about 900 µs where one that writes the fan-out row took 420, the workers done
with it before the next dispatch returned and recording it alone (groups of 1.6),
and the next dispatch finding them free again: 850 to 1,020 deliveries a second.
Leasing nothing in a stream: groups of 6 and about 2,030 a second in every run
(counted per storage call; ``benchmarks.ab`` figures in docs/scaling.md). The
first few of a row still lease, so that a request that dispatches two or three
events in a row keeps their hand-off to idle workers.

``Dispatcher`` only. Under asyncio the caller of ``await dispatch()`` waits for
turns of a busy loop whatever the storage call costs, and a dispatch that leases
nothing wakes the pump for a claim of its own: with the rule there,
``AsyncDispatcher(concurrency=64)`` went 0.85x (memory), 0.97x (SQLite) and
0.93x (PostgreSQL) the deliveries a second without it (5 rounds)."""
STREAM_RUN = 3
"""The dispatches in a row, each starting within :data:`STREAM_GAP` of the one
before, that still lease (with the one that began the row): a request's two or
three."""
AHEAD = 2
"""Deliveries a worker thread may hold leased beyond the one it sends next, while
its attempts are fast (under :data:`~._group_commit.RECENT`), its storage's calls
block (SQLite, PostgreSQL) and no worker slot is free (see
:meth:`Driver._wanted`). It sends them while the tickets it handed in are stored,
so the storage and the workers work at the same time rather than by turns, and
each group commit takes more tickets (``Dispatcher(workers=8)`` draining stored
deliveries with an instant transport: 1.25 to 1.37 times the deliveries per
second on PostgreSQL, 1.19 to 1.35 on SQLite; 2 rather than 1: 1.10 times on PostgreSQL;
3 rather than 2: no more; see docs/scaling.md). A delivery leased ahead waits
for at most ``AHEAD`` attempts before its own: only a lease of at least twice
``(1 + AHEAD)`` attempt timeouts lets a worker hold any (the default: 60 s
against 5). Under asyncio tasks do not lease ahead (not built yet)."""


SYNC = Flavour(
    "Dispatcher",
    "workers",
    "workers must be 0 (inline) or a positive number of threads",
    Transport,
    "Dispatcher needs a Transport (send() and close()), such as SocketTransport();"
    " AsyncDispatcher takes the async ones",
    inline_claim_limit(concurrent=False),
    STREAM_GAP,
)
ASYNC = Flavour(
    "AsyncDispatcher",
    "concurrency",
    "concurrency must be 0 (inline) or a positive number",
    AsyncTransport,
    "AsyncDispatcher needs an AsyncTransport (async send() and aclose()), such as"
    " AsyncioTransport(); Dispatcher takes the sync ones",
    inline_claim_limit(concurrent=True),
    0.0,  # see STREAM_GAP
)


class Driver:
    """The base of both drivers: their state and decisions, without the I/O."""

    _FLAVOUR: ClassVar[Flavour]
    _transport: object  # the subclass's; named in a log line

    def __init__(self, options: Mapping[str, Any]) -> None:
        """Check and keep the options a driver's constructor was called with.

        ``options`` is the constructor's ``locals()``: every option both drivers
        take is read from it by name, so each is checked and defaulted here only.
        """
        flavour = self._FLAVOUR
        check_options(
            storage=options["storage"],
            timeout=options["timeout"],
            lease=options["lease"],
            poll_interval=options["poll_interval"],
        )
        capacity: int = options[flavour.capacity]
        if capacity < 0:
            raise InvalidInputError(flavour.capacity_error)
        transport = options["transport"]
        if transport is not None and not isinstance(transport, flavour.transport):
            raise InvalidInputError(flavour.transport_error)
        catalog = options["catalog"]
        if catalog is not None and not isinstance(catalog, Catalog):
            raise InvalidInputError(
                "catalog must be a hookdispatch Catalog, e.g."
                " Catalog([EventType('user.created', 'Triggered when a new user signs up')])"
            )
        self._owns_transport = transport is None
        self._storage: Storage = options["storage"]
        # Whether workers' tickets go through the group commit: with a storage that
        # blocks. One that never does (MemoryStorage) makes no transactions to share,
        # and the group's lock and wake-ups would only cost: each worker stores its
        # own ticket at once.
        self._grouped: bool = self._storage.blocking
        self._targets: TargetPolicy = options["targets"] or default_targets()
        self._retry: RetryPolicy = options["retry"] or RetryPolicy()
        self._timeout: float = options["timeout"]
        self._lease = timedelta(seconds=options["lease"])
        # A delivery leased ahead waits for up to AHEAD attempts before its own.
        self._leases_cover_ahead = options["lease"] >= 2 * (1 + AHEAD) * self._timeout
        self._poll_interval: float = options["poll_interval"]
        self._clock: Clock = options["clock"]
        self._on_endpoint_disabled: Callable[[Endpoint, str], None] | None = options[
            "on_endpoint_disabled"
        ]
        self._disable_after: int | None = options["disable_after"]
        on_attempt = options["on_attempt"]
        if on_attempt is not None and not callable(on_attempt):
            raise InvalidInputError(
                "on_attempt must be a function taking an AttemptReport, or None"
            )
        self._on_attempt: Callable[[AttemptReport], None] | None = on_attempt
        telemetry = options["telemetry"]
        if telemetry is not None and not isinstance(telemetry, OpenTelemetry):
            raise InvalidInputError(
                "telemetry must be a hookdispatch.telemetry.OpenTelemetry(), or None"
            )
        self._telemetry: OpenTelemetry | None = telemetry
        if telemetry is not None:
            telemetry._watch(self._storage)
        # Whether anyone reads attempt reports: without, none is built (hot path).
        self._reporting = on_attempt is not None or telemetry is not None
        self._max_payload_bytes: int = options["max_payload_bytes"]
        self._catalog: Catalog | None = catalog
        self._capacity = capacity  # 0: inline
        self._slots = WorkerSlots(capacity)
        self._pump_needs_slots = False  # the pump waits for a free slot
        self._stream = DispatchStream(gap=self._FLAVOUR.stream_gap, run=STREAM_RUN)
        self._stopping = False
        self._closed = False

    @property
    def catalog(self) -> Catalog | None:
        """The event catalog given as ``catalog=``, or ``None``: what a settings page
        offers to subscribe to and to send as a test."""
        return self._catalog

    def __repr__(self) -> str:
        flavour = self._FLAVOUR
        mode = "inline" if self._capacity == 0 else f"{flavour.capacity}={self._capacity}"
        state = " closed" if self._closed else ""
        return f"<{flavour.name} {mode} storage={self._storage!r}{state}>"

    def _check_open(self) -> None:
        if self._closed:
            raise DispatcherClosedError(f"this {self._FLAVOUR.name} is closed; create a new one")

    def _check_dispatch(self, transaction: object | None) -> None:
        """Before storing an event: open, and ``transaction`` only in background mode."""
        self._check_open()
        if transaction is not None:
            check_transaction_mode(inline=self._capacity == 0)

    # Storing ------------------------------------------------------------------------

    def _store_endpoint(
        self,
        url: str,
        events: Iterable[str],
        secret: str | None,
        id: str | None,
        now: datetime,
        *,
        tenant: str,
        description: str = "",
        headers: Mapping[str, str] | None = None,
        metadata: Mapping[str, JSON] | None = None,
    ) -> Endpoint:
        """Storage work (and a DNS lookup: the target check resolves the host name)."""
        return store_endpoint(
            self._storage,
            url,
            events=events,
            secret=secret,
            id=id,
            now=now,
            targets=self._targets,
            tenant=tenant,
            catalog=self._catalog,
            description=description,
            headers=headers,
            metadata=metadata,
        )

    def _update_endpoint(
        self,
        endpoint_id: str,
        *,
        url: str | None,
        events: Iterable[str] | None,
        description: str | None,
        headers: Mapping[str, str] | None,
        metadata: Mapping[str, JSON] | None,
    ) -> Endpoint:
        """Storage work (and a DNS lookup for a new URL): change the given fields of an
        endpoint (see :func:`update_endpoint_fields`)."""
        return update_endpoint_fields(
            self._storage,
            endpoint_id,
            url=url,
            events=events,
            description=description,
            headers=headers,
            metadata=metadata,
            targets=self._targets,
            catalog=self._catalog,
        )

    def _page_endpoints(self, query: EndpointQuery) -> Page[Endpoint]:
        """Storage work: one page of endpoints (one row more is read, to know whether
        another page follows)."""
        rows = self._storage.find_endpoints(evolve(query, limit=query.limit + 1))
        return page_of(rows, query.limit, _key(rows, query.limit))

    def _page_deliveries(self, query: DeliveryQuery) -> Page[Delivery]:
        """Storage work: one page of deliveries (as :meth:`_page_endpoints`)."""
        rows = self._storage.find_deliveries(evolve(query, limit=query.limit + 1))
        return page_of(rows, query.limit, _key(rows, query.limit))

    def _owned_endpoint(self, endpoint_id: str, tenant: str | None) -> Endpoint:
        """Storage work: the endpoint, if it is ``tenant``'s (any tenant's for ``None``).

        Another tenant's id raises the same UnknownEndpointError as an unknown one:
        a tenant cannot even learn that the id exists."""
        endpoint = self._storage.get_endpoint(endpoint_id)
        if tenant is not None and endpoint.tenant != tenant:
            raise UnknownEndpointError(f"no endpoint with id {endpoint_id!r}")
        return endpoint

    def _owned_event(self, event_id: str, tenant: str | None) -> Event:
        """Storage work: the event, if it is ``tenant``'s (as :meth:`_owned_endpoint`)."""
        event = self._storage.get_event(event_id)
        if tenant is not None and event.tenant != tenant:
            raise UnknownEventError(f"no event with id {event_id!r}")
        return event

    def _owned_delivery(self, delivery_id: str, tenant: str | None) -> Delivery:
        """Storage work: the delivery, if it is ``tenant``'s (as :meth:`_owned_endpoint`)."""
        delivery = self._storage.get_delivery(delivery_id)
        if tenant is not None and delivery.tenant != tenant:
            raise UnknownDeliveryError(f"no delivery with id {delivery_id!r}")
        return delivery

    def _owned_attempts(self, delivery_id: str, tenant: str | None) -> list[Attempt]:
        """Storage work: a delivery's attempts, if it is ``tenant``'s."""
        if tenant is not None:
            self._owned_delivery(delivery_id, tenant)
        return self._storage.list_attempts(delivery_id)

    def _replay_links(self, delivery_id: str, tenant: str | None) -> ReplayLinks:
        """Storage work: a delivery's replay links (see :class:`ReplayLinks`), from
        the deliveries of its event to its endpoint (an index lookup, a few rows)."""
        return stored_replay_links(self._storage, self._owned_delivery(delivery_id, tenant))

    def _delete_endpoint(self, endpoint_id: str, tenant: str | None) -> int:
        """Storage work: delete ``tenant``'s endpoint, cancelling its unfinished deliveries."""
        if tenant is not None:
            self._owned_endpoint(endpoint_id, tenant)
        return self._storage.delete_endpoint(endpoint_id, now=self._clock())

    def _stored_events(self, results: list[tuple[Event, bool]]) -> list[Event]:
        """Storage work: a batch's events as stored (for a known id, the stored one)."""
        return [
            event if stored else stored_event(self._storage, event) for event, stored in results
        ]

    def _store_enabled(self, endpoint_id: str, enabled: bool) -> Endpoint:
        """Storage work: enable or disable an endpoint (see :func:`set_endpoint_enabled`)."""
        return set_endpoint_enabled(self._storage, endpoint_id, enabled=enabled)

    def _rotate_secret(self, endpoint_id: str, grace: float, secret: str | None) -> Endpoint:
        """Storage work: rotate an endpoint's secret (see :func:`rotate_endpoint_secret`)."""
        return rotate_endpoint_secret(
            self._storage, endpoint_id, grace=grace, secret=secret, now=self._clock()
        )

    def _end_rotation(self, endpoint_id: str) -> Endpoint:
        """Storage work: drop an endpoint's previous secret (see :func:`end_endpoint_rotation`)."""
        return end_endpoint_rotation(self._storage, endpoint_id)

    def _store_event(
        self,
        event_type: str,
        data: JSON,
        id: str | None,
        now: datetime,
        *,
        tenant: str,
        transaction: object | None = None,
        endpoints: list[Endpoint] | None = None,
    ) -> tuple[Event, bool]:
        """Storage work: :func:`store_event` under this driver's payload limit and catalog."""
        return store_event(
            self._storage,
            event_type,
            data,
            id=id,
            now=now,
            transaction=transaction,
            endpoints=endpoints,
            max_bytes=self._max_payload_bytes,
            tenant=tenant,
            catalog=self._catalog,
        )

    def _store_and_lease(
        self, event: Event, now: datetime, limit: int, held_back: set[str]
    ) -> tuple[Event, bool, list[Claim]]:
        """Storage work: a checked event stored, and up to ``limit`` of its deliveries
        leased in the same call, for the slots :meth:`_lease_slots` held."""
        return store_event_and_claim(
            self._storage,
            event,
            now=now,
            lease_until=now + self._lease,
            limit=limit,
            exclude_endpoints=held_back,
        )

    def _store_inline(
        self, event_type: str, data: JSON, id: str | None, now: datetime, tenant: str
    ) -> tuple[Event, bool, list[Claim]]:
        """Storage work, inline: a new event checked and stored, and its first
        deliveries leased in the same call (as many as the driver attempts at once),
        for the caller to attempt at once: one storage call, not two."""
        event = self._checked_event(event_type, data, id, now, tenant)
        return self._store_and_lease(event, now, self._FLAVOUR.inline_claims, set())

    def _checked_event(
        self, event_type: str, data: JSON, id: str | None, now: datetime, tenant: str
    ) -> Event:
        """A new event, checked under this driver's payload limit and catalog."""
        return checked_event(
            event_type,
            data,
            id=id,
            now=now,
            max_bytes=self._max_payload_bytes,
            tenant=tenant,
            catalog=self._catalog,
        )

    def _busy_slots(self) -> int:
        """How many workers a group commit may wait for (see
        :class:`~._group_commit.Lingering` and :meth:`WorkerSlots.coming`): none
        whose attempt has been out longer than :data:`~._group_commit.RECENT`."""
        return self._slots.coming(within=RECENT)

    def _lease_slots(self) -> tuple[int, set[str]]:
        """Before a background dispatch stores its event: hold every free worker slot,
        for the deliveries it leases at once (the pump cannot hand them out
        meanwhile, nor drain() find the dispatcher idle). How many, and the
        endpoints to skip. Give them back with :meth:`_return_slots`.

        On threads, none deep in a stream of dispatches (see :data:`STREAM_GAP`):
        their deliveries are claimed by the workers and the pump, many in one
        call, rather than leased one dispatch at a time."""
        streaming = self._stream.starting()
        free = self._slots.free
        if free <= 0 or self._stopping or streaming:
            return 0, set()
        self._slots.reserve(free, dispatch=True)
        return free, self._slots.held_back()

    def _return_slots(self, held: int, claims: list[Claim]) -> bool:
        """After the dispatch's storage call: the held slots back, the claims in
        flight. Whether to wake the pump: for a dispatch that held no slot, as ever;
        when every held slot was filled (the event may have more deliveries due);
        and when slots came back unused while the pump waits for free ones (it may
        have found none because this dispatch held them). Not otherwise: an idle
        pump woken for nothing would make a claim that finds nothing."""
        self._slots.release(held, dispatch=True)
        self._slots.started(claims)
        self._stream.returned()
        return not held or len(claims) == held or self._pump_needs_slots

    def _store_test(
        self, endpoint_id: str, event_type: str, data: JSON | None, tenant: str | None
    ) -> Delivery:
        """Storage work: an event of ``event_type`` with one delivery, to this endpoint
        only (see :meth:`Dispatcher.send_test`)."""
        endpoint = self._owned_endpoint(endpoint_id, tenant)
        if not endpoint.enabled:
            raise InvalidStateError(
                f"endpoint {endpoint_id!r} is disabled; enable it to send it a test event"
            )
        if data is None:
            known = self._catalog is not None and event_type in self._catalog
            example = self._catalog[event_type].example if known and self._catalog else None
            data = {} if example is None else example
        event, _ = self._store_event(
            event_type, data, None, self._clock(), tenant=endpoint.tenant, endpoints=[endpoint]
        )
        [delivery] = self._storage.list_deliveries(event_id=event.id)
        return delivery

    def _store_events(
        self,
        items: Iterable[tuple[str, JSON] | tuple[str, JSON, str | None]],
        now: datetime,
        *,
        tenant: str,
    ) -> list[tuple[Event, bool]]:
        """Storage work: :func:`store_events` under this driver's payload limit and catalog."""
        return store_events(
            self._storage,
            items,
            now=now,
            max_bytes=self._max_payload_bytes,
            tenant=tenant,
            catalog=self._catalog,
        )

    def _prune_cutoff(self, older_than: timedelta | datetime) -> datetime:
        """The time before which finished work goes: ``older_than`` ago, or that time."""
        if isinstance(older_than, timedelta):
            if older_than <= timedelta(0):
                raise InvalidInputError(
                    "older_than must be a positive age, such as timedelta(days=30)"
                )
            return self._clock() - older_than
        if not isinstance(older_than, datetime) or older_than.tzinfo is None:
            raise InvalidInputError(
                "older_than must be a timedelta (an age) or a timezone-aware datetime"
            )
        return older_than

    def _prune_batch(self, cutoff: datetime, batch_size: int) -> int:
        """Storage work: one batch of :meth:`Storage.prune`; 0 once nothing is left."""
        return self._storage.prune(older_than=cutoff, limit=batch_size)

    def _store_redelivery(self, delivery_id: str, now: datetime) -> Delivery:
        """Storage work: a finished delivery again, as a new one."""
        return store_redelivery(self._storage, delivery_id, now=now)

    # An attempt ---------------------------------------------------------------------

    def _dispatched(self, event_ids: Iterable[str]) -> None:
        """After storing events: with telemetry, the span current now is the one
        their attempts' spans link to (kept in memory, in this process only)."""
        if self._telemetry is None:
            return
        try:
            self._telemetry._remember(event_ids)
        except Exception:
            logger.exception("telemetry failed to note the dispatching span")

    def _begin(self, claim: Claim) -> tuple[Request, Began]:
        """An attempt's first step: its signed request (with ``traceparent`` when
        telemetry propagates it), and when it started."""
        started_at = self._clock()
        request = prepare(claim, now=started_at, timeout=self._timeout, targets=self._targets)
        span = None
        if self._telemetry is not None:
            try:
                request, span = self._telemetry._start(claim, request, inline=self._capacity == 0)
            except Exception:
                logger.exception(
                    "telemetry failed to start the attempt's span", extra=log_fields(claim)
                )
        return request, Began(started_at, time.perf_counter(), span)

    def _transport_raised(self, claim: Claim, exc: Exception) -> Outcome:
        """The outcome of a send whose transport raised; call it in the ``except``."""
        logger.exception(
            "transport %r raised instead of returning an outcome",
            self._transport,
            extra=log_fields(claim),
        )
        return unexpected_failure(exc)

    def _finish(self, claim: Claim, outcome: Outcome, began: Began) -> tuple[Attempt, Delivery]:
        """An attempt's last step: its record and the delivery's next state, logged."""
        duration = time.perf_counter() - began.counter
        result = conclude(
            claim,
            outcome,
            started_at=began.started_at,
            duration=duration,
            now=self._clock(),
            policy=self._retry,
        )
        if self._telemetry is not None and began.span is not None:
            try:
                self._telemetry._end(began.span, *result)
            except Exception:
                logger.exception(
                    "telemetry failed to end the attempt's span", extra=log_fields(claim)
                )
        log_attempt(claim, *result)
        return result

    def _store_attempt(
        self, claim: Claim, attempt: Attempt, delivery: Delivery
    ) -> tuple[bool, Endpoint | None, str]:
        """Storage work: record an attempt (see :func:`record_attempt`)."""
        return record_attempt(
            self._storage, claim, attempt, delivery, disable_after=self._disable_after
        )

    def _report(
        self,
        claim: Claim,
        attempt: Attempt,
        delivery: Delivery,
        recorded: tuple[bool, Endpoint | None, str],
    ) -> None:
        """After a failed attempt is recorded: tell ``on_endpoint_disabled`` about an
        endpoint that recording disabled, then ``on_attempt`` and the telemetry."""
        held, disabled, reason = recorded
        report = (
            report_of(claim, attempt, delivery, held=held, disabled=disabled)
            if self._reporting
            else None
        )
        if disabled is not None:
            if self._telemetry is not None and report is not None:
                try:
                    self._telemetry._endpoint_disabled(report)
                except Exception:
                    logger.exception("telemetry failed", extra=log_fields(claim))
            if self._on_endpoint_disabled is not None:
                try:
                    self._on_endpoint_disabled(disabled, reason)
                except Exception:
                    logger.exception(
                        "the on_endpoint_disabled hook raised for endpoint %s",
                        disabled.id,
                        extra=log_fields(claim),
                    )
        if report is not None:
            self._emit(report)

    def _emit(self, report: AttemptReport) -> None:
        """Hand a recorded attempt's report to the telemetry and ``on_attempt``. Either
        raising is logged, and delivery goes on."""
        if self._telemetry is not None:
            try:
                self._telemetry._recorded(report)
            except Exception:
                logger.exception("telemetry failed", extra=report_fields(report))
        if self._on_attempt is not None:
            try:
                self._on_attempt(report)
            except Exception:
                logger.exception(
                    "the on_attempt hook raised on attempt %d of %s; delivery goes on",
                    report.attempt,
                    report.delivery_id,
                    extra=report_fields(report),
                )

    # Claiming -----------------------------------------------------------------------

    def _claim_inline(self, now: datetime, event_id: str) -> list[Claim]:
        """Storage work: lease due deliveries of one event, as many as this driver
        attempts at once (:func:`inline_claim_limit`)."""
        return self._storage.claim(
            now=now,
            lease_until=now + self._lease,
            limit=self._FLAVOUR.inline_claims,
            event_id=event_id,
        )

    def _inline_again(self, claims: list[Claim]) -> bool:
        """Inline, after attempting ``claims``: claim again at once. Only after a full
        claim (more may be due); after a short one nothing else of the event was due
        then, so the next step is to ask when something is (``next_due_at``: a retry,
        or a lease of another process ending), saving a claim that finds nothing."""
        return len(claims) == self._FLAVOUR.inline_claims

    def _pause(self, due: datetime | None) -> float | None:
        """Inline: seconds to sleep until the event's next retry; None: none is left."""
        if due is None:
            return None
        return max(0.0, (due - self._clock()).total_seconds())

    def _claim_for_pump(self, now: datetime, limit: int, held_back: set[str]) -> list[Claim]:
        """Storage work: lease up to ``limit`` due deliveries, skipping the held-back
        endpoints. A failure is logged, and claims nothing (WouldBlockError, under
        :meth:`Storage.without_waiting`, is raised: nothing was claimed)."""
        try:
            return self._storage.claim(
                now=now, lease_until=now + self._lease, limit=limit, exclude_endpoints=held_back
            )
        except WouldBlockError:
            raise
        except Exception:
            logger.exception("claiming due deliveries failed; trying again shortly")
            return []

    def _next_due(self) -> datetime | None:
        """Storage work: when the next delivery is due. A failure is logged: None."""
        try:
            return self._storage.next_due_at()
        except Exception:
            logger.exception("reading the next due time failed")
            return None

    def _idle_wait(self, due: datetime | None) -> float:
        """How long the idle pump waits: until ``due``, at most ``poll_interval``.

        Work due now that the claim skipped belongs to held-back endpoints: a
        finishing worker wakes the pump.
        """
        wait = self._poll_interval
        if due is not None and due > self._clock():
            wait = min(wait, (due - self._clock()).total_seconds())
        return wait

    def _wanted(self, owned: int, *, succeeded: bool, took: float) -> int:
        """How many next deliveries a worker thread's ticket asks for after an
        attempt that took ``took`` seconds (under the slots' lock, the attempt's slot
        given back): enough that it holds ``1 + AHEAD`` when the attempt succeeded in
        less than :data:`~._group_commit.RECENT`, the storage's calls block, no slot
        but this worker's is free and the lease covers the wait (see :data:`AHEAD`),
        else enough that it holds one; less the ``owned`` ones (leased ahead already,
        or asked for by its tickets not yet stored). 0 when stopping."""
        if self._stopping:
            return 0
        ahead = (
            self._grouped
            and succeeded
            and took < RECENT
            and self._leases_cover_ahead
            and self._slots.free <= 1
        )
        return max(0, (1 + AHEAD if ahead else 1) - owned)

    def _hold_slot(self) -> set[str] | None:
        """After an attempt that a worker follows up (a success to record, a next
        delivery to claim): keep its slot meanwhile. Then the pump cannot hand the
        slot out again, and drain() cannot find the dispatcher idle before a
        success is stored. Returns the endpoints its claim must skip; None when
        stopping: it then only records. Give the slot back with ``_release_slot``.
        """
        self._slots.reserve()
        return None if self._stopping else self._slots.held_back()

    def _ticket(
        self,
        claim: Claim,
        success: tuple[Attempt, Delivery] | None,
        held_back: set[str] | None,
        *,
        want: int = 1,
    ) -> Ticket | None:
        """What a worker stores after an attempt: its success (if it was one) and
        leases on its next ``want`` deliveries (none if ``held_back`` is None or
        ``want`` is 0). None: nothing."""
        if not want:
            held_back = None
        if success is None and held_back is None:
            return None
        return Ticket(claim, success, held_back, want)

    def _settle(self, tickets: list[Ticket]) -> None:
        """Storage work: a group of workers' tickets in one storage call
        (:meth:`Storage.complete_many`): their successes recorded, and as many
        deliveries leased as they want, skipping what any of them holds back. A
        failure is logged: none of the successes was recorded (their deliveries are
        sent again when their leases end), and the pump takes over from the workers.
        Marks every ticket done and never raises, except WouldBlockError (under
        :meth:`Storage.without_waiting`: nothing stored, the tickets not done)."""
        done = True
        try:
            completions = [(t.claim, *t.success) for t in tickets if t.success is not None]
            wanting = [t for t in tickets if t.held_back is not None]
            excluded = set().union(*(t.held_back for t in wanting if t.held_back))
            now = self._clock()
            limit, deep = 0, False  # deep: some ticket wants more than one
            for ticket in wanting:
                limit += ticket.want
                deep = deep or ticket.want > 1
            held, claims = self._storage.complete_many(
                completions,
                now=now,
                lease_until=now + self._lease,
                limit=limit,
                exclude_endpoints=excluded,
            )
            recorded = iter(held)
            for ticket in tickets:
                if ticket.success is not None:
                    ticket.held = next(recorded)
                    if not ticket.held:
                        lease_lost(ticket.success[1])
            _hand_out(claims, wanting, deep=deep)
            self._claims_handed_out(wanting)
        except WouldBlockError:
            done = False
            raise
        except Exception:
            for ticket in tickets:
                ticket.failed = True
                if ticket.success is not None:
                    log_unrecorded(ticket.claim)
            if not completions:
                logger.exception("claiming the next delivery failed; the pump takes over")
        finally:
            for ticket in tickets:
                ticket.done = done

    def _claims_handed_out(self, tickets: list[Ticket]) -> None:
        """Hook of :meth:`_settle`: the group's claims are on ``tickets``, not yet
        marked done (so no worker can take them yet). Threads count them held
        (see ``Dispatcher._claims_handed_out``); tasks attempt them as they take
        them."""

    def _stored_ticket(self, ticket: Ticket | None) -> tuple[list[Claim], AttemptReport | None]:
        """A stored ticket's claims, and its success's report once it is recorded
        (the driver hands it to :meth:`_emit` on its own thread or loop)."""
        if ticket is None or ticket.failed:
            return [], None
        if ticket.success is None or not self._reporting:
            return ticket.claims, None
        # A success never disables its endpoint: nothing else to report.
        report = report_of(ticket.claim, *ticket.success, held=ticket.held, disabled=None)
        return ticket.claims, report

    @staticmethod
    def _ran_dry(ticket: Ticket | None) -> bool:
        """Whether a stored ticket asked for a next delivery and the storage had none
        due (for an endpoint not held back): a worker that stops for that need not
        wake the pump, whose claim would find nothing either. New work wakes it;
        so does a held-back endpoint's slot coming free."""
        return (
            ticket is not None
            and not ticket.failed
            and ticket.held_back is not None
            and not ticket.claims
        )

    def _release_slot(self, claims: list[Claim]) -> Claim | None:
        """Give back the slot ``_hold_slot`` kept; what was claimed is in flight now.
        The worker's next delivery, if it claimed one."""
        self._slots.release()
        self._slots.started(claims)
        return claims[0] if claims else None

    # Lifecycle ----------------------------------------------------------------------

    @staticmethod
    def _give_up_at(timeout: float | None) -> float | None:
        """The ``time.monotonic()`` at which drain(timeout) gives up."""
        return None if timeout is None else time.monotonic() + timeout

    @staticmethod
    def _drain_wait(give_up: float | None) -> float:
        """How long drain() waits before looking again; 0 or less: it gives up."""
        return _DRAIN_POLL if give_up is None else min(_DRAIN_POLL, give_up - time.monotonic())

    def _drained(self, due: datetime | None) -> bool:
        """Nothing in flight, no claim under way, nothing due now (``due``: the next
        due time, read from storage before this is called)."""
        return self._slots.idle and (due is None or due > self._clock())

    def _mark_closed(self, *, drained: bool) -> None:
        """Closing: no more events taken. ``drained``: whether drain() succeeded."""
        if not drained:
            logger.warning(
                "closing with deliveries still due; they stay pending in %r", self._storage
            )
        self._closed = True
