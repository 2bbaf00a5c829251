"""When to try again: the retry policy, built on tenacity's stop and wait strategies.

The decision is a pure function of the policy and the delivery's history: after
attempt ``n`` failed, either give up or retry ``wait`` seconds later. Nothing here
sleeps; drivers persist the decision as the delivery's ``next_attempt_at``.
"""

from __future__ import annotations

import email.utils
import math
import numbers
import operator
import re
from datetime import UTC, datetime, timedelta

import tenacity
from attrs import field, frozen
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from .exceptions import InvalidInputError

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

    A bad option (``max_attempts`` not a whole number of at least 1; a wait that is
    negative, NaN, infinite or not a number; a ``stop`` or ``wait`` that is not a
    strategy) raises :class:`~hookdispatch.exceptions.InvalidInputError`, a ValueError.
    """

    max_attempts: int = field(default=4)
    initial_wait: float = field(default=1.0)
    max_wait: float = field(default=60.0)
    jitter: float = field(default=1.0)
    max_retry_after: float = field(default=3600.0)
    stop: stop_base | None = field(default=None)
    wait: wait_base | None = field(default=None)

    def __attrs_post_init__(self) -> None:
        """Raise InvalidInputError (a ValueError) naming the option and what it takes."""
        _check_attempts(self.max_attempts)
        for name in ("initial_wait", "max_wait", "jitter", "max_retry_after"):
            _check_seconds(name, getattr(self, name))
        for name, example in (
            ("stop", "tenacity.stop_after_attempt(10)"),
            ("wait", "tenacity.wait_fixed(30)"),
        ):
            strategy = getattr(self, name)
            if strategy is not None and not callable(strategy):
                raise InvalidInputError(
                    f"{name} must be a tenacity {name} strategy such as {example}, or None"
                    f" for the default (got {type(strategy).__name__})"
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


def _check_attempts(value: object) -> None:
    try:
        number = None if isinstance(value, bool) else operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        number = None
    if number is None or number < 1:
        raise InvalidInputError(
            f"max_attempts must be a whole number, at least 1 (1 means no retries; got"
            f" {value!r:.40})"
        )


def _check_seconds(name: str, value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < 0
    ):
        raise InvalidInputError(
            f"{name} must be a finite number of seconds, 0 or more, such as 1.5 (got {value!r:.40})"
        )


_DELAY_SECONDS = re.compile(r"[0-9]+")
"""RFC 9110 delay-seconds: ``1*DIGIT``, ASCII digits only (``str.isdigit`` also takes
``²`` and full-width digits)."""
_MAX_DELAY_DIGITS = 9
_HUGE_DELAY = 999_999_999.0
"""What longer delay-seconds read as: about 31 years, which ``max_retry_after`` caps."""


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date).

    Total: returns ``None`` or a finite float of at least 0 for any text, and never
    raises. ``None`` when absent or unreadable; a date in the past means 0.
    Delay-seconds are ASCII digits only; more than nine significant digits read as
    999,999,999 seconds (the policy's ``max_retry_after`` then caps the wait), so an
    absurdly long number is never converted.
    """
    if not value or not isinstance(value, str):
        return None
    value = value.strip()
    if _DELAY_SECONDS.fullmatch(value):
        digits = value.lstrip("0")
        return _HUGE_DELAY if len(digits) > _MAX_DELAY_DIGITS else float(digits or 0)
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, seconds)
