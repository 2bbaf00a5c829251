"""Two versions of hookdispatch side by side, in one run: did a change cost throughput?

    python -m benchmarks.ab OLD_SRC [NEW_SRC] [--events N] [--rounds R]
                            [--storages memory,SQLite,PostgreSQL]
                            [--kinds threads,async,drain,dispatch,inline]

``OLD_SRC`` and ``NEW_SRC`` are ``src`` folders of two checkouts (a ``git worktree``
of the commit before a change, say; ``NEW_SRC`` defaults to this checkout's). Each
measurement runs in a fresh process that imports hookdispatch from one of them
(the harness, this checkout's ``benchmarks``, is the same for both), against one
receiver in its own process on its own core, the rounds interleaved so that drift
on a shared machine hits both alike: ``Dispatcher(workers=8)`` on
``SocketTransport`` and ``AsyncDispatcher(concurrency=64)`` on ``AsyncioTransport``,
memory storage (``--storages memory,SQLite,PostgreSQL`` adds both senders on a fresh
SQLite file, and on a throwaway PostgreSQL database, each measurement), as in
``python -m benchmarks``. ``--kinds`` picks what is measured (``threads,async`` by
default); ``drain`` is the queue alone: ``N`` deliveries stored first, then
``Dispatcher(workers=8)`` with a transport that answers at once, as the PgQueuer
comparison runs it; ``dispatch`` is ``dispatch()`` timed call by call on a
``Dispatcher(workers=8)`` whose workers send to a receiver that answers after
100 ms (the latency table's *consumer waiting*), ``N`` calls, shown as calls/s at
the p50 (10^6 / p50 µs) so that, as for the others, more is better; ``inline`` is
``Dispatcher(workers=0)``, each ``dispatch()`` returning once its one delivery is
recorded (``N`` calls). Prints medians, ranges, and the new/old ratio of each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from .harness import SENDER_CORE, pin
from .receiver import Receiver

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 120.0

_MEASURE = """
import contextlib, json, sys
from benchmarks import hookdispatch_runs, latency, storages
kind, url, count, storage = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with storages.temporary_folder() as folder, contextlib.ExitStack() as stack:
    if storage == "PostgreSQL":
        found = stack.enter_context(storages.postgres())
        if found is None:
            sys.exit("no PostgreSQL server answers on 127.0.0.1:5432")
        make = found[0]
    else:
        make = storages.sqlite(folder) if storage == "SQLite" else storages.memory()
    if kind == "threads":
        run = hookdispatch_runs.thread_pool(url, make, count, 8, {limit})
    elif kind == "drain":
        run = hookdispatch_runs.instant_drain(url, make, count, 8, {limit})
    elif kind == "dispatch":
        run = latency.dispatch_latency(url, make, count, {limit}, wait=False)
        run.value, run.cpu_us = 1e6 / run.value, None
    elif kind == "inline":
        run = hookdispatch_runs.inline(url, make, count, {limit})
    else:
        run = hookdispatch_runs.async_pool(url, make, count, 64, {limit})
print(json.dumps({{"rate": run.value, "cut": run.cut, "cpu_us": run.cpu_us}}))
"""

KINDS = {
    "threads": "Dispatcher workers=8 ({storage}, SocketTransport)",
    "async": "AsyncDispatcher concurrency=64 ({storage}, AsyncioTransport)",
    "drain": "Dispatcher workers=8 drain ({storage}, instant transport)",
    "dispatch": "dispatch() ({storage}), calls/s at its p50",
    "inline": "Dispatcher inline ({storage}, SocketTransport)",
}
STORAGES = ("memory", "SQLite", "PostgreSQL")


def measure(src: Path, kind: str, url: str, count: int, storage: str = "memory") -> dict[str, Any]:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(ROOT)])}
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE.format(limit=LIMIT), kind, url, str(count), storage],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
        timeout=LIMIT + 60,
    )
    values: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    if values["cut"]:
        raise RuntimeError(f"{kind} from {src}: not every POST succeeded within {LIMIT:.0f} s")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path, help="the src folder of the version before")
    parser.add_argument("new", type=Path, nargs="?", default=ROOT / "src")
    parser.add_argument("--events", type=int, default=3000, help="POSTs per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="measurements per version")
    parser.add_argument(
        "--storages", default="memory", help="comma-separated, of: " + ", ".join(STORAGES)
    )
    parser.add_argument(
        "--kinds", default="threads,async", help="comma-separated, of: " + ", ".join(KINDS)
    )
    options = parser.parse_args()
    versions = {"old": options.old.resolve(), "new": options.new.resolve()}
    chosen = [storage for storage in STORAGES if storage in options.storages.split(",")]
    # (sender kind, storage) -> its row's name
    kinds = [kind for kind in KINDS if kind in options.kinds.split(",")]
    senders = {
        (kind, storage): KINDS[kind].format(storage=storage) for storage in chosen for kind in kinds
    }
    pin(os.getpid(), SENDER_CORE)
    rates: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float | None]] = {}
    with Receiver() as receiver, Receiver(0.1) as slow:
        for round_number in range(options.rounds):
            for (kind, storage), name in senders.items():
                url = slow.url if kind == "dispatch" else receiver.url
                for label, src in versions.items():
                    values = measure(src, kind, url, options.events, storage)
                    rates.setdefault((name, label), []).append(values["rate"])
                    cpu.setdefault((name, label), []).append(values["cpu_us"])
            print(f"round {round_number + 1}/{options.rounds} done", file=sys.stderr)
    print(
        f"{options.events} POSTs per measurement, {options.rounds} rounds interleaved;"
        f" old = {versions['old']}, new = {versions['new']}\n"
    )
    print(
        "| sender | old/s (median, min-max) | new/s (median, min-max) | new/old |"
        " CPU µs/delivery old → new |"
    )
    print("|---|---:|---:|---:|---:|")
    for name in senders.values():
        old, new = rates[(name, "old")], rates[(name, "new")]
        ratio = statistics.median(new) / statistics.median(old)
        old_cpu, new_cpu = cpu[(name, "old")], cpu[(name, "new")]
        cpu_change = (
            ""
            if None in old_cpu + new_cpu
            else f"{statistics.median(old_cpu):.0f} → {statistics.median(new_cpu):.0f}"
        )
        print(
            f"| {name} | {statistics.median(old):,.0f} ({min(old):,.0f}-{max(old):,.0f})"
            f" | {statistics.median(new):,.0f} ({min(new):,.0f}-{max(new):,.0f})"
            f" | {ratio:.2f} | {cpu_change} |"
        )


if __name__ == "__main__":
    main()
