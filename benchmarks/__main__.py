"""``python -m benchmarks``: the whole comparison in one run, written to docs/.

    python -m benchmarks            # the full run (what `make bench` does), ~5 minutes
    python -m benchmarks --quick    # small counts, ~2 minutes: checks the harness itself

Sections, in order: the receiver's own ceiling; the main comparison against the
instant receiver (raw ceilings, hookdispatch, Celery); call latency (beside one
INSERT+COMMIT on the same database) and the batch path; PostgreSQL as a job queue
(PgQueuer's enqueue and default worker against hookdispatch draining stored
deliveries with an instant transport); the receiver that answers after 100 ms at
8, 64 and 256 in flight; throughput against workers/concurrency; SQLite and
PostgreSQL as their backlog grows to a million pending deliveries; dispatch() as
endpoints and tenants grow (fan-out); one tenant's burst and another tenant's
events (fairness, about a minute per storage); where a durable delivery's CPU time
goes (profile: this checkout under yappi, beside the stored profile of the code
before the group commit, benchmarks/data/profile-before-9c077d7.json). Then
docs/benchmarks.md and one chart per question, docs/img/benchmarks-*.png, are
written.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import sqlite3
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import ModuleType

from . import (
    celery_runs,
    chart,
    fairness,
    fanout,
    harness,
    hookdispatch_runs,
    pgqueuer_peer,
    profile,
    receiver_check,
    report,
    scale,
    storages,
    suite,
)
from .harness import SENDER_CORE, cpu_model, pin
from .harness import log as _log
from .plan import FULL, QUICK, Plan
from .receiver import Receiver
from .results import Results

ROOT = Path(__file__).resolve().parent.parent
STARTED = time.perf_counter()


def log(message: str) -> None:
    _log(f"[{time.perf_counter() - STARTED:5.0f} s] {message}")


DOCS = ROOT / "docs"


def machine(plan: Plan, quick: bool) -> dict[str, object]:
    versions = {}
    packages = ("hookdispatch", "httpx", "aiohttp", "celery", "redis", "psycopg")
    for package in (*packages, "pgqueuer", "asyncpg"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "sqlite": sqlite3.sqlite_version,
        "versions": versions,
        "quick": quick,
        "plan": vars(plan),
        "pinned": hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1,
        "load_before": os.getloadavg()[0],
    }


def run(
    plan: Plan,
    *,
    quick: bool,
    sections: set[str],
    redis_port: int,
    fairness_before: Path | None = None,
) -> Results:
    results = Results(machine=machine(plan, quick))
    pin(os.getpid(), SENDER_CORE)  # children (Celery worker, load clients) inherit it
    with contextlib.ExitStack() as stack:
        instant = stack.enter_context(Receiver())
        slow = stack.enter_context(Receiver(plan.delay))
        log("receiver")
        ceiling = receiver_check.measure(instant, seconds=plan.receiver_seconds)
        results.receiver = vars(ceiling)
        folder = stack.enter_context(storages.temporary_folder())
        found = {"memory": storages.memory(), "SQLite": storages.sqlite(folder)}
        postgres = stack.enter_context(storages.postgres_database())
        dsn = None
        if postgres is None:
            results.skipped.append("PostgreSQL: no server answered on 127.0.0.1:5432")
        else:
            dsn = postgres[0]
            found["PostgreSQL"] = storages.postgres_storage(dsn)
            results.machine["postgresql"] = postgres[1]
        redis = stack.enter_context(celery_runs.redis_server(redis_port))
        peer = None
        if redis is None:
            results.skipped.append("Celery: no Redis server could be found or started")
        else:
            peer = celery_runs.configure(redis[0])
            results.machine["redis"] = redis[1]
            stack.callback(celery_runs.forget, peer)
        if sections & {"throughput", "latency"}:
            with celery_worker(peer, instant, plan.workers) as worker:
                if "throughput" in sections:
                    log("throughput, instant receiver")
                    results.throughput = suite.throughput(plan, instant, found, worker)
                if "latency" in sections:
                    log("call latency, the consumer delivering every call")
                    results.latency_busy = suite.calls(plan, instant, found, worker, busy=True)
        if "latency" in sections:
            with celery_worker(peer, slow, plan.workers) as worker:
                log(f"call latency, the consumer waiting on a {plan.delay * 1000:.0f} ms receiver")
                results.latency = suite.calls(
                    plan, slow, found, worker, busy=False, folder=folder, dsn=dsn
                )
            log("dispatch_many")
            results.batch = suite.batches(plan, instant, found)
        if "queue" in sections:
            log("PostgreSQL as a job queue: PgQueuer and hookdispatch draining stored work")
            results.machine["pgqueuer_driver"] = pgqueuer_peer.driver()
            results.queue, skipped = suite.queues(plan, instant, found, dsn)
            results.skipped += skipped
        if "slow" in sections:
            log(f"receiver answering after {plan.delay * 1000:.0f} ms")
            results.slow = suite.slow(plan, slow, peer)
        if "curve" in sections:
            log("throughput against workers/concurrency")
            results.curve = suite.curve(plan, instant)
        if "backlog" in sections:
            backlog = {
                "levels": list(plan.backlogs),
                "rounds": plan.rounds,
                "claims": plan.claims,
                "deliveries": plan.backlog_deliveries,
                "limit": plan.limit * 4,
            }
            log("SQLite backlog")
            claim, rate, query, fill = scale.backlog_curve(instant, folder, **backlog)
            results.backlog_claim, results.backlog_rate = claim, rate
            results.backlog_plan, results.backlog_fill = query, fill
            if postgres is not None:
                log("PostgreSQL backlog")
                with storages.postgres_database() as database:  # dropped once measured
                    if database is None:
                        results.skipped.append("PostgreSQL backlog: no database could be made")
                    else:
                        claim, rate, query, fill, notes = scale.postgres_backlog_curve(
                            instant, database[0], **backlog
                        )
                        results.backlog_pg_claim, results.backlog_pg_rate = claim, rate
                        results.backlog_pg_plan, results.backlog_pg_fill = query, fill
                        results.backlog_pg_notes = notes
        if "fanout" in sections:
            for name, make in found.items():
                log(f"fan-out, {name}: dispatch() at {', '.join(map(str, plan.fanout_sizes))}")
                rows = fanout.measure(make, list(plan.fanout_sizes), plan.fanout_calls)
                results.fanout[name] = [list(row) for row in rows]
                results.fanout_wide[name] = list(
                    fanout.wide(make, max(plan.fanout_calls // 10, 20))
                )
        if "fairness" in sections:
            log(
                f"fairness: tenant A's {plan.fairness_backlog:,} deliveries, then tenant B's"
                f" {plan.fairness_events} events"
            )
            scenario = fairness.Scenario(
                backlog=plan.fairness_backlog,
                events=plan.fairness_events,
                workers=plan.workers,
                limit=plan.fairness_limit,
            )
            database = None
            if postgres is not None:  # a database of its own, for its measuring processes
                database = stack.enter_context(storages.postgres_database())
            results.fairness = fairness.section(
                instant,
                folder,
                None if database is None else database[0],
                scenario,
                before=fairness_before,
                with_async=True,
            )
            if fairness_before is not None:
                results.machine["fairness_before"] = str(fairness_before)
        if "profile" in sections:
            results.profile = {}
            if importlib.util.find_spec("yappi") is None:
                results.skipped.append("profile: yappi is not installed")
            else:
                log(f"profile: Dispatcher(workers=8), {plan.profile_count:,} POSTs, under yappi")
                makers = {"SQLite": found["SQLite"]}
                if "PostgreSQL" in found:
                    makers["PostgreSQL"] = found["PostgreSQL"]
                results.profile["after"] = profile.section(instant.url, makers, plan.profile_count)
            if profile.BEFORE.exists():
                results.profile["before"] = json.loads(profile.BEFORE.read_text())
            else:
                results.skipped.append(f"profile before: {profile.BEFORE} is missing")
        results.receiver["busiest"] = instant.busiest
    results.skipped += [f"{name} failed ({error})" for name, error in harness.failed.items()]
    return results


@contextlib.contextmanager
def celery_worker(
    peer: ModuleType | None, receiver: Receiver, concurrency: int
) -> Iterator[celery_runs.Worker | None]:
    """The Celery worker for a section, or None when Celery is not available."""
    if peer is None:
        yield None
        return
    with celery_runs.Worker(peer, receiver, concurrency) as worker:
        yield worker


SECTIONS = (
    "throughput",
    "latency",
    "queue",
    "slow",
    "curve",
    "backlog",
    "fanout",
    "fairness",
    "profile",
)


def main() -> None:
    hookdispatch_runs.quiet()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts (~2 minutes)")
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, help="run only these sections (repeatable)"
    )
    parser.add_argument("--json", type=Path, help="also save the raw results to this file")
    parser.add_argument(
        "--from-json", type=Path, help="skip measuring: render the report from saved results"
    )
    parser.add_argument(
        "--out", type=Path, default=DOCS, help="where benchmarks.md and img/ go (docs/)"
    )
    parser.add_argument(
        "--fairness-before",
        type=Path,
        help="fairness section: also measure the src folder of another checkout (the code"
        " before a change: git worktree add /tmp/fair-old HEAD)",
    )
    parser.add_argument("--redis-port", type=int, default=6379, help=argparse.SUPPRESS)
    options = parser.parse_args()

    began = time.perf_counter()
    if options.from_json:
        results = Results.load(options.from_json)
    else:
        plan = QUICK if options.quick else FULL
        results = run(
            plan,
            quick=options.quick,
            sections=set(options.only or SECTIONS),
            redis_port=options.redis_port,
            fairness_before=options.fairness_before and options.fairness_before.resolve(),
        )
        results.machine["wall_seconds"] = time.perf_counter() - began
        results.machine["load_after"] = os.getloadavg()[0]
        if options.json:
            options.json.write_text("")
            results.save(options.json)
    folder = options.out / "img"
    images = {name: f"img/{file}" for name, file in chart.draw(results, folder).items()}
    markdown = report.render(results, images=images)
    (options.out / "benchmarks.md").write_text(markdown)
    print(report.summary(results))
    log(
        f"wrote {options.out / 'benchmarks.md'} and {len(images)} charts in {folder}"
        f" in {time.perf_counter() - began:.0f} s"
    )


if __name__ == "__main__":
    sys.exit(main())
