"""What the sync and async dispatchers do alike, written once.

Each ``store_*`` function is a unit of synchronous storage work: the sync driver
calls it directly, the async driver runs it in its storage thread. The rest are
pure helpers: option checks, the attempt outcome, and the attempt log line.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import warnings
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from attrs import evolve

from ._core import Claim, endpoint_down, endpoint_gone
from ._listing import MAX_PAGE_SIZE, DeliveryQuery, ReplayLinks, replay_links
from ._models import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_TENANT,
    Attempt,
    Delivery,
    DeliveryStatus,
    Endpoint,
    Event,
    _check_event_type,
    _check_events,
    _check_id,
    _check_url,
    _event_body,
    _to_the_second,
    check_description,
    check_grace,
    check_headers,
    check_metadata,
    check_tenant,
    new_deliveries,
    new_ids,
)
from ._targets import TargetPolicy
from ._types import JSON
from .exceptions import (
    BlockedTargetError,
    InvalidEndpointError,
    InvalidEventError,
    InvalidInputError,
    InvalidResponseError,
    InvalidStateError,
    TransportError,
    UnknownEventError,
)
from .storage import MemoryStorage, Storage

if TYPE_CHECKING:
    from .catalog import Catalog

__all__ = [
    "check_options",
    "check_transaction_mode",
    "checked_event",
    "end_endpoint_rotation",
    "lease_lost",
    "log_attempt",
    "log_fields",
    "log_unrecorded",
    "parse_status",
    "record_attempt",
    "refused_target",
    "rotate_endpoint_secret",
    "set_endpoint_enabled",
    "store_endpoint",
    "store_event",
    "store_event_and_claim",
    "store_events",
    "store_redelivery",
    "stored_event",
    "stored_replay_links",
    "unexpected_failure",
    "update_endpoint_fields",
    "warn_if_dropping",
]

logger = logging.getLogger("hookdispatch")


def log_fields(claim: Claim) -> dict[str, str]:
    """The structured fields of a log line about ``claim``'s delivery, for ``extra``:
    ``delivery_id``, ``endpoint_id``, ``tenant`` and ``event_id`` (ids only)."""
    return delivery_fields(claim.delivery)


def delivery_fields(delivery: Delivery) -> dict[str, str]:
    """The structured fields of a log line about ``delivery`` (see :func:`log_fields`)."""
    return {
        "delivery_id": delivery.id,
        "endpoint_id": delivery.endpoint_id,
        "tenant": delivery.tenant,
        "event_id": delivery.event_id,
    }


def check_options(*, storage: object, timeout: float, lease: float, poll_interval: float) -> None:
    """Reject option values that cannot work, naming the fix."""
    if not isinstance(storage, Storage):
        raise InvalidInputError(
            "storage must be a hookdispatch Storage, e.g. MemoryStorage() or"
            " SQLiteStorage('webhooks.db')"
        )
    if not timeout > 0:
        raise InvalidInputError("timeout must be a positive number of seconds")
    if not lease > timeout:
        raise InvalidInputError(
            f"lease ({lease} s) must be longer than timeout ({timeout} s), or another worker"
            " could claim a delivery while its attempt is still running"
        )
    if not poll_interval > 0:
        raise InvalidInputError("poll_interval must be a positive number of seconds")


def store_endpoint(
    storage: Storage,
    url: str,
    *,
    events: Iterable[str],
    secret: str | None,
    id: str | None,
    now: datetime,
    targets: TargetPolicy,
    tenant: str = DEFAULT_TENANT,
    catalog: Catalog | None = None,
    description: str = "",
    headers: Mapping[str, str] | None = None,
    metadata: Mapping[str, JSON] | None = None,
) -> Endpoint:
    """Validate (the subscriptions against ``catalog``, if any, and the URL against the
    target policy too) and store a new endpoint."""
    endpoint = Endpoint.create(
        url,
        now=now,
        events=events,
        secret=secret,
        id=id,
        tenant=tenant,
        description=description,
        headers=headers,
        metadata=metadata,
    )
    if catalog is not None:
        catalog.check_subscription(endpoint.events)
    targets.check_endpoint(endpoint.url)
    storage.add_endpoint(endpoint)
    return endpoint


def update_endpoint_fields(
    storage: Storage,
    endpoint_id: str,
    *,
    url: str | None = None,
    events: Iterable[str] | None = None,
    description: str | None = None,
    headers: Mapping[str, str] | None = None,
    metadata: Mapping[str, JSON] | None = None,
    targets: TargetPolicy,
    catalog: Catalog | None = None,
) -> Endpoint:
    """Change the given fields of a stored endpoint (``None``: unchanged), checked as
    :func:`store_endpoint` checks them: a new URL against the target policy too (a
    DNS lookup), new subscriptions against ``catalog``, if any. Everything is checked
    before the endpoint is read; its tenant, secret and state are left as they are.
    """
    changes: dict[str, object] = {}
    if url is not None:
        changes["url"] = _check_url(url)
        targets.check_endpoint(url)
    if events is not None:
        changes["events"] = checked = _check_events(events)
        if catalog is not None:
            catalog.check_subscription(checked)
    if description is not None:
        changes["description"] = check_description(description)
    if headers is not None:
        changes["headers"] = check_headers(headers)
    if metadata is not None:
        changes["metadata"] = check_metadata(metadata)
    endpoint = storage.get_endpoint(endpoint_id)
    if not changes:
        return endpoint
    endpoint = evolve(endpoint, **changes)  # type: ignore[arg-type]
    storage.update_endpoint(endpoint)
    return endpoint


def set_endpoint_enabled(storage: Storage, endpoint_id: str, *, enabled: bool) -> Endpoint:
    """Enable or disable a stored endpoint. Enabling starts its failure count afresh."""
    endpoint = storage.get_endpoint(endpoint_id)
    endpoint = evolve(
        endpoint,
        enabled=enabled,
        consecutive_failures=0 if enabled else endpoint.consecutive_failures,
    )
    storage.update_endpoint(endpoint)
    return endpoint


def rotate_endpoint_secret(
    storage: Storage, endpoint_id: str, *, grace: float, secret: str | None, now: datetime
) -> Endpoint:
    """Give a stored endpoint a new secret, the current one signing beside it for
    ``grace`` seconds (see :meth:`Endpoint.rotated`)."""
    check_grace(grace)  # before the read: a bad value is refused whatever is stored
    endpoint = storage.get_endpoint(endpoint_id).rotated(now=now, grace=grace, secret=secret)
    storage.update_endpoint(endpoint)
    return endpoint


def end_endpoint_rotation(storage: Storage, endpoint_id: str) -> Endpoint:
    """Drop a stored endpoint's previous secret: only the current one signs from now on."""
    endpoint = storage.get_endpoint(endpoint_id)
    if endpoint.previous_secret is None and endpoint.previous_secret_expires_at is None:
        return endpoint  # nothing to end: no write
    endpoint = endpoint.rotation_ended()
    storage.update_endpoint(endpoint)
    return endpoint


