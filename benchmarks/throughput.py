"""Deliveries per second: hookdispatch against the raw HTTP clients, in one run.

    python -m benchmarks.throughput [--events N] [--rounds R] [--concurrency C]

A fast receiver runs in its own process (pinned to its own core where the OS
allows), every candidate sends the same number of POSTs to it, and the rounds are
interleaved so that drift on a shared machine hits every candidate alike. Each
figure is the median of the rounds with the min-max range; the ratio compares
medians with the matching raw client measured in the same run:

* async: raw ``aiohttp``, raw ``httpx.AsyncClient``, httpx over ``httpx-aiohttp``
  (when installed), and ``AsyncDispatcher`` with memory and SQLite storage;
* threads: raw ``httpx.Client`` shared by W threads, and ``Dispatcher`` with
  ``workers=W`` on memory and SQLite storage.

A dispatcher's time runs from its first ``dispatch()`` to the moment every
delivery is recorded as succeeded (``drain``), so storage writes are included.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import httpx

import hookdispatch as hd

BODY = (
    b'{"id":"evt_0190a3b4c5d6a1b2c3d4e5f6a7b8","event":"user.created",'
    b'"created_at":"2024-06-30T15:41:23Z","data":{"user_id":"user_78451","plan":"Pro"}}'
)
HEADERS = {"content-type": "application/json"}


@contextmanager
def receiver() -> Iterator[str]:
    """The fast receiver in its own process; yields its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.receiver"],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline().split()[1])
        pin(process.pid, core=1)
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        process.kill()
        process.wait()


