"""Fan-out: does dispatch() cost the same at 10 or 100,000 registered endpoints?

    python -m benchmarks.fanout [--sizes 10,1000,10000,100000] [--dispatches N]

For each backend (memory, SQLite, and PostgreSQL when a server answers) one store
grows through the sizes: endpoints spread over 10,000 tenants, each subscribed to
another event type than the one measured, plus the dispatching tenant's 3
endpoints subscribed to it (``user.created``, ``user.*`` and ``*``). At each size
``dispatch()`` of that tenant's event is timed ``N`` times (p50, p99), on a
background Dispatcher whose one worker is held by its first request, so what is
measured is the call alone: validation, fan-out through ``Storage.endpoints_for``,
and storing the event with its 3 deliveries. The expectation (the tenants issue):
p50 at the largest size within 1.2x of the p50 at the smallest, per backend, in the
same run.

Then: one tenant with 1,000 subscribed endpoints, the cost of dispatch() per
delivery it creates (written in one batch, not 1,000 round trips).
"""

from __future__ import annotations

import argparse
import threading
import time
from datetime import UTC, datetime

import hookdispatch as hd

from .storages import StorageFactory, memory, postgres, sqlite, temporary_folder

TENANTS = 10_000
TENANT = "acct_measured"
EVENT_TYPE = "user.created"


class Held:
    """A transport that holds its one worker's first request until closed: the
    background dispatcher then does no storage work while dispatch() is timed."""

    def __init__(self) -> None:
        self._release = threading.Event()

    def send(self, request: hd.Request) -> hd.Response:
        self._release.wait(60)
        return hd.Response(status_code=200, headers={}, body=b"")

    def close(self) -> None:
        self._release.set()


def _dispatcher(storage: hd.Storage) -> tuple[hd.Dispatcher, Held]:
    held = Held()
    hooks = hd.Dispatcher(
        storage=storage, workers=1, transport=held, targets=hd.TargetPolicy.local()
    )
    return hooks, held


def _close(hooks: hd.Dispatcher, held: Held) -> None:
    held.close()
    hooks.close(timeout=0)


def _grow(storage: hd.Storage, start: int, stop: int) -> None:
    now = datetime.now(UTC)
    for number in range(start, stop):
        storage.add_endpoint(
            hd.Endpoint(
                id=f"ep_bench_{number:07d}",
                url="https://example.com/hooks",
                secret="whsec_YmVuY2htYXJrLWJlbmNobWFyay1iZW5jaG1hcms=",
                events=(f"other.type{number % 50}",),
                enabled=True,
                created_at=now,
                tenant=f"acct_{number % TENANTS:05d}",
            )
        )


def _timed(hooks: hd.Dispatcher, count: int) -> list[float]:
    times = []
    for _ in range(count):
        began = time.perf_counter()
        hooks.dispatch(EVENT_TYPE, {"user_id": "user_78451"}, tenant=TENANT)
        times.append(time.perf_counter() - began)
    return times


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure(make: StorageFactory, sizes: list[int], count: int) -> list[tuple[int, float, float]]:
    """(endpoints registered, p50 µs, p99 µs) per size."""
    storage = make()
    hooks, held = _dispatcher(storage)
    rows = []
    try:
        # An IP literal: registration has no name to resolve (the network is not measured).
        for events in (["user.created"], ["user.*"], ["*"]):
            hooks.add_endpoint("https://127.0.0.1/hooks", events=events, tenant=TENANT)
        registered = 3
        for size in sizes:
            _grow(storage, registered, size)
            registered = max(registered, size)
            _timed(hooks, max(count // 10, 10))  # warm up
            times = _timed(hooks, count)
            p50, p99 = _percentile(times, 0.5), _percentile(times, 0.99)
            rows.append((registered, p50 * 1e6, p99 * 1e6))
    finally:
        _close(hooks, held)
        storage.close()
    return rows


def wide(make: StorageFactory, count: int) -> tuple[float, float]:
    """One tenant with 1,000 subscribed endpoints: (dispatch p50 µs, µs per delivery)."""
    storage = make()
    hooks, held = _dispatcher(storage)
    try:
        for _ in range(1000):
            hooks.add_endpoint("https://127.0.0.1/hooks", tenant=TENANT)
        times = _timed(hooks, count)
    finally:
        _close(hooks, held)
        storage.close()
    p50 = _percentile(times, 0.5) * 1e6
    return p50, p50 / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,1000,10000,100000")
    parser.add_argument("--dispatches", type=int, default=500)
    options = parser.parse_args()
    sizes = [int(size) for size in options.sizes.split(",")]
    with temporary_folder() as folder, postgres() as pg:
        backends: dict[str, StorageFactory] = {"memory": memory(), "SQLite": sqlite(folder)}
        if pg is not None:
            backends["PostgreSQL"] = pg[0]
        print(f"dispatch() of a tenant with 3 subscribed endpoints, {options.dispatches} calls")
        print("| backend | endpoints | p50 µs | p99 µs | p50 / p50 at the smallest |")
        print("|---|---:|---:|---:|---:|")
        for name, make in backends.items():
            rows = measure(make, sizes, options.dispatches)
            for registered, p50, p99 in rows:
                ratio = p50 / rows[0][1]
                print(f"| {name} | {registered:,} | {p50:,.1f} | {p99:,.1f} | {ratio:.2f} |")
        print("\nOne tenant with 1,000 subscribed endpoints: dispatch() creates 1,000 deliveries")
        print("| backend | dispatch() p50 µs | µs per delivery |")
        print("|---|---:|---:|")
        for name, make in backends.items():
            p50, each = wide(make, max(options.dispatches // 10, 20))
            print(f"| {name} | {p50:,.0f} | {each:.1f} |")


if __name__ == "__main__":
    main()