def store_event(
    storage: Storage,
    event_type: str,
    data: JSON,
    *,
    id: str | None,
    now: datetime,
    transaction: object | None = None,
    endpoints: Sequence[Endpoint] | None = None,
    max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    tenant: str = DEFAULT_TENANT,
    catalog: Catalog | None = None,
) -> tuple[Event, bool]:
    """Validate an event of ``tenant`` (against ``catalog`` too, if any), fan it out
    and store it with its deliveries.

    One delivery per enabled endpoint of the tenant subscribed to the type, found
    through the storage's index (``endpoints_for``). Returns the event and whether
    it was new; for an id already stored, the stored event and ``False`` (an id
    another tenant's event holds is refused). With ``transaction`` (the caller's
    connection) the rows are written through it, uncommitted: the transactional
    outbox. ``endpoints``, when given, are the fan-out already looked up.
    """
    event = checked_event(
        event_type, data, id=id, now=now, max_bytes=max_bytes, tenant=tenant, catalog=catalog
    )
    if endpoints is None and transaction is None:
        stored = storage.add_event_to_subscribers(event, now=now)  # one step, for most
    else:
        if endpoints is None:
            endpoints = storage.endpoints_for(event.tenant, event.type)
        deliveries = [Delivery.create(event, endpoint, now=now) for endpoint in endpoints]
        if transaction is not None:
            stored = storage.add_event_in_transaction(transaction, event, deliveries)
        else:
            stored = storage.add_event(event, deliveries)
    return (event, True) if stored else (stored_event(storage, event), False)


