"""Deliveries per second: hookdispatch against the raw HTTP clients, in one run.

    python -m benchmarks.throughput [--events N] [--rounds R] [--concurrency C]

The quick comparison of the async issue, on the suite's own candidates (the same
raw clients and dispatcher runs as ``python -m benchmarks``, from
:mod:`benchmarks.ceilings` and :mod:`benchmarks.hookdispatch_runs`): the fast
receiver in its own process on its own core, every candidate sending the same
number of POSTs, the rounds interleaved so that drift on a shared machine hits
every candidate alike. Each figure is the median of the rounds with the min-max
range; the ratio compares medians with the matching raw client of the same run:

* async: raw ``aiohttp``, raw ``httpx.AsyncClient``, httpx over ``httpx-aiohttp``
  (when installed), and ``AsyncDispatcher`` with memory and SQLite storage on its
  default transport (``AsyncioTransport``), and with memory storage on
  ``AiohttpTransport``;
* threads: raw ``httpx.Client`` shared by W threads, and ``Dispatcher`` with
  ``workers=W`` on memory and SQLite storage.

A dispatcher's time runs from its first ``dispatch()`` to the moment every
delivery is recorded as succeeded (``drain``), so storage writes are included.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import hookdispatch as hd

from . import ceilings, hookdispatch_runs, storages
from .harness import SENDER_CORE, Run, pin
from .receiver import Receiver

LIMIT = 120.0  # seconds: every measurement stops by then


def candidates(
    url: str, folder: Path, *, count: int, concurrency: int, workers: int
) -> dict[str, tuple[str, Callable[[], Run]]]:
    """Name -> (baseline name, measure)."""
    memory, sqlite = storages.memory(), storages.sqlite(folder)
    raw_async, raw_threads = "raw aiohttp", f"raw httpx.Client, {workers} threads"
    found: dict[str, tuple[str, Callable[[], Run]]] = {
        raw_async: (raw_async, lambda: ceilings.aiohttp_raw(url, count, concurrency, LIMIT)),
        "raw httpx.AsyncClient": (
            raw_async,
            lambda: ceilings.httpx_async(url, count, concurrency, LIMIT),
        ),
    }
    if ceilings.has_httpx_aiohttp():
        found["httpx + httpx-aiohttp"] = (
            raw_async,
            lambda: ceilings.httpx_over_aiohttp(url, count, concurrency, LIMIT),
        )
    for label, make in (("memory", memory), ("SQLite", sqlite)):
        found[f"AsyncDispatcher ({label})"] = (
            raw_async,
            lambda make=make: hookdispatch_runs.async_pool(url, make, count, concurrency, LIMIT),
        )
    found["AsyncDispatcher (memory, AiohttpTransport)"] = (
        raw_async,
        lambda: hookdispatch_runs.async_pool(
            url, memory, count, concurrency, LIMIT, transport=hd.AiohttpTransport
        ),
    )
    found[raw_threads] = (
        raw_threads,
        lambda: ceilings.httpx_threads(url, count, workers, LIMIT),
    )
    for label, make in (("memory", memory), ("SQLite", sqlite)):
        found[f"Dispatcher workers={workers} ({label})"] = (
            raw_threads,
            lambda make=make: hookdispatch_runs.thread_pool(url, make, count, workers, LIMIT),
        )
    return found


def table(results: dict[str, list[float]], baselines: dict[str, str]) -> str:
    lines = [
        "| sender | deliveries/s (median) | min-max | ratio to its raw baseline |",
        "|---|---:|---:|---:|",
    ]
    for name, rates in results.items():
        median = statistics.median(rates)
        baseline = statistics.median(results[baselines[name]])
        ratio = "baseline" if baselines[name] == name else f"{median / baseline:.2f}"
        lines.append(f"| {name} | {median:,.0f} | {min(rates):,.0f}-{max(rates):,.0f} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000, help="POSTs per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per sender")
    parser.add_argument("--concurrency", type=int, default=64, help="async requests in flight")
    parser.add_argument("--workers", type=int, default=8, help="threads for the sync senders")
    options = parser.parse_args()

    pin(os.getpid(), SENDER_CORE)
    with Receiver() as receiver, storages.temporary_folder() as folder:
        found = candidates(
            receiver.url,
            folder,
            count=options.events,
            concurrency=options.concurrency,
            workers=options.workers,
        )
        results: dict[str, list[float]] = {name: [] for name in found}
        found[next(iter(found))][1]()  # warm up the receiver and the imports
        for round_number in range(options.rounds):
            for name, (_, measure) in found.items():
                # The receiver counts what arrived: a raw client that lost requests,
                # or a dispatcher that left some undelivered, does not count.
                run = receiver.checked(options.events, measure)()
                if run.cut:
                    raise RuntimeError(
                        f"{name}: not every one of {options.events} POSTs arrived and"
                        f" succeeded within {LIMIT:.0f} s"
                    )
                results[name].append(run.value)
            print(f"round {round_number + 1}/{options.rounds} done", file=sys.stderr)
    print(
        f"{options.events} POSTs per measurement, {options.rounds} rounds, async concurrency"
        f" {options.concurrency}, {options.workers} threads; Python"
        f" {sys.version.split()[0]}, {os.cpu_count()} CPUs\n"
    )
    print(table(results, {name: baseline for name, (baseline, _) in found.items()}))


if __name__ == "__main__":
    main()
