"""MemoryStorage internals that the shared contract tests cannot see."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import hookdispatch as hd
from hookdispatch._core import Response, conclude

NOW = datetime(2024, 6, 30, 15, 41, 23, tzinfo=UTC)


def test_the_due_heap_stays_bounded_by_the_open_deliveries() -> None:
    # Each lease leaves an entry in the heap until the lease would end (a minute
    # later); without compaction a busy store keeps every delivery of that minute.
    storage = hd.MemoryStorage()
    endpoint = hd.Endpoint.create("https://example.com/hooks", now=NOW)
    storage.add_endpoint(endpoint)
    policy = hd.RetryPolicy()
    longest = 0
    for n in range(20_000):
        now = NOW + timedelta(milliseconds=n)
        event = hd.Event.create("user.created", {"n": n}, now=now)
        storage.add_event(event, [hd.Delivery.create(event, endpoint, now=now)])
        [claim] = storage.claim(now=now, lease_until=now + timedelta(seconds=60), limit=1)
        attempt, delivery = conclude(
            claim,
            Response(status_code=200, headers={}, body=b""),
            started_at=now,
            duration=0.001,
            now=now,
            policy=policy,
        )
        assert storage.complete(claim, attempt, delivery)
        longest = max(longest, sum(len(heap) for heap in storage._heaps.values()))
    assert longest <= 2 * 1 + 1024 + 1
    assert len(storage.list_deliveries(status=hd.DeliveryStatus.SUCCEEDED)) == 20_000
