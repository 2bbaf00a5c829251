"""Regressions of the retry policy: Retry-After parsing is total; bad options raise
InvalidInputError naming the option."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import tenacity
from attrs import evolve
from hypothesis import example, given
from hypothesis import strategies as st

import hookdispatch as hd
from hookdispatch._core import Claim, conclude
from hookdispatch._policy import parse_retry_after

T0 = datetime(2024, 6, 30, 15, 41, 23, tzinfo=UTC)


# parse_retry_after -------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "²",  # str.isdigit() is true, float() fails: this raised ValueError
        "¹²³",
        "\uff11\uff12",  # full-width digits: were read as 12 seconds
        "\u0663",  # Arabic-Indic digit
        "-5",
        "1.5",
        "+3",
        "1_000",
        "1e3",
        "soon",
    ],
)
def test_anything_but_ascii_digits_or_a_date_is_unreadable(value: str) -> None:
    assert parse_retry_after(value, now=T0) is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("120", 120.0), (" 120 ", 120.0), ("0", 0.0), ("000", 0.0), ("0120", 120.0)],
)
def test_delay_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value, now=T0) == seconds


@pytest.mark.parametrize("digits", [10, 400, 5_000, 100_000])
def test_absurdly_long_delay_seconds_read_as_huge_and_finite(digits: int) -> None:
    """No int conversion of thousands of digits (and no float('inf')): a huge finite
    number, which the policy's max_retry_after then caps."""
    assert parse_retry_after("9" * digits, now=T0) == 999_999_999.0
    assert parse_retry_after("0" * digits + "7", now=T0) == 7.0  # leading zeros are not size
    policy = hd.RetryPolicy(jitter=0, max_retry_after=300)
    at = policy.next_attempt_at(
        attempt_number=1,
        first_due_at=T0,
        now=T0,
        retry_after=parse_retry_after("9" * digits, now=T0),
    )
    assert at == T0 + timedelta(seconds=300)


def test_http_dates_still_parse() -> None:
    assert parse_retry_after("Sun, 30 Jun 2024 15:43:23 GMT", now=T0) == 120.0
    assert parse_retry_after("Sun, 30 Jun 2024 15:00:00 GMT", now=T0) == 0.0  # past
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now=T0) is not None


@given(
    st.one_of(
        st.text(), st.from_regex(r"\s*[0-9\u0660-\u0669\uff10-\uff19²³¹]{0,30}\s*", fullmatch=True)
    )
)
@example("²")
@example("\uff11\uff12")
@example("9" * 5000)
@example("Mon, 01 Jan 0001 00:00:00 +2359")
@example("Fri, 31 Dec 9999 23:59:59 -2359")
@example("Fri, 31 Dec 99999 23:59:59 GMT")
@example("31 Dec 9999 23:59:59 +99999999999999999999")
def test_parse_retry_after_is_total(value: str) -> None:
    """For any text: None or a finite float of at least 0, and never an exception."""
    seconds = parse_retry_after(value, now=T0)
    assert seconds is None or (isinstance(seconds, float) and math.isfinite(seconds))
    assert seconds is None or seconds >= 0


def test_an_unreadable_retry_after_still_records_the_attempt() -> None:
    """Through conclude (every driver): a 429 with ``Retry-After: ²`` is an attempt
    like any other, retried on the policy's own schedule."""
    endpoint = hd.Endpoint.create("https://receiver.example/hooks", now=T0)
    event = hd.Event.create("invoice.paid", {}, now=T0)
    delivery = evolve(hd.Delivery.create(event, endpoint, now=T0), attempt_count=0)
    claim = Claim(
        delivery=delivery, endpoint=endpoint, event_type=event.type, body=event.body, lease="l"
    )
    for value in ("²", "\uff11\uff12"):
        outcome = hd.Response(status_code=429, headers={"retry-after": value}, body=b"")
        attempt, updated = conclude(
            claim,
            outcome,
            started_at=T0,
            duration=0.1,
            now=T0,
            policy=hd.RetryPolicy(jitter=0),
        )
        assert attempt.status_code == 429
        assert updated.status is hd.DeliveryStatus.PENDING
        assert updated.next_attempt_at == T0 + timedelta(seconds=1)  # not 12 s


# RetryPolicy options -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"max_attempts": 0}, ("max_attempts", "at least 1")),
        ({"max_attempts": -3}, ("max_attempts", "at least 1")),
        ({"max_attempts": "3"}, ("max_attempts", "whole number")),  # was a TypeError
        ({"max_attempts": 2.5}, ("max_attempts", "whole number")),
        ({"max_attempts": None}, ("max_attempts", "whole number")),
        ({"max_attempts": True}, ("max_attempts", "whole number")),
        ({"initial_wait": -1}, ("initial_wait", "0 or more")),
        ({"initial_wait": math.nan}, ("initial_wait", "finite")),
        ({"initial_wait": "1"}, ("initial_wait", "number of seconds")),  # was a TypeError
        ({"max_wait": -0.5}, ("max_wait", "0 or more")),
        ({"max_wait": math.inf}, ("max_wait", "finite")),
        ({"max_wait": None}, ("max_wait", "number of seconds")),
        ({"jitter": -1}, ("jitter", "0 or more")),
        ({"jitter": [1]}, ("jitter", "number of seconds")),
        ({"max_retry_after": -1}, ("max_retry_after", "0 or more")),
        ({"max_retry_after": math.nan}, ("max_retry_after", "finite")),
        ({"stop": 10}, ("stop", "tenacity.stop_after_attempt")),
        ({"wait": "fixed"}, ("wait", "tenacity.wait_fixed")),
    ],
    ids=repr,
)
def test_bad_options_raise_invalid_input_error_naming_the_option(
    options: dict[str, Any], words: tuple[str, ...]
) -> None:
    with pytest.raises(hd.InvalidInputError) as info:
        hd.RetryPolicy(**options)
    assert isinstance(info.value, ValueError)  # as before: except ValueError still works
    for word in words:
        assert word in str(info.value), str(info.value)


def test_good_options_are_still_accepted() -> None:
    hd.RetryPolicy(max_attempts=1, initial_wait=0, max_wait=0, jitter=0, max_retry_after=0)
    hd.RetryPolicy(initial_wait=1, max_wait=10**6)  # ints are numbers of seconds too
    hd.RetryPolicy(stop=tenacity.stop_after_delay(60), wait=tenacity.wait_fixed(2))
