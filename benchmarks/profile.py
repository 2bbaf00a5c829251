"""Profile one benchmark candidate, all threads, CPU time: where a missed target goes.

    python -m benchmarks.profile pool-memory [--count 6000] [--top 25]

Runs the candidate exactly as the suite does (same receiver, same pinning) with the
profiler on for the measured window only, and prints the functions with the most
CPU time of their own, then the most CPU time including callees. Uses yappi
(``pip install yappi``: every thread, CPU clock) when installed, else cProfile (the
calling thread only, which misses the workers).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import re
from collections.abc import Callable
from pathlib import Path

from . import ceilings, hookdispatch_runs, latency, storages
from .harness import SENDER_CORE, Run, pin
from .receiver import Receiver

SITE = re.compile(r".*/(site-packages|python3\.\d+)/")


def candidates(url: str, folder: Path, count: int) -> dict[str, Callable[[], Run]]:
    memory, sqlite = storages.memory(), storages.sqlite(folder)
    return {
        "raw-httpx-8": lambda: ceilings.httpx_threads(url, count, 8, 120),
        "raw-aiohttp-64": lambda: ceilings.aiohttp_raw(url, count, 64, 120),
        "pool-memory": lambda: hookdispatch_runs.thread_pool(url, memory, count, 8, 120),
        "pool-sqlite": lambda: hookdispatch_runs.thread_pool(url, sqlite, count, 8, 120),
        "async-memory": lambda: hookdispatch_runs.async_pool(url, memory, count, 64, 120),
        "async-sqlite": lambda: hookdispatch_runs.async_pool(url, sqlite, count, 64, 120),
        "async-256": lambda: hookdispatch_runs.async_pool(url, memory, count, 256, 120),
        "raw-aiohttp-256": lambda: ceilings.aiohttp_raw(url, count, 256, 120),
        "dispatch-memory": lambda: latency.dispatch_latency(url, memory, count, 120, wait=True),
        "dispatch-sqlite": lambda: latency.dispatch_latency(url, sqlite, count, 120, wait=True),
    }


def short(path: str) -> str:
    return SITE.sub("", path).replace(str(Path.cwd()) + "/", "")


def with_yappi(measure: Callable[[], Run], top: int) -> tuple[Run, str]:
    import yappi

    yappi.set_clock_type("cpu")
    yappi.start(builtins=True)
    run = measure()
    yappi.stop()
    stats = yappi.get_func_stats()
    total = sum(stat.tsub for stat in stats) or 1.0
    lines = [f"total CPU {total:.2f} s (all threads)", "-- own time"]
    for stat in sorted(stats, key=lambda s: s.tsub, reverse=True)[:top]:
        where = f"{short(stat.module)}:{stat.lineno} {stat.name}"
        lines.append(f"{stat.tsub / total:6.1%} {stat.tsub:7.3f}s {stat.ncall:>9} {where}")
    lines.append("-- including callees")
    for stat in sorted(stats, key=lambda s: s.ttot, reverse=True)[: top * 2]:
        where = f"{short(stat.module)}:{stat.lineno} {stat.name}"
        lines.append(f"{stat.ttot / total:6.1%} {stat.ttot:7.3f}s {stat.ncall:>9} {where}")
    yappi.clear_stats()
    return run, "\n".join(lines)


def with_cprofile(measure: Callable[[], Run], top: int) -> tuple[Run, str]:
    profiler = cProfile.Profile()
    run = profiler.runcall(measure)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return run, "(cProfile: the calling thread only)\n" + out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    parser.add_argument("candidate")
    parser.add_argument("--count", type=int, default=6000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--delay", type=float, default=0.0, help="receiver answer delay, s")
    options = parser.parse_args()
    pin(os.getpid(), SENDER_CORE)
    with Receiver(options.delay) as receiver, storages.temporary_folder() as folder:
        found = candidates(receiver.url, folder, options.count)
        if options.candidate not in found:
            parser.error(f"candidate must be one of {', '.join(found)}")
        try:
            import yappi  # noqa: F401

            profile = with_yappi
        except ImportError:
            profile = with_cprofile
        run, text = profile(found[options.candidate], options.top)
    print(f"{options.candidate}: {run}")
    print(text)


if __name__ == "__main__":
    main()
