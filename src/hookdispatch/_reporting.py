"""What a dispatcher reports about each attempt it recorded: :class:`AttemptReport`.

Built once, in the shared driver, from the attempt's record, the delivery's next
state and what recording it did (whether the lease held, whether it disabled the
endpoint); then handed to the ``on_attempt`` hook and to the telemetry, if any.
"""

from __future__ import annotations

import enum
from datetime import datetime

from attrs import frozen

from ._core import Claim, endpoint_gone
from ._models import Attempt, Delivery, DeliveryStatus, Endpoint
from .exceptions import FailureKind

__all__ = ["AttemptDecision", "AttemptReport", "report_fields", "report_of"]


class AttemptDecision(enum.Enum):
    """What the dispatcher decided after an attempt, as recorded in storage."""

    DELIVERED = "delivered"
    """The receiver answered 2xx: the delivery succeeded."""
    RETRY = "retry"
    """The attempt failed and another is scheduled, at ``next_attempt_at``."""
    GAVE_UP = "gave_up"
    """The attempt failed and the retry policy has no attempt left (or the target
    policy refuses the endpoint): the delivery failed."""
    ENDPOINT_DISABLED = "endpoint_disabled"
    """The endpoint was disabled: the receiver answered ``410 Gone`` (the delivery
    waits, pending, until the endpoint is enabled), or this failure was the
    ``disable_after``-th failed delivery in a row (the delivery failed)."""
    LEASE_LOST = "lease_lost"
    """The attempt took longer than the lease: another worker had claimed the
    delivery meanwhile. The attempt is recorded; the delivery is the other
    worker's, and its state is not this attempt's to decide."""


@frozen
class AttemptReport:
    """One recorded attempt, as the ``on_attempt`` hook of :class:`Dispatcher` and
    :class:`AsyncDispatcher` receives it.

    Only ids, the outcome and the decision: never the endpoint's URL (which may
    carry a token), its secret or headers, the event's data or the receiver's
    answer body. ``error`` is the attempt's recorded error, from which the URL is
    already removed.
    """

    event_id: str
    """The event's id (``webhook-id`` on the wire)."""
    event_type: str
    """The event's type, such as ``user.created``."""
    delivery_id: str
    """The delivery (one event to one endpoint) this attempt belongs to."""
    endpoint_id: str
    """The endpoint the request went to."""
    tenant: str
    """The tenant of the event and endpoint."""
    attempt: int
    """The attempt's number: 1 for the first try, 2 for the first retry, ..."""
    started_at: datetime
    """When the attempt started (the dispatcher's clock, UTC)."""
    duration: float
    """Seconds from the start of the attempt to its outcome."""
    status_code: int | None
    """The receiver's HTTP status; ``None`` when there was no answer."""
    failure: FailureKind | None
    """Why the attempt failed; ``None`` when it succeeded."""
    error: str | None
    """The recorded error (``HTTP 503``, ``timeout: ...``); ``None`` on success."""
    decision: AttemptDecision
    """What the dispatcher did next."""
    next_attempt_at: datetime | None
    """With :attr:`AttemptDecision.RETRY`: when the next attempt is due."""

    @property
    def succeeded(self) -> bool:
        """Whether the receiver answered 2xx."""
        return self.failure is None


def decision_of(
    attempt: Attempt, delivery: Delivery, *, held: bool, disabled: Endpoint | None
) -> AttemptDecision:
    """The decision a recorded attempt came to (see :class:`AttemptDecision`)."""
    if not held:
        return AttemptDecision.LEASE_LOST
    if disabled is not None or endpoint_gone(attempt):
        return AttemptDecision.ENDPOINT_DISABLED
    if attempt.succeeded:
        return AttemptDecision.DELIVERED
    if delivery.status is DeliveryStatus.PENDING:
        return AttemptDecision.RETRY
    return AttemptDecision.GAVE_UP


def report_of(
    claim: Claim, attempt: Attempt, delivery: Delivery, *, held: bool, disabled: Endpoint | None
) -> AttemptReport:
    """The report of an attempt just recorded: ``held``, whether the lease still
    held; ``disabled``, the endpoint if recording disabled it."""
    decision = decision_of(attempt, delivery, held=held, disabled=disabled)
    return AttemptReport(
        event_id=delivery.event_id,
        event_type=claim.event_type,
        delivery_id=delivery.id,
        endpoint_id=delivery.endpoint_id,
        tenant=delivery.tenant,
        attempt=attempt.number,
        started_at=attempt.started_at,
        duration=attempt.duration,
        status_code=attempt.status_code,
        failure=attempt.failure,
        error=attempt.error,
        decision=decision,
        next_attempt_at=delivery.next_attempt_at if decision is AttemptDecision.RETRY else None,
    )


def report_fields(report: AttemptReport) -> dict[str, str]:
    """The structured fields of a log line about ``report``'s attempt, for ``extra``."""
    return {
        "delivery_id": report.delivery_id,
        "endpoint_id": report.endpoint_id,
        "tenant": report.tenant,
        "event_id": report.event_id,
    }
