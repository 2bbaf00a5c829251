"""What the portal does, shared by its pages and its JSON API: each operation scoped
to the visitor's tenant, validated by the library itself, with errors tied to the
form field they are about.

Every lookup by id passes the visitor's tenant (``None`` for an operator) to the
dispatcher, which answers another tenant's id with the same NotFoundError as an
unknown one. Calls that take no ``tenant=`` (disable, rotate, redeliver...) are made
only after such a lookup.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

from attrs import evolve, field, frozen

from .._core import Claim, prepare
from .._models import (
    RESERVED_HEADERS,
    Attempt,
    Delivery,
    DeliveryStatus,
    Endpoint,
    Event,
    check_description,
)
from .._types import JSON
from ..catalog import Catalog
from ..exceptions import (
    HookDispatchError,
    InvalidEndpointError,
    InvalidInputError,
    InvalidStateError,
)
from ._auth import Visitor
from ._backend import Backend

__all__ = [
    "GRACE_CHOICES",
    "REPLAY_LIMIT",
    "FieldErrors",
    "Health",
    "endpoint_field",
    "health",
    "parse_events",
    "parse_json_data",
    "parse_moment",
    "replay_candidates",
    "sent_headers",
]

REDACTED = "[redacted]"
REPLAY_LIMIT = 10_000
"""The most deliveries one "replay all failed since" sends again."""
GRACE_CHOICES: tuple[tuple[int, str], ...] = (
    (0, "none: the old secret stops at once (for a leaked secret)"),
    (3600, "1 hour"),
    (86400, "24 hours"),
    (7 * 86400, "7 days"),
)
"""The rotation grace periods the page offers, in seconds, with their labels."""
_PLACEHOLDER_SECRET = "whsec_cmVkYWN0ZWQtcmVkYWN0ZWQtcmVkYWN0ZWQ="  # noqa: S105 - not a secret


class FieldErrors(HookDispatchError):
    """Input the library refused, by form field: ``{"url": "message"}``."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__("; ".join(f"{name}: {message}" for name, message in errors.items()))
        self.errors = dict(errors)


@frozen
class Health:
    """How an endpoint has been doing lately: over its last ``finished`` finished
    deliveries, the share that succeeded, and its latest failure, if any."""

    finished: int
    succeeded: int
    last_failure_at: datetime | None = None
    last_error: str | None = field(default=None)

    @property
    def success_rate(self) -> float | None:
        """From 0 to 1; ``None`` with nothing finished yet."""
        return None if self.finished == 0 else self.succeeded / self.finished


async def health(backend: Backend, endpoint: Endpoint, *, recent: int = 20) -> Health:
    """The endpoint's :class:`Health` over its ``recent`` latest deliveries."""
    page = await backend.deliveries(
        tenant=endpoint.tenant, endpoint_id=endpoint.id, limit=recent, newest_first=True
    )
    finished = [d for d in page if d.status in (DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED)]
    failures = [d for d in finished if d.status is DeliveryStatus.FAILED]
    last = failures[0] if failures else None
    return Health(
        finished=len(finished),
        succeeded=len(finished) - len(failures),
        last_failure_at=None if last is None else last.updated_at,
        last_error=None if last is None else last.last_error,
    )


def parse_events(chosen: Iterable[str], other: str = "") -> list[str]:
    """The subscription patterns a form picked: the ticked ones, then those typed in
    ``other`` (separated by commas or spaces). The library checks them."""
    patterns = [value.strip() for value in chosen if value.strip()]
    patterns += [part for part in other.replace(",", " ").split() if part]
    return list(dict.fromkeys(patterns))


def endpoint_field(
    exc: InvalidInputError, *, events: list[str], description: str, catalog: Catalog | None
) -> str:
    """Which field of the endpoint form the library's error is about.

    The library's own checks decide: the one that refuses the field's value is the
    field at fault; the URL (its form and the target policy) otherwise.
    """
    from .._models import _check_events  # noqa: PLC0415 - the library's own check

    if not isinstance(exc, InvalidEndpointError):
        return "url"
    try:
        check_description(description)
    except InvalidInputError:
        return "description"
    try:
        _check_events(events)
        if catalog is not None:
            catalog.check_subscription(events)
    except InvalidInputError:
        return "events"
    return "url"


