"""Soak: many events through SQLite in thread-pool mode while some endpoints are dead.

    python -m benchmarks.soak [--events 100000] [--endpoints 10] [--dead 1] [--workers 8]

Two runs in one invocation, against the same fast receiver (its own process):
all endpoints healthy, then the same load with ``--dead`` of them pointing at a
listener that accepts connections and never answers (every attempt there runs
into the 5 s deadline, then its retries are scheduled). Each event goes to one
endpoint, round robin. Printed: healthy deliveries/s in both runs and their
ratio (expected >= 0.9: a dead endpoint must not slow the healthy ones), and the
process RSS sampled as the run progresses, with the peak (expected: flat, not
growing with the number of events).
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import hookdispatch as hd
from benchmarks.harness import SENDER_CORE, pin
from benchmarks.receiver import Receiver

BATCH = 1000


def rss_bytes() -> int:
    """Current resident set size of this process (Linux), else the peak so far."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def silent_listener() -> tuple[socket.socket, str]:
    """A socket that accepts connections into its backlog and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}/dead"


def run(
    *, url: str, dead_url: str, events: int, endpoints: int, dead: int, workers: int, folder: str
) -> tuple[float, list[tuple[int, int]], int]:
    """One soak run. Returns healthy deliveries/s, RSS samples, and the peak RSS."""
    path = Path(folder) / f"soak-{time.perf_counter_ns()}.db"
    storage = hd.SQLiteStorage(path)
    samples: list[tuple[int, int]] = []
    with hd.Dispatcher(storage=storage, workers=workers, targets=hd.TargetPolicy.local()) as hooks:
        healthy_ids = []
        for n in range(endpoints):
            target = dead_url if n < dead else url
            endpoint = hooks.add_endpoint(target, events=[f"soak.{n}"])
            if n >= dead:
                healthy_ids.append(endpoint.id)
        healthy_total = sum(1 for n in range(events) if n % endpoints >= dead)
        began = time.perf_counter()
        for start in range(0, events, BATCH):
            hooks.dispatch_many(
                [
                    (f"soak.{n % endpoints}", {"n": n})
                    for n in range(start, min(events, start + BATCH))
                ]
            )
            if start % (events // 4 or 1) < BATCH:
                samples.append((start, rss_bytes()))

        # Progress is counted with one indexed query on a connection of our own:
        # listing every succeeded delivery twice a second would cost the sender's
        # core more, and more as the run goes on, than what is being measured.
        counter = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        count_sql = (
            "SELECT count(*) FROM deliveries WHERE status = 'succeeded' AND endpoint_id IN"
            f" ({', '.join('?' * len(healthy_ids))})"
        )

        def healthy_done() -> int:
            return int(counter.execute(count_sql, healthy_ids).fetchone()[0])

        give_up = time.monotonic() + 1800
        while healthy_done() < healthy_total and time.monotonic() < give_up:
            time.sleep(0.5)
        elapsed = time.perf_counter() - began
        samples.append((events, rss_bytes()))
        delivered = healthy_done()
        counter.close()
        hooks.close(timeout=0)
    storage.close()
    if delivered < healthy_total:
        raise RuntimeError(f"only {delivered} of {healthy_total} healthy deliveries succeeded")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return healthy_total / elapsed, samples, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--dead", type=int, default=1)
    parser.add_argument("--workers", type=int, default=8)
    options = parser.parse_args()
    pin(os.getpid(), SENDER_CORE)
    listener, dead_url = silent_listener()
    common = {
        "events": options.events,
        "endpoints": options.endpoints,
        "workers": options.workers,
    }
    with Receiver() as receiver, tempfile.TemporaryDirectory() as folder:
        url = receiver.url
        healthy_rate, _, _ = run(url=url, dead_url=dead_url, dead=0, folder=folder, **common)
        soak_rate, soak_samples, peak = run(
            url=url, dead_url=dead_url, dead=options.dead, folder=folder, **common
        )
    listener.close()
    mib = 1024 * 1024
    print(
        f"{options.events:,} events, {options.endpoints} endpoints, {options.workers} workers,"
        f" SQLite; Python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n"
    )
    print("| run | healthy deliveries/s | ratio |")
    print("|---|---:|---:|")
    print(f"| all {options.endpoints} endpoints healthy | {healthy_rate:,.0f} | baseline |")
    print(
        f"| {options.dead} of {options.endpoints} endpoints dead | {soak_rate:,.0f} |"
        f" {soak_rate / healthy_rate:.2f} |"
    )
    print("\nRSS during the run with dead endpoints (events dispatched: MiB):")
    print("  " + ", ".join(f"{n:,}: {rss / mib:.0f}" for n, rss in soak_samples))
    print(f"peak RSS of the process: {peak / mib:.0f} MiB")


if __name__ == "__main__":
    main()