def checked_event(
    event_type: str,
    data: JSON,
    *,
    id: str | None,
    now: datetime,
    max_bytes: int,
    tenant: str,
    catalog: Catalog | None,
) -> Event:
    """A new event of ``tenant``, validated (against ``catalog`` too, if any)."""
    event = Event.create(event_type, data, now=now, id=id, max_bytes=max_bytes, tenant=tenant)
    if catalog is not None:
        catalog.check(event)
    return event


def store_event_and_claim(
    storage: Storage,
    event: Event,
    *,
    now: datetime,
    lease_until: datetime,
    limit: int,
    exclude_endpoints: Collection[str],
) -> tuple[Event, bool, list[Claim]]:
    """Store a checked event as :func:`store_event` does, and lease up to ``limit`` of
    its deliveries in the same storage call (:meth:`Storage.add_event_and_claim`):
    the event, whether it was new, and the claims."""
    stored, claims = storage.add_event_and_claim(
        event,
        now=now,
        lease_until=lease_until,
        limit=limit,
        exclude_endpoints=exclude_endpoints,
    )
    return (event, True, claims) if stored else (stored_event(storage, event), False, [])


def stored_event(storage: Storage, event: Event) -> Event:
    """The stored event with ``event``'s id, which must be the same tenant's.

    Raises InvalidEventError when another tenant's event holds the id: ids are
    global, and one tenant must learn nothing of another's events.
    """
    stored = storage.get_event(event.id)
    if stored.tenant != event.tenant:
        raise InvalidEventError(
            f"event id {event.id!r} is already taken; event ids are unique across tenants,"
            " so make them unique per tenant (prefix them with the tenant id)"
        )
    return stored


def store_events(
    storage: Storage,
    items: Iterable[tuple[str, JSON] | tuple[str, JSON, str | None]],
    *,
    now: datetime,
    max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    tenant: str = DEFAULT_TENANT,
    catalog: Catalog | None = None,
) -> list[tuple[Event, bool]]:
    """Validate a batch of ``tenant``'s events (all of it, against ``catalog`` too if
    any, before storing any), fan out, store in one go.

    ``items`` are ``(event_type, data)`` or ``(event_type, data, id)``. Returns, in
    order, each event and whether it was new (an id already stored is not). The
    fan-out is looked up once per event type of the batch. An id that another
    tenant's event holds refuses the whole batch, nothing stored.
    """
    with _collector_paused():
        return _store_batch(
            storage, items, now=now, max_bytes=max_bytes, tenant=tenant, catalog=catalog
        )


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused (if it runs) while a batch is built
    and stored.

    A batch makes several objects per event that all live until it is stored; every
    700 more start a collection that walks them, every tenth of those a walk of all
    the young ones, and now and then one walks every object of the process:
    measured, 10 to 40% of dispatch_many's time (10,000 events). None of them is
    garbage, so nothing is lost by waiting; the collector is back on as soon as the
    batch is stored. Left alone when it is off already (the application's choice,
    or another batch under way in another thread).
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


_NO_TYPE = object()


