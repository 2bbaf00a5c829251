"""The sans-I/O core: what to send for a claimed delivery, and what its outcome means.

``prepare`` turns a claim into a signed :class:`Request`; ``conclude`` turns the
transport's answer into the :class:`Attempt` record and the delivery's next state.
Both are pure (no sockets, no clocks, no storage), so the sync and async drivers
share them and they are tested without either.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from attrs import field, frozen

from ._models import (
    ENCRYPTED_SECRET_PREFIX,
    RESERVED_HEADERS,
    Attempt,
    Delivery,
    DeliveryStatus,
    Endpoint,
    new_id,
)
from ._policy import RetryPolicy, parse_retry_after
from ._signing import sign_hex, sign_standard
from ._targets import TargetPolicy
from .exceptions import FailureKind, StorageError, TransportError

__all__ = [
    "GONE",
    "Claim",
    "Outcome",
    "Request",
    "Response",
    "conclude",
    "endpoint_down",
    "endpoint_gone",
    "prepare",
    "without_url",
]

USER_AGENT = "hookdispatch/0.1"
GONE = 410
"""The status that disables an endpoint: the receiver says it will never accept again."""


def endpoint_down(attempt: Attempt) -> bool:
    """Whether this failure speaks for the whole endpoint, not just this delivery.

    No usable answer (timeout, connection, TLS, garbled HTTP), a 5xx or a 429: the
    other deliveries to the endpoint would fare no better right now. A 4xx (other
    than 429) is about this one request and says nothing of the rest.
    """
    if attempt.failure in (None, FailureKind.BLOCKED):
        return False
    if attempt.failure is FailureKind.HTTP_STATUS:
        code = attempt.status_code or 0
        return code >= 500 or code == 429
    return True


def endpoint_gone(attempt: Attempt) -> bool:
    """Whether this attempt's answer tells us to disable the endpoint (``410 Gone``)."""
    return attempt.status_code == GONE


@frozen
class Claim:
    """A delivery a worker holds under a lease, with what it needs to send it.

    Storage backends return these from ``claim``; ``lease`` is the token that proves
    the worker still holds the delivery when it records the outcome.
    """

    delivery: Delivery
    endpoint: Endpoint
    event_type: str
    body: bytes = field(repr=False)
    lease: str = field(repr=False)


@frozen
class Request:
    """One HTTP POST to make, with its total deadline in seconds.

    ``targets`` is the :class:`TargetPolicy` every connection made for this request
    must pass, checked on the address actually connected to. The dispatchers always
    set it (their own policy); a request without one is held to the transport's own
    ``targets``, else to the default policy. ``url`` is never shown in a repr: it
    may carry a token.
    """

    url: str = field(repr=False)
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(repr=False)
    timeout: float
    targets: TargetPolicy | None = field(default=None, repr=False)


@frozen
class Response:
    """What the receiver answered. ``body`` holds at most the transport's cap.

    ``headers`` maps header names to values; look names up in lower case (the
    built-in transports return a case-insensitive or lower-cased mapping).
    """

    status_code: int
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(repr=False)


Outcome = Response | TransportError
"""What a transport returns for one request: a response, or why there was none."""


def prepare(
    claim: Claim, *, now: datetime, timeout: float, targets: TargetPolicy | None = None
) -> Request:
    """The signed POST for ``claim``: the event body as stored, both signature schemes,
    to be sent under the target policy ``targets``.

    The Standard Webhooks timestamp is ``now``, fresh on every attempt; ``webhook-id``
    is the event id, the same on every attempt and endpoint (receivers dedupe on it).

    During a rotation's overlap (the endpoint's previous secret still live at
    ``now``), ``webhook-signature`` carries two signatures, the new secret's first,
    then the previous one's (space-separated, as Standard Webhooks allows), and the
    single-valued ``X-Webhook-Signature`` keeps the previous secret's until the
    overlap ends: a receiver that checks only that header goes on working unchanged,
    and has the whole grace period to accept the new secret too.

    The endpoint's custom headers go along; none of ours is ever replaced by one.

    Raises StorageError, signing nothing, for a secret that is still encrypted (a
    storage written through EncryptedStorage, opened without it): the delivery stays
    pending, to be sent once the storage is opened with its keys.
    """
    endpoint, body, event_id = claim.endpoint, claim.body, claim.delivery.event_id
    secret = endpoint.secret
    previous = endpoint.previous_secret_live(now)
    if secret.startswith(ENCRYPTED_SECRET_PREFIX) or (
        previous is not None and previous.startswith(ENCRYPTED_SECRET_PREFIX)
    ):
        raise StorageError(
            f"the secret of endpoint {endpoint.id!r} is encrypted; open the storage with"
            " EncryptedStorage(storage, keys=[...]) (for the hookdispatch command: set"
            " HOOKDISPATCH_SECRET_KEYS) to send to it"
        )
    timestamp = int(now.timestamp())
    standard = sign_standard(body, secret, msg_id=event_id, timestamp=timestamp)
    if previous is not None:
        legacy = sign_hex(body, previous)
        standard += " " + sign_standard(body, previous, msg_id=event_id, timestamp=timestamp)
    else:
        legacy = sign_hex(body, secret)
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "accept-encoding": "identity",
        "x-webhook-signature": legacy,
        # Standard Webhooks: the event id (the same on every attempt), this
        # attempt's timestamp, and the signature over both and the body (one per
        # live secret).
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard,
    }
    if endpoint.headers:
        # The endpoint's own headers (an auth token its receiver expects, say) after
        # ours. Validation keeps their names off ours and the hop-by-hop ones; this
        # keeps them off too for a row that skipped it (written by hand, say).
        for name, value in endpoint.headers.items():
            key = name.lower()
            if key not in RESERVED_HEADERS and not key.startswith("proxy-"):
                headers[name] = value
    return Request(
        url=claim.endpoint.url, headers=headers, body=body, timeout=timeout, targets=targets
    )


