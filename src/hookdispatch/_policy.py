"""When to try again: the retry policy, built on tenacity's stop and wait strategies.

The decision is a pure function of the policy and the delivery's history: after
attempt ``n`` failed, either give up or retry ``wait`` seconds later. Nothing here
sleeps; drivers persist the decision as the delivery's ``next_attempt_at``.
"""

from __future__ import annotations

import email.utils
import math
from datetime import UTC, datetime, timedelta

import tenacity
from attrs import field, frozen
from tenacity.stop import stop_base
from tenacity.wait import wait_base

__all__ = ["RetryPolicy", "parse_retry_after"]

# tenacity's strategies read a RetryCallState; they need no Retrying loop behind it.
_NO_LOOP = tenacity.Retrying()


@frozen(kw_only=True)
class RetryPolicy:
    """How many attempts a delivery gets and how long to wait between them.

    The default: 1 attempt and up to 3 retries (``max_attempts=4``), waiting
    ``initial_wait * 2**(n-1)`` seconds after the n-th failed attempt, plus a random
    jitter of up to ``jitter`` seconds, never more than ``max_wait``: about 1, 2 and 4
    seconds (each plus up to 1 s) with the defaults. This is tenacity's
    ``wait_exponential_jitter`` and ``stop_after_attempt``.

    For full control pass any tenacity strategies as ``stop`` and ``wait``
    (for example ``tenacity.stop_after_delay(3600) | tenacity.stop_after_attempt(10)``);
    they see ``attempt_number`` and ``seconds_since_start`` of the delivery.

    A ``429`` or ``503`` response with a ``Retry-After`` header (seconds or an HTTP
    date) pushes the next attempt back to at least that time, capped at
    ``max_retry_after`` seconds (one hour); it never adds attempts.
    """

    max_attempts: int = field(default=4)
    initial_wait: float = field(default=1.0)
    max_wait: float = field(default=60.0)
    jitter: float = field(default=1.0)
    max_retry_after: float = field(default=3600.0)
    stop: stop_base | None = field(default=None)
    wait: wait_base | None = field(default=None)

    def __attrs_post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 (1 means no retries)")
        if not all(
            math.isfinite(value) and value >= 0
            for value in (self.initial_wait, self.max_wait, self.jitter, self.max_retry_after)
        ):
            raise ValueError(
                "initial_wait, max_wait, jitter and max_retry_after must be finite and not negative"
            )

    def _stop(self) -> stop_base:
        return self.stop or tenacity.stop_after_attempt(self.max_attempts)

    def _wait(self) -> wait_base:
        return self.wait or tenacity.wait_exponential_jitter(
            multiplier=self.initial_wait, max=self.max_wait, jitter=self.jitter
        )

    def next_attempt_at(
        self,
        *,
        attempt_number: int,
        first_due_at: datetime,
        now: datetime,
        retry_after: float | None = None,
    ) -> datetime | None:
        """After failed attempt ``attempt_number`` (1-based): when to retry, or ``None`` to give up.

        ``first_due_at`` is when the delivery first became due; tenacity sees the time
        since then as ``seconds_since_start``. ``retry_after`` is the receiver's
        ``Retry-After`` in seconds, if it sent one with a 429 or 503.
        """
        state = tenacity.RetryCallState(retry_object=_NO_LOOP, fn=None, args=(), kwargs={})
        state.attempt_number = attempt_number
        state.start_time = 0.0
        state.outcome_timestamp = max(0.0, (now - first_due_at).total_seconds())
        if self._stop()(state):
            return None
        wait = max(0.0, self._wait()(state))
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_retry_after))
        return now + timedelta(seconds=wait)


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date).

    ``None`` when absent or unreadable; a date in the past means 0.
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())