def _store_batch(
    storage: Storage,
    items: Iterable[tuple[str, JSON] | tuple[str, JSON, str | None]],
    *,
    now: datetime,
    max_bytes: int,
    tenant: str,
    catalog: Catalog | None,
) -> list[tuple[Event, bool]]:
    """:func:`store_events`' work."""
    fan_out: dict[str, list[str]] = {}  # the subscribers' ids, per event type
    batch: list[tuple[Event, list[Delivery]]] = []
    given_ids: set[str] = set()  # ids the caller chose: they may be stored already
    # What Event.create does per event, done once: the time, the tenant (checked at
    # the first item, after its type, where Event.create checks it), the ids' clock;
    # and a type is checked again only when it is another object than the last one.
    created_at, created_text = _to_the_second(now)
    tenant_checked = False
    event_ids, delivery_ids = new_ids("evt"), new_ids("dlv")
    last_type: object = _NO_TYPE
    event_type = ""
    for position, item in enumerate(items):
        if not isinstance(item, tuple) or len(item) not in (2, 3):
            raise InvalidEventError(
                f"item {position} of the batch must be (event_type, data) or (event_type, data, id)"
            )
        given = item[2] if len(item) == 3 else None
        try:
            # Event.create's checks, in its order, with its errors.
            if item[0] is not last_type:
                event_type = _check_event_type(item[0])
                last_type = item[0]
            if not tenant_checked:
                tenant = DEFAULT_TENANT if tenant is DEFAULT_TENANT else check_tenant(tenant)
                tenant_checked = True
            event_id = next(event_ids) if given is None else _check_id(given, what="event id")
            body = _event_body(event_id, event_type, created_text, item[1], max_bytes)
            event = Event(event_id, event_type, created_at, item[1], body, tenant)
            if catalog is not None:
                catalog.check(event)
        except InvalidEventError as exc:
            raise InvalidEventError(f"item {position} of the batch: {exc}") from None
        subscribers = fan_out.get(event_type)
        if subscribers is None:
            endpoints = storage.endpoints_for(tenant, event_type)
            subscribers = fan_out[event_type] = [endpoint.id for endpoint in endpoints]
        batch.append((event, new_deliveries(event, subscribers, now, delivery_ids)))
        if given is not None:
            given_ids.add(event_id)
    # An id another tenant's event holds refuses the batch before anything is stored
    # (one read per id the caller chose; a generated one is new).
    for position, (event, _) in enumerate(batch):  # before anything is stored
        if event.id in given_ids:
            try:
                stored_event(storage, event)
            except UnknownEventError:
                continue
            except InvalidEventError as exc:
                raise InvalidEventError(f"item {position} of the batch: {exc}") from None
    results = storage.add_events(batch)
    return [(event, stored) for (event, _), stored in zip(batch, results, strict=True)]


def check_transaction_mode(*, inline: bool) -> None:
    """A transactional dispatch cannot be delivered inline: nothing is visible yet."""
    if inline:
        raise InvalidInputError(
            "transaction= needs background delivery (workers > 0, or a worker process):"
            " inline mode would have to send before you commit"
        )


def stored_replay_links(storage: Storage, delivery: Delivery) -> ReplayLinks:
    """``delivery``'s replay links (:class:`ReplayLinks`), from the deliveries of its
    event to its endpoint: an index lookup of a few rows."""
    sends = storage.find_deliveries(
        DeliveryQuery(
            event_id=delivery.event_id, endpoint_id=delivery.endpoint_id, limit=MAX_PAGE_SIZE
        )
    )
    return replay_links(delivery, sends)


def store_redelivery(storage: Storage, delivery_id: str, *, now: datetime) -> Delivery:
    """A new delivery of a finished delivery's event to the same endpoint."""
    old = storage.get_delivery(delivery_id)
    if old.status is DeliveryStatus.PENDING:
        raise InvalidStateError(
            f"delivery {delivery_id!r} is still pending; it will be attempted as scheduled"
        )
    event = storage.get_event(old.event_id)
    endpoint = storage.get_endpoint(old.endpoint_id)
    if endpoint.tenant != event.tenant:  # the endpoint was moved to another tenant since
        raise InvalidStateError(
            f"delivery {delivery_id!r} cannot be sent again: its endpoint belongs to another"
            " tenant now than its event does"
        )
    fresh = Delivery.create(event, endpoint, now=now)
    storage.add_deliveries([fresh])
    return fresh


def record_attempt(
    storage: Storage,
    claim: Claim,
    attempt: Attempt,
    delivery: Delivery,
    *,
    disable_after: int | None = None,
) -> tuple[bool, Endpoint | None, str]:
    """Store an attempt's outcome, and act on what it says about the endpoint.

    A 410 Gone disables the endpoint, and so does the ``disable_after``-th failed
    delivery in a row. An endpoint-wide failure (see :func:`endpoint_down`) moves
    the endpoint's other due deliveries to this one's retry time: backoff for the
    endpoint, so a dead one's backlog waits instead of being skipped by every claim.
    Returns whether the lease still held, the endpoint if this disabled it, and why.
    """
    held = storage.complete(claim, attempt, delivery)
    if held and delivery.next_attempt_at is not None and endpoint_down(attempt):
        storage.defer_endpoint(claim.endpoint.id, until=delivery.next_attempt_at)
    if not held:
        lease_lost(delivery)
    gone = endpoint_gone(attempt)
    if not gone and not (held and disable_after and delivery.status is DeliveryStatus.FAILED):
        return held, None, ""
    endpoint = storage.get_endpoint(claim.endpoint.id)  # one read serves both checks
    if gone:
        reason = "the receiver answered 410 Gone"
    elif disable_after and endpoint.consecutive_failures >= disable_after:
        reason = f"{endpoint.consecutive_failures} deliveries in a row failed"
    else:
        reason = ""
    if not reason or not endpoint.enabled:
        return held, None, ""
    disabled = set_endpoint_enabled(storage, claim.endpoint.id, enabled=False)
    logger.warning(
        "endpoint %s disabled: %s; its pending deliveries wait until it is enabled again",
        disabled.id,
        reason,
        extra=log_fields(claim),
    )
    return held, disabled, reason


