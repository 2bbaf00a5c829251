"""The 5 s total deadline per attempt, against receivers that stall or drip.

httpx's own timeout is per network operation: a receiver sending one byte a second
never trips it. These tests take real wall time (about 15 s together).
"""

from __future__ import annotations

import time

import pytest

import hookdispatch as hd

from receivers import drip_headers, never_answer, raw_server

DEADLINE = 5.0
MARGIN = 0.5
ONE_ATTEMPT = hd.RetryPolicy(max_attempts=1)

pytestmark = pytest.mark.slow


def assert_cut_at_deadline(attempt: hd.Attempt) -> None:
    assert attempt.failure is hd.FailureKind.TIMEOUT
    assert attempt.status_code is None
    assert DEADLINE - MARGIN <= attempt.duration <= DEADLINE + MARGIN


@pytest.mark.parametrize("behaviour", [never_answer, drip_headers], ids=["silent", "drip"])
def test_inline_attempt_is_cut_at_five_seconds(behaviour, make_dispatcher) -> None:
    with raw_server(behaviour) as server:
        hooks = make_dispatcher(storage=hd.MemoryStorage(), workers=0, retry=ONE_ATTEMPT)
        hooks.add_endpoint(server.url)

        began = time.monotonic()
        event = hooks.dispatch("user.created", {"user_id": "user_78451"})
        elapsed = time.monotonic() - began

        [delivery] = hooks.deliveries(event_id=event.id)
        [attempt] = hooks.attempts(delivery.id)
        assert_cut_at_deadline(attempt)
        assert DEADLINE - MARGIN <= elapsed <= DEADLINE + MARGIN
        assert delivery.status is hd.DeliveryStatus.FAILED


def test_thread_pool_attempts_are_cut_at_five_seconds(tmp_path, make_dispatcher) -> None:
    with raw_server(never_answer) as silent, raw_server(drip_headers) as drip:
        storage = hd.SQLiteStorage(tmp_path / "hooks.db")
        hooks = make_dispatcher(storage=storage, workers=2, retry=ONE_ATTEMPT)
        hooks.add_endpoint(silent.url)
        hooks.add_endpoint(drip.url)

        began = time.monotonic()
        event = hooks.dispatch("user.created", {"user_id": "user_78451"})
        assert hooks.drain(timeout=DEADLINE + 5)
        elapsed = time.monotonic() - began

        deliveries = hooks.deliveries(event_id=event.id)
        assert len(deliveries) == 2
        for delivery in deliveries:
            assert delivery.status is hd.DeliveryStatus.FAILED
            [attempt] = hooks.attempts(delivery.id)
            assert_cut_at_deadline(attempt)
        assert elapsed <= DEADLINE + 2 * MARGIN  # both ran at once, neither waited on the other
        assert drip.connections == 1


def test_deadline_is_configurable(make_dispatcher) -> None:
    with raw_server(drip_headers) as server:
        hooks = make_dispatcher(
            storage=hd.MemoryStorage(), workers=0, retry=ONE_ATTEMPT, timeout=1.0, lease=5.0
        )
        hooks.add_endpoint(server.url)

        event = hooks.dispatch("user.created", {})

        [delivery] = hooks.deliveries(event_id=event.id)
        [attempt] = hooks.attempts(delivery.id)
        assert attempt.failure is hd.FailureKind.TIMEOUT
        assert 0.9 <= attempt.duration <= 1.5
