"""The retry policy's maths and the core's verdict on each outcome, without sockets or
clocks; then the same policy driving a real dispatcher on injected time."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import tenacity
from attrs import evolve
from hypothesis import given
from hypothesis import strategies as st
from pytest_httpserver import HTTPServer

import hookdispatch as hd
from hookdispatch._core import Claim, conclude

if TYPE_CHECKING:
    from conftest import FakeTime

T0 = datetime(2024, 6, 30, 15, 41, 23, tzinfo=UTC)


def wait_after(
    policy: hd.RetryPolicy, attempt_number: int, *, elapsed: float = 0.0
) -> float | None:
    """Seconds until the retry after failed attempt ``attempt_number``, or None (give up)."""
    now = T0 + timedelta(seconds=elapsed)
    at = policy.next_attempt_at(attempt_number=attempt_number, first_due_at=T0, now=now)
    return None if at is None else (at - now).total_seconds()


# Defaults and the default schedule ---------------------------------------------------


def test_defaults() -> None:
    policy = hd.RetryPolicy()
    assert policy.max_attempts == 4
    assert policy.initial_wait == 1.0
    assert policy.jitter == 1.0
    assert policy.max_wait == 60.0
    assert policy.stop is None
    assert policy.wait is None


def test_default_policy_gives_up_after_the_fourth_attempt() -> None:
    policy = hd.RetryPolicy()
    for n in (1, 2, 3):
        assert wait_after(policy, n) is not None
    assert wait_after(policy, 4) is None
    assert wait_after(policy, 5) is None


def test_waits_double_without_jitter() -> None:
    policy = hd.RetryPolicy(initial_wait=1, jitter=0)
    assert [wait_after(policy, n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, None]


def test_initial_wait_scales_the_schedule() -> None:
    policy = hd.RetryPolicy(initial_wait=0.5, jitter=0, max_attempts=6)
    assert [wait_after(policy, n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, None]


def test_max_attempts_one_means_no_retry() -> None:
    assert wait_after(hd.RetryPolicy(max_attempts=1), 1) is None


def test_max_wait_caps_the_wait() -> None:
    policy = hd.RetryPolicy(initial_wait=1, jitter=0, max_wait=3, max_attempts=10)
    assert [wait_after(policy, n) for n in range(1, 6)] == [1.0, 2.0, 3.0, 3.0, 3.0]


def test_max_wait_caps_the_jitter_too() -> None:
    policy = hd.RetryPolicy(initial_wait=2, jitter=5, max_wait=2.5, max_attempts=10)
    for _ in range(50):
        wait = wait_after(policy, 1)
        assert wait is not None
        assert 2.0 <= wait <= 2.5


def test_jitter_stays_within_bounds_and_varies() -> None:
    policy = hd.RetryPolicy(initial_wait=1, jitter=0.5)
    seen = set()
    for _ in range(200):
        wait = wait_after(policy, 2)
        assert wait is not None
        assert 2.0 <= wait <= 2.5
        seen.add(wait)
    assert len(seen) > 1, "jitter should randomise the wait"


def test_the_next_attempt_is_relative_to_now() -> None:
    policy = hd.RetryPolicy(initial_wait=1, jitter=0)
    now = T0 + timedelta(seconds=90)
    at = policy.next_attempt_at(attempt_number=2, first_due_at=T0, now=now)
    assert at == now + timedelta(seconds=2)


@given(
    attempt_number=st.integers(min_value=1, max_value=3),
    initial=st.floats(min_value=0, max_value=100, allow_nan=False),
    max_wait=st.floats(min_value=0, max_value=1000, allow_nan=False),
)
def test_wait_is_initial_times_two_to_the_n_capped(
    attempt_number: int, initial: float, max_wait: float
) -> None:
    policy = hd.RetryPolicy(initial_wait=initial, max_wait=max_wait, jitter=0)
    wait = wait_after(policy, attempt_number)
    assert wait is not None
    expected = min(initial * 2 ** (attempt_number - 1), max_wait)
    assert math.isclose(wait, expected, abs_tol=1e-6)  # timedelta keeps microseconds


@given(
    attempt_number=st.integers(min_value=1, max_value=3),
    initial=st.floats(min_value=0, max_value=10, allow_nan=False),
    jitter=st.floats(min_value=0, max_value=10, allow_nan=False),
)
def test_jitter_adds_between_zero_and_jitter(
    attempt_number: int, initial: float, jitter: float
) -> None:
    policy = hd.RetryPolicy(initial_wait=initial, jitter=jitter, max_wait=1000)
    wait = wait_after(policy, attempt_number)
    assert wait is not None
    base = initial * 2 ** (attempt_number - 1)
    assert base - 1e-6 <= wait <= base + jitter + 1e-6


@given(attempt_number=st.integers(min_value=4, max_value=10_000))
def test_default_policy_never_retries_after_attempt_four(attempt_number: int) -> None:
    assert wait_after(hd.RetryPolicy(), attempt_number) is None


# Custom tenacity strategies ----------------------------------------------------------


def test_custom_stop_after_delay_is_honoured() -> None:
    policy = hd.RetryPolicy(stop=tenacity.stop_after_delay(60), wait=tenacity.wait_fixed(5))
    # max_attempts does not apply once a stop strategy is given.
    assert wait_after(policy, 50, elapsed=10) == 5.0
    assert wait_after(policy, 2, elapsed=59.9) == 5.0
    assert wait_after(policy, 2, elapsed=60) is None
    assert wait_after(policy, 2, elapsed=3600) is None


def test_custom_wait_fixed_is_honoured_with_the_default_stop() -> None:
    policy = hd.RetryPolicy(wait=tenacity.wait_fixed(7))
    assert [wait_after(policy, n) for n in (1, 2, 3, 4)] == [7.0, 7.0, 7.0, None]


def test_custom_stop_after_attempt_is_honoured() -> None:
    policy = hd.RetryPolicy(stop=tenacity.stop_after_attempt(2), jitter=0)
    assert [wait_after(policy, n) for n in (1, 2)] == [1.0, None]


def test_composed_strategies_are_honoured() -> None:
    policy = hd.RetryPolicy(
        stop=tenacity.stop_after_delay(3600) | tenacity.stop_after_attempt(10),
        wait=tenacity.wait_fixed(1) + tenacity.wait_fixed(2),
    )
    assert wait_after(policy, 1) == 3.0
    assert wait_after(policy, 9, elapsed=100) == 3.0
    assert wait_after(policy, 10, elapsed=100) is None
    assert wait_after(policy, 3, elapsed=3600) is None


def test_a_negative_custom_wait_means_retry_now() -> None:
    class Negative(tenacity.wait.wait_base):
        def __call__(self, retry_state: tenacity.RetryCallState) -> float:
            return -5.0

    assert wait_after(hd.RetryPolicy(wait=Negative()), 1) == 0.0


# Invalid values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"max_attempts": 0},
        {"max_attempts": -3},
        {"initial_wait": -1},
        {"max_wait": -0.5},
        {"jitter": -1},
    ],
    ids=repr,
)
def test_invalid_values_raise_value_error(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        hd.RetryPolicy(**options)


@pytest.mark.parametrize("name", ["initial_wait", "max_wait", "jitter"])
def test_nan_is_rejected(name: str) -> None:
    with pytest.raises(ValueError):
        hd.RetryPolicy(**{name: math.nan})  # type: ignore[arg-type]


def test_policy_is_frozen_and_keyword_only() -> None:
    policy = hd.RetryPolicy()
    with pytest.raises(AttributeError):
        policy.max_attempts = 10  # type: ignore[misc]
    with pytest.raises(TypeError):
        hd.RetryPolicy(4)  # type: ignore[call-arg]


# _core.conclude on pure outcomes -------------------------------------------------------


def make_claim(attempt_count: int = 0) -> Claim:
    endpoint = hd.Endpoint.create("https://receiver.example/hooks", now=T0)
    event = hd.Event.create("invoice.paid", {"invoice_id": "in_1"}, now=T0)
    delivery = evolve(hd.Delivery.create(event, endpoint, now=T0), attempt_count=attempt_count)
    return Claim(
        delivery=delivery, endpoint=endpoint, event_type=event.type, body=event.body, lease="l"
    )


def response(status: int, body: bytes = b"") -> hd.Response:
    return hd.Response(status_code=status, headers={}, body=body)


POLICY = hd.RetryPolicy(jitter=0)


def run_conclude(
    claim: Claim, outcome: hd.Response | hd.TransportError, *, now: datetime = T0
) -> tuple[hd.Attempt, hd.Delivery]:
    return conclude(claim, outcome, started_at=now, duration=0.25, now=now, policy=POLICY)


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_succeeds(status: int) -> None:
    claim = make_claim()
    attempt, delivery = run_conclude(claim, response(status, b"thanks"))
    assert attempt.succeeded
    assert attempt.failure is None
    assert attempt.error is None
    assert attempt.number == 1
    assert attempt.status_code == status
    assert attempt.response_body == b"thanks"
    assert attempt.delivery_id == claim.delivery.id
    assert attempt.duration == 0.25
    assert attempt.started_at == T0
    assert delivery.status is hd.DeliveryStatus.SUCCEEDED
    assert delivery.attempt_count == 1
    assert delivery.next_attempt_at is None
    assert delivery.last_error is None


@pytest.mark.parametrize("status", [100, 199, 300, 301, 304, 400, 404, 429, 500, 503])
def test_non_2xx_is_retried_then_failed(status: int) -> None:
    waits = []
    for count in range(4):
        now = T0 + timedelta(minutes=count)
        attempt, delivery = run_conclude(make_claim(count), response(status, b"nope"), now=now)
        assert not attempt.succeeded
        assert attempt.number == count + 1
        assert attempt.failure is hd.FailureKind.HTTP_STATUS
        assert attempt.status_code == status
        assert attempt.response_body == b"nope"
        assert attempt.error == f"HTTP {status}"
        assert delivery.attempt_count == count + 1
        assert delivery.last_error == f"HTTP {status}"
        assert delivery.updated_at == now
        if count < 3:
            assert delivery.status is hd.DeliveryStatus.PENDING
            assert delivery.next_attempt_at is not None
            waits.append((delivery.next_attempt_at - now).total_seconds())
        else:
            assert delivery.status is hd.DeliveryStatus.FAILED
            assert delivery.next_attempt_at is None
    assert waits == [1.0, 2.0, 4.0]


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (hd.DeliveryTimeout("x"), hd.FailureKind.TIMEOUT),
        (hd.ConnectError("refused"), hd.FailureKind.CONNECT),
        (hd.TLSError("bad cert"), hd.FailureKind.TLS),
        (hd.ConnectionBrokenError("reset"), hd.FailureKind.RESET),
        (hd.InvalidResponseError("garbage"), hd.FailureKind.INVALID_RESPONSE),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_transport_errors_are_failures_of_their_kind(
    error: hd.TransportError, kind: hd.FailureKind
) -> None:
    attempt, delivery = run_conclude(make_claim(), error)
    assert attempt.failure is kind
    assert attempt.status_code is None
    assert attempt.response_body == b""
    assert attempt.error == f"{kind.value}: {error}"
    assert delivery.status is hd.DeliveryStatus.PENDING
    assert delivery.next_attempt_at == T0 + timedelta(seconds=1)
    assert delivery.last_error == attempt.error

    _, last = run_conclude(make_claim(3), error)
    assert last.status is hd.DeliveryStatus.FAILED


def test_timeout_failure_kind_is_timeout() -> None:
    attempt, _ = run_conclude(make_claim(), hd.DeliveryTimeout("x"))
    assert attempt.failure == "timeout"
    assert attempt.error == "timeout: x"


def test_conclude_leaves_the_claimed_delivery_untouched() -> None:
    claim = make_claim()
    before = claim.delivery
    run_conclude(claim, response(500))
    assert claim.delivery == before


def test_stop_after_delay_sees_time_since_the_delivery_was_created() -> None:
    policy = hd.RetryPolicy(stop=tenacity.stop_after_delay(30), wait=tenacity.wait_fixed(1))
    claim = make_claim(1)
    late = T0 + timedelta(seconds=31)
    _, delivery = conclude(
        claim, response(500), started_at=late, duration=0.1, now=late, policy=policy
    )
    assert delivery.status is hd.DeliveryStatus.FAILED
    early = T0 + timedelta(seconds=29)
    _, delivery = conclude(
        claim, response(500), started_at=early, duration=0.1, now=early, policy=policy
    )
    assert delivery.status is hd.DeliveryStatus.PENDING


# The policy driving a dispatcher on injected time -------------------------------------


def test_inline_dispatch_sleeps_the_policy_schedule(
    httpserver: HTTPServer,
    make_dispatcher: Callable[..., hd.Dispatcher],
    fake_time: FakeTime,
    storage: hd.Storage,
) -> None:
    httpserver.expect_request("/hook").respond_with_data("down", status=503)
    hooks = make_dispatcher(
        storage=storage,
        workers=0,
        retry=hd.RetryPolicy(jitter=0),
        clock=fake_time.clock,
        sleep=fake_time.sleep,
    )
    hooks.add_endpoint(httpserver.url_for("/hook"))
    event = hooks.dispatch("invoice.paid", {"invoice_id": "in_1"})

    assert fake_time.sleeps == [1.0, 2.0, 4.0]
    assert len(httpserver.log) == 4
    [delivery] = hooks.deliveries(event_id=event.id)
    assert delivery.status is hd.DeliveryStatus.FAILED
    assert delivery.attempt_count == 4
    attempts = hooks.attempts(delivery.id)
    assert [a.number for a in attempts] == [1, 2, 3, 4]
    assert [a.started_at - T0 for a in attempts] == [timedelta(seconds=s) for s in (0, 1, 3, 7)]
    assert {a.failure for a in attempts} == {hd.FailureKind.HTTP_STATUS}


def test_inline_dispatch_with_custom_strategies(
    httpserver: HTTPServer, make_dispatcher: Callable[..., hd.Dispatcher], fake_time: FakeTime
) -> None:
    httpserver.expect_request("/hook").respond_with_data("down", status=500)
    policy = hd.RetryPolicy(stop=tenacity.stop_after_delay(25), wait=tenacity.wait_fixed(10))
    hooks = make_dispatcher(
        storage=hd.MemoryStorage(),
        workers=0,
        retry=policy,
        clock=fake_time.clock,
        sleep=fake_time.sleep,
    )
    hooks.add_endpoint(httpserver.url_for("/hook"))
    hooks.dispatch("invoice.paid", {})
    # Attempts at 0, 10, 20 s; after the one at 30 s the delay is spent.
    assert fake_time.sleeps == [10.0, 10.0, 10.0]
    assert len(httpserver.log) == 4


def test_redirect_is_a_failed_attempt_not_followed(
    httpserver: HTTPServer, make_dispatcher: Callable[..., hd.Dispatcher], fake_time: FakeTime
) -> None:
    httpserver.expect_request("/hook").respond_with_data(
        "", status=301, headers={"Location": httpserver.url_for("/elsewhere")}
    )
    httpserver.expect_request("/elsewhere").respond_with_data("ok")
    hooks = make_dispatcher(
        storage=hd.MemoryStorage(),
        workers=0,
        retry=hd.RetryPolicy(max_attempts=1),
        clock=fake_time.clock,
        sleep=fake_time.sleep,
    )
    hooks.add_endpoint(httpserver.url_for("/hook"))
    event = hooks.dispatch("invoice.paid", {})
    [delivery] = hooks.deliveries(event_id=event.id)
    assert delivery.status is hd.DeliveryStatus.FAILED
    [attempt] = hooks.attempts(delivery.id)
    assert attempt.status_code == 301
    assert attempt.failure is hd.FailureKind.HTTP_STATUS
    assert [r.path for r, _ in httpserver.log] == ["/hook"]