def log_unrecorded(claim: Claim) -> None:
    """Log (with the exception being handled) an attempt whose record was not stored."""
    logger.exception(
        "recording the attempt of %s failed; it is retried when its lease ends",
        claim.delivery.id,
        extra=log_fields(claim),
    )


def lease_lost(delivery: Delivery) -> None:
    """Log that a worker's lease ran out before it recorded its attempt."""
    logger.warning(
        "lease on %s expired during its attempt; another worker owns it now",
        delivery.id,
        extra=delivery_fields(delivery),
    )


def parse_status(value: DeliveryStatus | str | None) -> DeliveryStatus | None:
    """A delivery status from its name, with an error that lists the valid ones."""
    if value is None:
        return None
    try:
        return DeliveryStatus(value)
    except ValueError:
        known = ", ".join(s.value for s in DeliveryStatus)
        raise InvalidInputError(f"unknown delivery status {value!r}; use one of {known}") from None


def warn_if_dropping(storage: Storage) -> None:
    """At close: warn (ResourceWarning) when pending retries die with MemoryStorage."""
    if not isinstance(storage, MemoryStorage):
        return
    pending = storage.list_deliveries(status=DeliveryStatus.PENDING)
    if pending:
        warnings.warn(
            f"{len(pending)} deliveries are still pending in MemoryStorage and will be"
            " lost with this process; use SQLiteStorage to keep retries across restarts",
            ResourceWarning,
            stacklevel=4,
        )


def refused_target(claim: Claim, targets: TargetPolicy) -> BlockedTargetError | None:
    """The outcome for an endpoint the policy refuses on its face (scheme, literal IP).

    Checked before every attempt, whatever the transport, so an endpoint stored
    under a looser policy is not sent to under a stricter one.
    """
    try:
        targets.check_url(claim.endpoint.url)
    except InvalidEndpointError as exc:
        return BlockedTargetError(str(exc))
    return None


def unexpected_failure(exc: Exception) -> TransportError:
    """The outcome recorded when a transport raised instead of returning an error."""
    return InvalidResponseError(f"transport raised {type(exc).__name__}")


def log_attempt(claim: Claim, attempt: Attempt, delivery: Delivery) -> None:
    """One log line per attempt. Ids and outcome only: never the URL or the secret.

    Each line's ``extra`` holds ``delivery_id``, ``endpoint_id``, ``tenant`` and
    ``event_id``, and ``attempt`` (its number) and ``status_code`` (``None``
    without an answer), for structured log handlers.
    """
    extra: dict[str, object] = {
        **log_fields(claim),
        "attempt": attempt.number,
        "status_code": attempt.status_code,
    }
    if attempt.succeeded:
        logger.debug(
            "delivered %s (event %s) to endpoint %s on attempt %d: HTTP %s",
            delivery.id, delivery.event_id, delivery.endpoint_id, attempt.number,
            attempt.status_code, extra=extra,
        )  # fmt: skip
    elif endpoint_gone(attempt):
        logger.info(
            "attempt %d of %s (event %s) to endpoint %s: the receiver answered 410 Gone;"
            " the delivery waits until the endpoint is enabled again",
            attempt.number, delivery.id, delivery.event_id, delivery.endpoint_id, extra=extra,
        )  # fmt: skip
    elif delivery.status is DeliveryStatus.PENDING:
        logger.info(
            "attempt %d of %s (event %s) to endpoint %s failed (%s); retry at %s",
            attempt.number, delivery.id, delivery.event_id, delivery.endpoint_id,
            attempt.error, delivery.next_attempt_at, extra=extra,
        )  # fmt: skip
    else:
        logger.warning(
            "giving up on %s (event %s) to endpoint %s after %d attempts; last error: %s",
            delivery.id, delivery.event_id, delivery.endpoint_id, attempt.number, attempt.error,
            extra=extra,
        )  # fmt: skip
