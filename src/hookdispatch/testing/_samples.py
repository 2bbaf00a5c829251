"""Sample values for the conformance suite: endpoints, events, deliveries, outcomes.

Times start at :data:`BASE`, which has microseconds on purpose: a backend must give
back the exact datetimes it was given.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

from attrs import evolve

from .._core import Claim
from .._models import DEFAULT_TENANT, Attempt, Delivery, DeliveryStatus, Endpoint, Event
from ..exceptions import FailureKind
from ..storage import Storage

__all__ = [
    "BASE",
    "LEASE",
    "SECRET",
    "Result",
    "at",
    "make_delivery",
    "make_endpoint",
    "make_event",
    "outcome",
    "store_events",
]

BASE = datetime(2024, 6, 30, 15, 41, 23, 123456, tzinfo=UTC)
"""The suite's "now"; storage takes time as arguments, so no clock is needed."""

LEASE = timedelta(seconds=60)

SECRET = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"  # noqa: S105 - a sample, not a credential

Result = Literal["succeeded", "retry", "failed"]

_serial = itertools.count(1)
_run = secrets.token_hex(3)  # ids never repeat, even in a store that outlived a run


def _next_id(prefix: str) -> str:
    return f"{prefix}_{_run}{next(_serial):06d}"


def at(seconds: float) -> datetime:
    """:data:`BASE` plus ``seconds``."""
    return BASE + timedelta(seconds=seconds)


def make_endpoint(
    *,
    id: str | None = None,
    created_at: datetime = BASE,
    events: Sequence[str] = ("*",),
    enabled: bool = True,
    url: str = "https://example.com/hooks",
    tenant: str = DEFAULT_TENANT,
) -> Endpoint:
    return Endpoint(
        id=_next_id("ep") if id is None else id,
        url=url,
        secret=SECRET,
        events=tuple(events),
        enabled=enabled,
        created_at=created_at,
        tenant=tenant,
    )


def make_event(
    *,
    id: str | None = None,
    type: str = "user.created",
    n: int = 0,
    tenant: str = DEFAULT_TENANT,
    created_at: datetime = BASE,
) -> Event:
    return Event.create(
        type, {"n": n, "name": "Zoë"}, now=created_at, id=id or _next_id("evt"), tenant=tenant
    )


def make_delivery(
    event: Event,
    endpoint: Endpoint,
    *,
    due: datetime = BASE,
    created_at: datetime | None = None,
) -> Delivery:
    created = due if created_at is None else created_at
    return Delivery(
        id=_next_id("dlv"),
        event_id=event.id,
        endpoint_id=endpoint.id,
        status=DeliveryStatus.PENDING,
        attempt_count=0,
        next_attempt_at=due,
        last_error=None,
        created_at=created,
        updated_at=created,
        tenant=event.tenant,
        event_type=event.type,
    )


def store_events(
    storage: Storage,
    count: int,
    *,
    endpoint: Endpoint | None = None,
    due: datetime = BASE,
) -> list[Delivery]:
    """Store ``count`` events with one delivery each (and the endpoint if new)."""
    if endpoint is None:
        endpoint = make_endpoint()
        storage.add_endpoint(endpoint)
    deliveries = []
    for n in range(count):
        event = make_event(n=n)
        delivery = make_delivery(event, endpoint, due=due)
        storage.add_event(event, [delivery])
        deliveries.append(delivery)
    return deliveries


def outcome(
    claim: Claim,
    result: Result,
    *,
    now: datetime,
    retry_at: datetime | None = None,
    number: int | None = None,
) -> tuple[Attempt, Delivery]:
    """The attempt record and next delivery state a worker would store for ``claim``."""
    number = claim.delivery.attempt_count + 1 if number is None else number
    ok = result == "succeeded"
    attempt = Attempt(
        id=_next_id("att"),
        delivery_id=claim.delivery.id,
        number=number,
        started_at=now,
        duration=0.125,
        status_code=200 if ok else 503,
        failure=None if ok else FailureKind.HTTP_STATUS,
        error=None if ok else "HTTP 503",
        response_body=b"ok" if ok else b"busy \x00\xff",
    )
    status = {
        "succeeded": DeliveryStatus.SUCCEEDED,
        "retry": DeliveryStatus.PENDING,
        "failed": DeliveryStatus.FAILED,
    }[result]
    if result == "retry" and retry_at is None:
        retry_at = now + timedelta(seconds=30)
    delivery = evolve(
        claim.delivery,
        status=status,
        attempt_count=number,
        next_attempt_at=retry_at if result == "retry" else None,
        last_error=attempt.error,
        updated_at=now,
    )
    return attempt, delivery