def _describe(
    outcome: Outcome, url: str
) -> tuple[int | None, FailureKind | None, str | None, bytes]:
    if isinstance(outcome, Response):
        if 200 <= outcome.status_code < 300:
            return outcome.status_code, None, None, outcome.body
        return (
            outcome.status_code,
            FailureKind.HTTP_STATUS,
            f"HTTP {outcome.status_code}",
            outcome.body,
        )
    # A transport may quote the endpoint URL, which may carry a token.
    return None, outcome.kind, f"{outcome.kind.value}: {without_url(str(outcome), url)}", b""


def without_url(message: str, *urls: str) -> str:
    """``message`` with every spelling in ``urls`` of an endpoint URL replaced: no URL
    (which may carry a token) goes into an attempt's record, a log line or an error."""
    for url in urls:
        if url and url in message:
            message = message.replace(url, "<endpoint URL>")
    return message


def conclude(
    claim: Claim,
    outcome: Outcome,
    *,
    started_at: datetime,
    duration: float,
    now: datetime,
    policy: RetryPolicy,
) -> tuple[Attempt, Delivery]:
    """Record one attempt and decide the delivery's next state.

    2xx: succeeded. ``410 Gone``: the delivery stays pending, due now, for the
    driver disables the endpoint (see :func:`endpoint_gone`). Anything else: retry
    at the time ``policy`` gives (no sooner than a 429/503's ``Retry-After``), or
    failed when it gives up. Returns the attempt record and the updated delivery.
    """
    delivery = claim.delivery
    number = delivery.attempt_count + 1
    status_code, failure, error, body = _describe(outcome, claim.endpoint.url)
    attempt = Attempt(
        id=new_id("att"),
        delivery_id=delivery.id,
        number=number,
        started_at=started_at,
        duration=duration,
        status_code=status_code,
        failure=failure,
        error=error,
        response_body=body,
    )
    if failure is None:
        status, next_at = DeliveryStatus.SUCCEEDED, None
    elif failure is FailureKind.BLOCKED:
        status, next_at = DeliveryStatus.FAILED, None  # the policy will refuse it again
    elif status_code == GONE:
        # The receiver says the endpoint is gone: the driver disables it, and this
        # delivery waits (pending, due now) for the endpoint to be enabled again.
        status, next_at = DeliveryStatus.PENDING, now
        error = f"HTTP {GONE}: endpoint disabled"
    else:
        retry_after = None
        if isinstance(outcome, Response) and status_code in (429, 503):
            retry_after = parse_retry_after(outcome.headers.get("retry-after"), now=now)
        next_at = policy.next_attempt_at(
            attempt_number=number,
            first_due_at=delivery.created_at,
            now=now,
            retry_after=retry_after,
        )
        status = DeliveryStatus.FAILED if next_at is None else DeliveryStatus.PENDING
    updated = Delivery(
        id=delivery.id,
        event_id=delivery.event_id,
        endpoint_id=delivery.endpoint_id,
        status=status,
        attempt_count=number,
        next_attempt_at=next_at,
        last_error=error,
        created_at=delivery.created_at,
        updated_at=now,
        tenant=delivery.tenant,
        event_type=delivery.event_type,
    )
    return attempt, updated