def parse_moment(name: str, value: str | None) -> datetime | None:
    """A time typed in a form or a query (``2024-06-30T15:41``, read as UTC, or ISO
    8601 with an offset); ``None`` for nothing. Raises FieldErrors naming ``name``."""
    if value is None or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise FieldErrors(
            {name: f"{name} must be a date and time such as 2024-06-30T15:41 (UTC)"}
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_json_data(text: str) -> JSON:
    """The event data typed in the test form, as JSON. Raises FieldErrors for ``data``."""
    if not text.strip():
        return None
    try:
        value: JSON = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise FieldErrors({"data": f"the event data is not valid JSON: {exc}"}) from None
    return value


async def replay_candidates(
    backend: Backend, visitor: Visitor, endpoint: Endpoint, since: datetime
) -> list[Delivery]:
    """The endpoint's failed deliveries created since ``since`` that were not replayed
    yet: for each event, its latest delivery to the endpoint, if that one failed (a
    replayed delivery has a newer one, finished or not). Oldest first, at most
    :data:`REPLAY_LIMIT`."""
    latest: dict[str, Delivery] = {}
    after: str | None = None
    while True:
        page = await backend.deliveries(
            tenant=visitor.tenant,
            endpoint_id=endpoint.id,
            since=since,
            after=after,
            limit=1000,
            newest_first=False,
        )
        for delivery in page:
            latest[delivery.event_id] = delivery
        if page.next_cursor is None:
            break
        after = page.next_cursor
    failed = [d for d in latest.values() if d.status is DeliveryStatus.FAILED]
    return failed[:REPLAY_LIMIT]


async def replay(backend: Backend, endpoint: Endpoint, deliveries: list[Delivery]) -> list[str]:
    """Send ``deliveries`` (all to ``endpoint``) again; the new deliveries' ids."""
    if not endpoint.enabled:
        raise InvalidStateError(
            f"endpoint {endpoint.id!r} is disabled; enable it before replaying its deliveries"
        )
    return [(await backend.redeliver(d.id)).id for d in deliveries]


def sent_headers(
    endpoint: Endpoint | None, delivery: Delivery, event: Event, attempt: Attempt
) -> list[tuple[str, str]]:
    """The headers an attempt sent, rebuilt by the code that sent them (``prepare``),
    with every signature and every custom header value redacted.

    The secrets are never read: the endpoint is signed with a placeholder, and the
    signatures are replaced anyway. Custom headers are the endpoint's current ones;
    for a deleted endpoint they are unknown and left out.
    """
    now = attempt.started_at
    if endpoint is None:
        stand_in = Endpoint(
            id=delivery.endpoint_id,
            url="https://deleted.invalid/",
            secret=_PLACEHOLDER_SECRET,
            events=("*",),
            enabled=False,
            created_at=delivery.created_at,
            tenant=delivery.tenant,
        )
    else:
        previous = endpoint.previous_secret_live(now)
        stand_in = evolve(
            endpoint,
            secret=_PLACEHOLDER_SECRET,
            previous_secret=None if previous is None else _PLACEHOLDER_SECRET,
        )
    claim = Claim(
        delivery=delivery, endpoint=stand_in, event_type=event.type, body=event.body, lease=""
    )
    request = prepare(claim, now=now, timeout=0.0)
    shown: list[tuple[str, str]] = []
    for name, sent in request.headers.items():
        key = name.lower()
        if key == "webhook-signature":
            sent = " ".join(f"v1,{REDACTED}" for _ in sent.split())  # noqa: PLW2901
        elif key == "x-webhook-signature" or key not in RESERVED_HEADERS:
            sent = REDACTED  # noqa: PLW2901
        shown.append((name, sent))
    shown.append(("content-length", str(len(event.body))))
    return shown


def until_grace_ends(endpoint: Endpoint, now: datetime | None = None) -> datetime | None:
    """When the endpoint's previous secret stops signing, if it still does."""
    moment = now or datetime.now(UTC)
    if endpoint.previous_secret_live(moment) is None:
        return None
    return endpoint.previous_secret_expires_at


def default_since() -> datetime:
    """The replay form's default: 24 hours ago, to the minute."""
    return (datetime.now(UTC) - timedelta(days=1)).replace(second=0, microsecond=0)
