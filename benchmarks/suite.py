"""The sections of the run: which candidates each measures, against which ceiling.

Every section builds its candidates (name, kind, the row it is compared with, and
a bounded measurement), then measures them in interleaved rounds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import hookdispatch as hd

from . import ceilings, hookdispatch_runs, latency, pgqueuer_peer
from .celery_runs import Worker
from .harness import Run, Series, interleaved, log
from .plan import Plan
from .receiver import Receiver
from .results import (
    CELERY,
    PGQUEUER_DRAIN,
    PGQUEUER_ENQUEUE,
    Row,
    dispatch_sql,
    insert_commit,
    instant_drain,
    raw_http_client,
)
from .storages import StorageFactory, memory

Candidate = tuple[str, str, str | None, Callable[[], Run]]


def _measure(candidates: list[Candidate], rounds: int, title: str) -> list[Row]:
    found = interleaved({name: run for name, _, _, run in candidates}, rounds, title=title)
    return [
        Row(name, kind, ceiling, found[name])
        for name, kind, ceiling, _ in candidates
        if name in found
    ]


def throughput(
    plan: Plan, receiver: Receiver, storages: dict[str, StorageFactory], worker: Worker | None
) -> list[Row]:
    """The main comparison against the instant receiver: deliveries/s.

    The thread pool and Celery are compared with raw ``http.client`` in as many
    threads (the standard library's client, one connection per thread); the raw
    httpx rows stay as ceilings of their own (what httpx costs on top)."""
    url, count, limit = receiver.url, plan.count, plan.limit
    workers, concurrency = plan.workers, plan.concurrency
    one = "raw httpx.Client, 1 thread"
    threads = raw_http_client(workers)
    aiohttp = f"raw aiohttp, {concurrency} tasks"
    found: list[Candidate] = [
        (one, "ceiling", None, lambda: ceilings.httpx_threads(url, count, 1, limit)),
        (
            threads,
            "ceiling",
            None,
            lambda: ceilings.http_client_threads(url, count, workers, limit),
        ),
        (
            f"raw httpx.Client, {workers} threads",
            "ceiling",
            None,
            lambda: ceilings.httpx_threads(url, count, workers, limit),
        ),
        (aiohttp, "ceiling", None, lambda: ceilings.aiohttp_raw(url, count, concurrency, limit)),
        (
            f"raw httpx.AsyncClient, {concurrency} tasks",
            "ceiling",
            aiohttp,
            lambda: ceilings.httpx_async(url, count, concurrency, limit),
        ),
    ]
    if ceilings.has_httpx_aiohttp():
        found.append(
            (
                f"httpx over httpx-aiohttp, {concurrency} tasks",
                "ceiling",
                aiohttp,
                lambda: ceilings.httpx_over_aiohttp(url, count, concurrency, limit),
            )
        )
    for label, make in storages.items():
        if label != "PostgreSQL":
            found.append(
                (
                    f"Dispatcher inline ({label})",
                    "hookdispatch",
                    one,
                    lambda make=make: hookdispatch_runs.inline(url, make, count, limit),
                )
            )
    for label, make in storages.items():
        found.append(
            (
                f"Dispatcher workers={workers} ({label})",
                "hookdispatch",
                threads,
                lambda make=make: hookdispatch_runs.thread_pool(url, make, count, workers, limit),
            )
        )
    for label, make in storages.items():
        found.append(
            (
                f"AsyncDispatcher concurrency={concurrency} ({label})",
                "hookdispatch",
                aiohttp,
                lambda make=make: hookdispatch_runs.async_pool(
                    url, make, count, concurrency, limit
                ),
            )
        )
    if "memory" in storages:
        found.append(
            (
                f"AsyncDispatcher concurrency={concurrency} (memory, AiohttpTransport)",
                "hookdispatch",
                aiohttp,
                lambda: hookdispatch_runs.async_pool(
                    url,
                    storages["memory"],
                    count,
                    concurrency,
                    limit,
                    transport=hd.AiohttpTransport,
                ),
            )
        )
    if worker is not None:
        found.append((CELERY, "peer", threads, lambda: worker.end_to_end(count, limit)))
    checked = [(n, k, c, receiver.checked(count, run)) for n, k, c, run in found]
    return _measure(checked, plan.rounds, "instant receiver")


DELAY_CALL = "Celery .delay()"


def calls(
    plan: Plan,
    receiver: Receiver,
    storages: dict[str, StorageFactory],
    worker: Worker | None,
    *,
    busy: bool,
    folder: Path | None = None,
    dsn: str | None = None,
) -> list[Row]:
    """``dispatch()`` and ``.delay()`` per call; ``busy``: the consumer delivers them all.

    With ``folder`` (SQLite) and ``dsn`` (PostgreSQL), each storage's ceiling too:
    one single-row INSERT and its COMMIT on the same database, right after the
    ``dispatch()`` it bounds; and the storage's own statements for that
    ``dispatch()``, bare (see :func:`ceilings.dispatch_sql_sqlite`).
    """
    url, count, limit = receiver.url, plan.latency_calls, plan.limit * 2
    bounds: dict[str, Callable[[], Run]] = {}
    floors: dict[str, Callable[[], Run]] = {}
    if folder is not None:
        bounds["SQLite"] = lambda: ceilings.insert_commit_sqlite(folder, count, limit)
        if "SQLite" in storages:
            make_sqlite = storages["SQLite"]
            floors["SQLite"] = lambda: ceilings.dispatch_sql_sqlite(make_sqlite, count, limit)
    if dsn is not None:
        bounds["PostgreSQL"] = lambda: ceilings.insert_commit_postgres(dsn, count, limit)
        if "PostgreSQL" in storages:
            make_pg = storages["PostgreSQL"]
            floors["PostgreSQL"] = lambda: ceilings.dispatch_sql_postgres(
                make_pg, dsn, count, limit
            )
    found: list[Candidate] = []
    for label, make in storages.items():
        bound = bounds.get(label)
        found.append(
            (
                f"dispatch() ({label})",
                "hookdispatch",
                insert_commit(label) if bound else DELAY_CALL if worker else None,
                lambda make=make: latency.dispatch_latency(url, make, count, limit, wait=busy),
            )
        )
        if bound is not None:
            found.append((insert_commit(label), "ceiling", None, bound))
        floor = floors.get(label)
        if floor is not None:
            found.append((dispatch_sql(label), "floor", insert_commit(label), floor))
    if worker is not None:
        found.append(
            (
                DELAY_CALL,
                "peer",
                None,
                lambda: latency.delay_latency(worker, count, limit, wait=busy),
            )
        )
    title = "call latency, consumer " + ("busy" if busy else "waiting")
    return _measure(found, plan.rounds, title)


def batches(plan: Plan, receiver: Receiver, storages: dict[str, StorageFactory]) -> list[Row]:
    """``dispatch_many()`` per event."""
    found: list[Candidate] = [
        (
            f"dispatch_many(), per event ({label})",
            "batch",
            DELAY_CALL,
            lambda make=make: latency.batch_per_event(receiver.url, make, plan.batch),
        )
        for label, make in storages.items()
    ]
    return _measure(found, plan.rounds, "dispatch_many")


def slow(plan: Plan, receiver: Receiver, peer: ModuleType | None) -> dict[int, list[Row]]:
    """Against the receiver that answers after ``plan.delay``: N deliveries in flight."""
    return {n: _slow_level(plan, receiver, peer, n) for n in plan.levels}


def _slow_level(plan: Plan, receiver: Receiver, peer: ModuleType | None, n: int) -> list[Row]:
    url, in_memory = receiver.url, memory()
    count = plan.waves * n
    limit = plan.waves * plan.delay * 2 + 1.5  # twice what N in flight need, and some
    threads, aiohttp = f"raw httpx.Client, {n} threads", f"raw aiohttp, {n} tasks"
    candidates: list[Candidate] = [
        (threads, "ceiling", None, lambda: ceilings.httpx_threads(url, count, n, limit)),
        (aiohttp, "ceiling", None, lambda: ceilings.aiohttp_raw(url, count, n, limit)),
        (
            f"Dispatcher workers={n} (memory)",
            "hookdispatch",
            threads,
            lambda: hookdispatch_runs.thread_pool(url, in_memory, count, n, limit),
        ),
        (
            f"AsyncDispatcher concurrency={n} (memory)",
            "hookdispatch",
            aiohttp,
            lambda: hookdispatch_runs.async_pool(url, in_memory, count, n, limit),
        ),
    ]
    title = f"{n} in flight, slow receiver"
    with contextlib.ExitStack() as stack:
        if peer is not None:
            worker = stack.enter_context(Worker(peer, receiver, n))
            candidates.append(
                (
                    f"Celery + Redis, threads {n}",
                    "peer",
                    threads,
                    lambda: worker.end_to_end(count, limit),
                )
            )
        checked = [(a, b, c, receiver.checked(count, run)) for a, b, c, run in candidates]
        return _measure(checked, plan.rounds, title)


def curve(plan: Plan, receiver: Receiver) -> dict[str, dict[int, Series]]:
    """Deliveries/s against workers (thread pool) and concurrency (asyncio), memory."""
    url, count, limit = receiver.url, plan.curve_count, plan.limit
    in_memory = memory()
    candidates: dict[str, Callable[[], Run]] = {}
    for n in plan.curve_workers:
        candidates[f"threads {n}"] = receiver.checked(
            count, lambda n=n: hookdispatch_runs.thread_pool(url, in_memory, count, n, limit)
        )
    for n in plan.curve_concurrency:
        candidates[f"async {n}"] = receiver.checked(
            count, lambda n=n: hookdispatch_runs.async_pool(url, in_memory, count, n, limit)
        )
    found = interleaved(candidates, plan.rounds, title="workers/concurrency curve")
    return {
        "Dispatcher (threads)": {
            n: found[f"threads {n}"] for n in plan.curve_workers if f"threads {n}" in found
        },
        "AsyncDispatcher": {
            n: found[f"async {n}"] for n in plan.curve_concurrency if f"async {n}" in found
        },
    }


def queues(
    plan: Plan, receiver: Receiver, storages: dict[str, StorageFactory], dsn: str | None
) -> tuple[list[Row], list[str]]:
    """PostgreSQL as a job queue: PgQueuer's batch enqueue and its default worker
    draining stored jobs, against hookdispatch's ``Dispatcher`` draining stored
    deliveries with a transport that answers at once (every storage: PostgreSQL is
    the comparison, the others show the dispatcher's own cost). Also returns why a
    candidate was left out."""
    workers, limit = plan.workers, plan.limit * 2
    found: list[Candidate] = []
    skipped: list[str] = []
    driver = pgqueuer_peer.driver()
    if dsn is None:
        skipped.append("PgQueuer: no PostgreSQL server")
    elif driver is None:
        skipped.append("PgQueuer: not installed (the bench extra installs it)")
    else:
        try:
            pgqueuer_peer.install(dsn)
        except Exception as exc:  # its rows say "not measured"; the run goes on
            skipped.append(f"PgQueuer: its schema could not be installed ({exc})")
            log(f"  {skipped[-1]}")
        else:
            found += [
                (
                    PGQUEUER_ENQUEUE,
                    "peer",
                    None,
                    lambda: pgqueuer_peer.enqueue(dsn, plan.batch, limit),
                ),
                (
                    PGQUEUER_DRAIN,
                    "peer",
                    None,
                    lambda: pgqueuer_peer.drain(dsn, plan.drain, limit),
                ),
            ]
    for label, make in storages.items():
        found.append(
            (
                instant_drain(label, workers),
                "hookdispatch",
                PGQUEUER_DRAIN,
                lambda make=make: hookdispatch_runs.instant_drain(
                    receiver.url, make, plan.drain, workers, limit
                ),
            )
        )
    return _measure(found, plan.rounds, "queue drain"), skipped