def pin(pid: int, *, core: int) -> None:
    """Keep a process on one core when there are at least two (Linux only)."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(pid, {core})


# Async candidates -------------------------------------------------------------------


async def limited(count: int, concurrency: int, send: Callable[[], Awaitable[object]]) -> None:
    semaphore = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with semaphore:
            await send()

    await asyncio.gather(*(one() for _ in range(count)))


async def raw_aiohttp(url: str, count: int, concurrency: int) -> float:
    async with aiohttp.ClientSession() as session:

        async def send() -> None:
            async with session.post(url, data=BODY, headers=HEADERS) as response:
                await response.read()

        began = time.perf_counter()
        await limited(count, concurrency, send)
        return count / (time.perf_counter() - began)


async def raw_httpx_async(
    url: str, count: int, concurrency: int, transport: object = None
) -> float:
    async with httpx.AsyncClient(transport=transport) as client:  # type: ignore[arg-type]

        async def send() -> None:
            response = await client.post(url, content=BODY, headers=HEADERS)
            await response.aread()

        began = time.perf_counter()
        await limited(count, concurrency, send)
        return count / (time.perf_counter() - began)


async def httpx_over_aiohttp(url: str, count: int, concurrency: int) -> float:
    import httpx_aiohttp  # optional: only for this comparison

    return await raw_httpx_async(url, count, concurrency, httpx_aiohttp.AiohttpTransport())


async def async_dispatcher(url: str, count: int, concurrency: int, storage: hd.Storage) -> float:
    async with hd.AsyncDispatcher(
        storage=storage, concurrency=concurrency, targets=hd.TargetPolicy.local()
    ) as hooks:
        await hooks.add_endpoint(url)
        began = time.perf_counter()
        for n in range(count):
            await hooks.dispatch("user.created", {"user_id": "user_78451", "n": n})
        await hooks.drain()
        elapsed = time.perf_counter() - began
        delivered = len(await hooks.deliveries(status="succeeded"))
    storage.close()
    if delivered != count:
        raise RuntimeError(f"only {delivered} of {count} deliveries succeeded")
    return count / elapsed


# Thread candidates ------------------------------------------------------------------


def raw_httpx_threads(url: str, count: int, workers: int) -> float:
    with httpx.Client(limits=httpx.Limits(max_connections=workers)) as client:
        lock = threading.Lock()
        remaining = [count]

        def work() -> None:
            while True:
                with lock:
                    if remaining[0] == 0:
                        return
                    remaining[0] -= 1
                client.post(url, content=BODY, headers=HEADERS).read()

        began = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            for _ in range(workers):
                pool.submit(work)
        return count / (time.perf_counter() - began)


def thread_dispatcher(url: str, count: int, workers: int, storage: hd.Storage) -> float:
    with hd.Dispatcher(storage=storage, workers=workers, targets=hd.TargetPolicy.local()) as hooks:
        hooks.add_endpoint(url)
        began = time.perf_counter()
        for n in range(count):
            hooks.dispatch("user.created", {"user_id": "user_78451", "n": n})
        hooks.drain()
        elapsed = time.perf_counter() - began
        delivered = len(hooks.deliveries(status="succeeded"))
    storage.close()
    if delivered != count:
        raise RuntimeError(f"only {delivered} of {count} deliveries succeeded")
    return count / elapsed


# The run ----------------------------------------------------------------------------


def sqlite_in(folder: str, name: str) -> hd.SQLiteStorage:
    path = Path(folder) / f"{name}-{time.perf_counter_ns()}.db"
    return hd.SQLiteStorage(path)


def candidates(
    url: str, folder: str, *, count: int, concurrency: int, workers: int
) -> dict[str, tuple[str, Callable[[], float]]]:
    """Name -> (baseline name, measure)."""

    def run(coroutine_function: Callable[[], Awaitable[float]]) -> Callable[[], float]:
        return lambda: asyncio.run(coroutine_function())

    found: dict[str, tuple[str, Callable[[], float]]] = {
        "raw aiohttp": ("raw aiohttp", run(lambda: raw_aiohttp(url, count, concurrency))),
        "raw httpx.AsyncClient": (
            "raw aiohttp",
            run(lambda: raw_httpx_async(url, count, concurrency)),
        ),
    }
    try:
        import httpx_aiohttp  # noqa: F401

        found["httpx + httpx-aiohttp"] = (
            "raw aiohttp",
            run(lambda: httpx_over_aiohttp(url, count, concurrency)),
        )
    except ImportError:
        pass
    found["AsyncDispatcher (memory)"] = (
        "raw aiohttp",
        run(lambda: async_dispatcher(url, count, concurrency, hd.MemoryStorage())),
    )
    found["AsyncDispatcher (SQLite)"] = (
        "raw aiohttp",
        run(lambda: async_dispatcher(url, count, concurrency, sqlite_in(folder, "async"))),
    )
    threads = f"raw httpx.Client, {workers} threads"
    found[threads] = (threads, lambda: raw_httpx_threads(url, count, workers))
    found[f"Dispatcher workers={workers} (memory)"] = (
        threads,
        lambda: thread_dispatcher(url, count, workers, hd.MemoryStorage()),
    )
    found[f"Dispatcher workers={workers} (SQLite)"] = (
        threads,
        lambda: thread_dispatcher(url, count, workers, sqlite_in(folder, "threads")),
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

    pin(os.getpid(), core=0)
    with receiver() as url, tempfile.TemporaryDirectory() as folder:
        found = candidates(
            url,
            folder,
            count=options.events,
            concurrency=options.concurrency,
            workers=options.workers,
        )
        results: dict[str, list[float]] = {name: [] for name in found}
        found[next(iter(found))][1]()  # warm up the receiver and the imports
        for round_number in range(options.rounds):
            for name, (_, measure) in found.items():
                results[name].append(measure())
            print(f"round {round_number + 1}/{options.rounds} done", file=sys.stderr)
    print(
        f"{options.events} POSTs per measurement, {options.rounds} rounds, async concurrency"
        f" {options.concurrency}, {options.workers} threads; Python"
        f" {sys.version.split()[0]}, {os.cpu_count()} CPUs\n"
    )
    print(table(results, {name: baseline for name, (baseline, _) in found.items()}))


if __name__ == "__main__":
    main()
