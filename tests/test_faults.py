"""Receivers that misbehave: every attempt ends within its deadline, classified,
recorded and retried, and memory stays bounded. Both drivers."""

from __future__ import annotations

import resource
import time

import pytest

import hookdispatch as hd

from receivers import (
    close_after_headers,
    huge_body,
    invalid_http,
    late_response,
    never_close,
    raw_server,
    reset_mid_response,
)

DEADLINE = 1.0
TWO_QUICK_ATTEMPTS = hd.RetryPolicy(max_attempts=2, initial_wait=0.0, jitter=0.0)

FAULTS = [
    pytest.param(huge_body, hd.FailureKind.HTTP_STATUS, id="1GiB-body"),
    pytest.param(invalid_http, hd.FailureKind.INVALID_RESPONSE, id="invalid-http"),
    pytest.param(late_response, hd.FailureKind.TIMEOUT, id="after-deadline"),
    pytest.param(reset_mid_response, hd.FailureKind.RESET, id="reset-mid-response"),
    pytest.param(close_after_headers, hd.FailureKind.RESET, id="close-after-headers"),
    pytest.param(never_close, hd.FailureKind.TIMEOUT, id="never-closes"),
]


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@pytest.mark.parametrize(("behaviour", "kind"), FAULTS)
def test_misbehaving_receiver(behaviour, kind: hd.FailureKind, make_dispatcher) -> None:
    with raw_server(behaviour) as server:
        hooks = make_dispatcher(
            storage=hd.MemoryStorage(),
            workers=0,
            timeout=DEADLINE,
            lease=5.0,
            retry=TWO_QUICK_ATTEMPTS,
        )
        hooks.add_endpoint(server.url)
        rss_before = max_rss_bytes()

        began = time.monotonic()
        event = hooks.dispatch("user.created", {"user_id": "user_78451"})
        elapsed = time.monotonic() - began

        [delivery] = hooks.deliveries(event_id=event.id)
        attempts = hooks.attempts(delivery.id)
        assert [a.failure for a in attempts] == [kind, kind]  # classified, and retried
        assert delivery.status is hd.DeliveryStatus.FAILED
        for attempt in attempts:
            assert attempt.duration <= DEADLINE + 0.5
            assert len(attempt.response_body) <= 64 * 1024
        assert elapsed <= 2 * (DEADLINE + 0.5)
        if kind is hd.FailureKind.HTTP_STATUS:
            assert attempts[0].status_code == 500
            assert attempts[0].response_body.startswith(b"xxxx")
        # Nothing near the 1 GiB the receiver offered was held in memory.
        assert max_rss_bytes() - rss_before < 100 * 1024 * 1024
