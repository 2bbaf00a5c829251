"""Scale curves: SQLite as its backlog grows, and throughput against workers/concurrency.

Backlog: one SQLite file is filled to 1k, 100k and 1M pending deliveries (written
straight through ``storage.add_events`` in large batches, which is quick). At each
size we time ``claim(limit=8)``, the workers' query, and the deliveries/s of a
``Dispatcher(workers=8)`` working through part of the backlog. The due query walks
the partial index ``deliveries_due``, so both must stay flat; the query plan is
recorded to show it. Between rounds the claimed rows are released and the
delivered ones replaced, so every round sees the same backlog.
"""

from __future__ import annotations

import itertools
import sqlite3
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import hookdispatch as hd

from .harness import BODY, DATA, EVENT_TYPE, Deadline, Run, Series, log
from .hookdispatch_runs import LOCAL
from .receiver import Receiver

FILL_BATCH = 20_000

_serial = itertools.count()


def utc_now() -> datetime:
    return datetime.now(UTC)


def fill(storage: hd.SQLiteStorage, endpoint: hd.Endpoint, count: int) -> None:
    """Add ``count`` events, each with one pending delivery due now."""
    while count > 0:
        now = utc_now()
        batch = []
        for _ in range(min(count, FILL_BATCH)):
            event_id = f"evt_backlog_{next(_serial):09d}"
            event = hd.Event(id=event_id, type=EVENT_TYPE, created_at=now, data=DATA, body=BODY)
            batch.append((event, [hd.Delivery.create(event, endpoint, now=now)]))
        storage.add_events(batch)
        count -= len(batch)


def pending(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM deliveries WHERE status = 'pending'").fetchone()[
            0
        ]


def release_leases(path: Path) -> None:
    """Make claimed deliveries due again, as their leases' end would."""
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE deliveries SET next_attempt_at = created_at, lease = NULL"
            " WHERE status = 'pending' AND lease IS NOT NULL"
        )


def query_plan(path: Path) -> str:
    """SQLite's plan for the claim's due query: it should SEARCH the partial index."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "EXPLAIN QUERY PLAN SELECT d.id FROM deliveries d JOIN endpoints e"
            " ON e.id = d.endpoint_id WHERE d.status = 'pending' AND d.next_attempt_at <= ?"
            " AND e.enabled = 1 ORDER BY d.next_attempt_at LIMIT 8",
            (time.time(),),
        ).fetchall()
    return "; ".join(row[-1] for row in rows)


def claim_cost(storage: hd.SQLiteStorage, calls: int, limit: float) -> Run:
    """µs per ``claim(limit=8)``: median over ``calls`` calls (p99 kept too)."""
    samples: list[float] = []
    deadline = Deadline(limit)
    while len(samples) < calls and not deadline.expired:
        now = utc_now()
        began = time.perf_counter_ns()
        claims = storage.claim(now=now, lease_until=now + timedelta(seconds=60), limit=8)
        samples.append((time.perf_counter_ns() - began) / 1000)
        assert len(claims) == 8, "the backlog ran dry"
    ordered = sorted(samples)
    return Run(
        statistics.median(ordered),
        cut=len(samples) < calls,
        p99=ordered[round(0.99 * (len(ordered) - 1))],
    )


def work_through(storage: hd.SQLiteStorage, receiver: Receiver, count: int, limit: float) -> Run:
    """Deliveries/s of ``Dispatcher(workers=8)`` delivering ``count`` of the backlog."""
    before = receiver.count()
    deadline = Deadline(limit)
    cpu = time.process_time()
    hooks = hd.Dispatcher(storage=storage, workers=8, targets=LOCAL)
    try:
        while (delivered := receiver.count() - before) < count and not deadline.expired:
            time.sleep(0.01)
        elapsed = time.perf_counter() - deadline.began
        cpu = time.process_time() - cpu
    finally:
        hooks.close(timeout=0)
    return Run(delivered / elapsed, cut=delivered < count, cpu_us=cpu / max(delivered, 1) * 1e6)


def backlog_curve(
    receiver: Receiver,
    folder: Path,
    *,
    levels: list[int],
    rounds: int,
    claims: int,
    deliveries: int,
    limit: float,
) -> tuple[dict[int, Series], dict[int, Series], str, dict[int, float]]:
    """Per backlog size: claim µs, deliveries/s; the query plan; seconds to fill each level."""
    path = folder / "backlog.db"
    storage = hd.SQLiteStorage(path)
    endpoint = hd.Endpoint.create(receiver.url, now=utc_now())
    storage.add_endpoint(endpoint)
    claim_us: dict[int, Series] = {}
    rates: dict[int, Series] = {}
    fill_seconds: dict[int, float] = {}
    size = 0
    try:
        for level in levels:
            began = time.perf_counter()
            fill(storage, endpoint, level - size)
            fill_seconds[level] = time.perf_counter() - began
            size = level
            log(f"  backlog {level:,}: filled in {fill_seconds[level]:.1f} s")
            claim_us[level], rates[level] = Series(), Series()
            for _ in range(rounds):
                claim_us[level].runs.append(claim_cost(storage, min(claims, level // 16), limit))
                release_leases(path)
                rates[level].runs.append(
                    work_through(storage, receiver, min(deliveries, level // 2), limit)
                )
                release_leases(path)
                fill(storage, endpoint, level - pending(path))
            log(
                f"    claim {claim_us[level].median:,.0f} µs,"
                f" {rates[level].median:,.0f} deliveries/s"
            )
        plan = query_plan(path)
    finally:
        storage.close()
    return claim_us, rates, plan, fill_seconds
