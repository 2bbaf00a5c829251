"""Would ``AsyncDispatcher`` on PostgreSQL gain from psycopg's async connection?

    python -m benchmarks.psycopg_async [--calls 2000]

``AsyncDispatcher`` makes each storage call of a blocking storage on a storage
thread (``run_in_executor``): PostgresStorage's sync psycopg connection, one thread
hop there and back per call. The alternative is ``psycopg.AsyncConnection``, on the
event loop itself. This times one short statement (``SELECT %s::int``, a round trip
and little else, so that the hop is as large a share as it can be), awaited one
after another, both ways, on the benchmark's throwaway database: once on an idle
loop, once on a loop kept busy by 8 tasks that each work 60 µs per step (as
deliveries in flight keep it busy). Prints µs per call, wall, and on the idle loop
CPU too (on the busy one the busy tasks' CPU would count), the two ways interleaved,
each the median of 3 rounds. Pinned to the sender's core, as the
benchmarks are.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

from .harness import SENDER_CORE, pin
from .storages import postgres_database

STATEMENT = "SELECT %s::int"
BUSY_TASKS = 8
BUSY_STEP = 60e-6  # s of work per step of each busy task
ROUNDS = 3


async def _busy(stop: asyncio.Event) -> None:
    while not stop.is_set():
        began = time.perf_counter()
        while time.perf_counter() - began < BUSY_STEP:
            pass
        await asyncio.sleep(0)


async def _time(call: Callable[[int], Awaitable[object]], calls: int) -> tuple[float, float]:
    for n in range(calls // 10):  # warm: statements prepared, connections used
        await call(n)
    began, cpu = time.perf_counter(), time.process_time()
    for n in range(calls):
        await call(n)
    return (
        (time.perf_counter() - began) / calls * 1e6,
        (time.process_time() - cpu) / calls * 1e6,
    )


async def _compare(dsn: str, calls: int) -> dict[tuple[str, str], list[tuple[float, float]]]:
    import psycopg

    sync = psycopg.connect(dsn, autocommit=True)
    direct = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    storage_thread = concurrent.futures.ThreadPoolExecutor(1)
    loop = asyncio.get_running_loop()

    def on_thread(n: int) -> list[tuple[int]]:
        return sync.execute(STATEMENT, (n,)).fetchall()

    async def hop(n: int) -> object:
        return await loop.run_in_executor(storage_thread, on_thread, n)

    async def on_loop(n: int) -> object:
        cursor = await direct.execute(STATEMENT, (n,))
        return await cursor.fetchall()

    ways = {"thread hop (as now)": hop, "psycopg.AsyncConnection": on_loop}
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        for loop_state in ("idle", "busy"):
            stop = asyncio.Event()
            tasks = [asyncio.create_task(_busy(stop)) for _ in range(BUSY_TASKS)]
            if loop_state == "idle":
                stop.set()
            for _ in range(ROUNDS):
                for name, way in ways.items():
                    times.setdefault((loop_state, name), []).append(await _time(way, calls))
            stop.set()
            await asyncio.gather(*tasks)
    finally:
        storage_thread.shutdown()
        sync.close()
        await direct.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per measurement")
    options = parser.parse_args()
    pin(os.getpid(), SENDER_CORE)
    with postgres_database() as found:
        if found is None:
            sys.exit("no PostgreSQL server answers on 127.0.0.1:5432")
        times = asyncio.run(_compare(found[0], options.calls))
    print(f"{options.calls} calls of {STATEMENT!r} awaited one after another, median of {ROUNDS}\n")
    print("| event loop | way | µs per call (wall) | CPU µs per call |")
    print("|---|---|---:|---:|")
    for (loop_state, name), samples in times.items():
        wall = statistics.median(sample[0] for sample in samples)
        cpu = statistics.median(sample[1] for sample in samples)
        # On the busy loop the process's CPU time is the busy tasks' as much as the call's.
        shown = f"{cpu:,.0f}" if loop_state == "idle" else "-"
        print(f"| {loop_state} | {name} | {wall:,.0f} | {shown} |")


if __name__ == "__main__":
    main()
