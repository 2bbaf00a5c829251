"""How much each section measures: the full run (``make bench``) and ``--quick``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    rounds: int = 3  # every section measures each candidate this many times
    count: int = 2000  # POSTs per throughput measurement
    limit: float = 5.0  # seconds: every measurement stops by then
    workers: int = 8
    concurrency: int = 64
    delay: float = 0.1  # the slow receiver's answer time
    levels: tuple[int, ...] = (8, 64, 256)  # in flight against the slow receiver
    waves: int = 15  # slow receiver: each measurement sends waves x N requests
    latency_calls: int = 1000  # timed one by one, back to back
    batch: int = 1000  # events per dispatch_many() call (and PgQueuer enqueue), one per round
    drain: int = 5000  # stored jobs/deliveries each drain measurement works through
    backlogs: tuple[int, ...] = (1_000, 100_000, 1_000_000)
    claims: int = 200  # claim(limit=8) calls per round at each backlog
    backlog_deliveries: int = 2000
    profile_count: int = 3000  # POSTs of each profiled Dispatcher(workers=8) run
    curve_workers: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    curve_concurrency: tuple[int, ...] = (1, 4, 16, 64, 256)
    curve_count: int = 1500
    receiver_seconds: float = 3.0
    fanout_sizes: tuple[int, ...] = (10, 1_000, 10_000, 100_000)  # registered endpoints
    fanout_calls: int = 500  # dispatch() calls timed at each size
    fairness_backlog: int = 20_000  # tenant A's pending deliveries
    fairness_events: int = 100  # tenant B's events, dispatched right after
    fairness_limit: float = 60.0  # seconds after B's dispatch: every measurement stops by then


FULL = Plan()

QUICK = Plan(
    rounds=2,
    count=200,
    limit=2.0,
    waves=2,
    latency_calls=200,
    batch=200,
    drain=500,
    backlogs=(1_000, 10_000, 30_000),
    claims=30,
    backlog_deliveries=200,
    profile_count=500,
    curve_workers=(1, 8),
    curve_concurrency=(1, 64),
    curve_count=200,
    receiver_seconds=1.0,
    fanout_sizes=(10, 1_000, 5_000),
    fanout_calls=100,
    fairness_backlog=2_000,
    fairness_events=20,
    fairness_limit=20.0,
)
