"""The sections of the run: which candidates each measures, against which ceiling.

Every section builds its candidates (name, kind, the row it is compared with, and
a bounded measurement), then measures them in interleaved rounds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from types import ModuleType

import hookdispatch as hd

from . import ceilings, hookdispatch_runs, latency
from .celery_runs import Worker
from .harness import Run, Series, interleaved
from .plan import Plan
from .receiver import Receiver
from .results import CELERY, Row
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
    """The main comparison against the instant receiver: deliveries/s."""
    url, count, limit = receiver.url, plan.count, plan.limit
    workers, concurrency = plan.workers, plan.concurrency
    one = "raw httpx.Client, 1 thread"
    threads = f"raw httpx.Client, {workers} threads"
    aiohttp = f"raw aiohttp, {concurrency} tasks"
    found: list[Candidate] = [
        (one, "ceiling", None, lambda: ceilings.httpx_threads(url, count, 1, limit)),
        (threads, "ceiling", None, lambda: ceilings.httpx_threads(url, count, workers, limit)),
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
) -> list[Row]:
    """``dispatch()`` and ``.delay()`` per call; ``busy``: the consumer delivers them all."""
    url, count, limit = receiver.url, plan.latency_calls, plan.limit * 2
    found: list[Candidate] = [
        (
            f"dispatch() ({label})",
            "hookdispatch",
            DELAY_CALL if worker else None,
            lambda make=make: latency.dispatch_latency(url, make, count, limit, wait=busy),
        )
        for label, make in storages.items()
    ]
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
