"""What every measurement shares: the payload, core pinning, CPU clocks, interleaved rounds.

The sender (this process, its threads, and the processes it starts, such as the
Celery worker) runs on core 0; the receiver gets core 1 to itself. Every
measurement is a bounded load: a count of requests and a time limit, whichever
ends first. Rounds are interleaved (each round measures every candidate once, in a
rotated order) so that drift on a shared machine hits all candidates alike.
"""

from __future__ import annotations

import contextlib
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

BODY = (
    b'{"id":"evt_0190a3b4c5d6a1b2c3d4e5f6a7b8","event":"user.created",'
    b'"created_at":"2024-06-30T15:41:23Z","data":{"user_id":"user_78451","plan":"Pro"}}'
)
HEADERS = {"content-type": "application/json"}
EVENT_TYPE = "user.created"
DATA = {"user_id": "user_78451", "plan": "Pro"}

SENDER_CORE = 0
RECEIVER_CORE = 1


def cpu_model() -> str:
    """The CPUs' model name ("" where /proc/cpuinfo does not say)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as info:
        return next((line.split(":", 1)[1].strip() for line in info if "model name" in line), "")
    return ""


def pin(pid: int, core: int) -> None:
    """Keep a process on one core when there are at least two (Linux only)."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(pid, {core})


def unpin(pid: int) -> None:
    """Let a process (a server we started) run on any core."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(pid, range(os.cpu_count() or 1))


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far; 0 where /proc is missing."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Run:
    """One measurement: ``value`` is deliveries/s (or µs for latencies)."""

    value: float
    cut: bool = False  # stopped by the time limit before the count was reached
    cpu_us: float | None = None  # sender CPU per delivery, µs
    enqueue_us: float | None = None  # cost of the enqueue call during the run, µs per call
    p99: float | None = None  # latencies: the 99th percentile, µs (value is the median)


@dataclass
class Series:
    """Every round of one candidate."""

    runs: list[Run] = field(default_factory=list)

    @property
    def values(self) -> list[float]:
        return [run.value for run in self.runs]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    @property
    def cut(self) -> bool:
        return any(run.cut for run in self.runs)

    def median_of(self, name: str) -> float | None:
        found = [getattr(run, name) for run in self.runs if getattr(run, name) is not None]
        return statistics.median(found) if found else None

    def to_json(self) -> list[dict[str, object]]:
        return [vars(run) for run in self.runs]

    @classmethod
    def from_json(cls, runs: list[dict[str, object]]) -> Series:
        return cls([Run(**run) for run in runs])  # type: ignore[arg-type]


class Deadline:
    """A time limit: ``expired`` is cheap enough to test on every request."""

    def __init__(self, seconds: float) -> None:
        self.began = time.perf_counter()
        self.end = self.began + seconds

    @property
    def expired(self) -> bool:
        return time.perf_counter() >= self.end

    @property
    def remaining(self) -> float:
        return max(0.0, self.end - time.perf_counter())


failed: dict[str, str] = {}
"""Candidates whose measurement raised, with the error: left out of the rest of the run."""


def interleaved(
    candidates: dict[str, Callable[[], Run]], rounds: int, *, title: str
) -> dict[str, Series]:
    """Measure every candidate ``rounds`` times, one round after the other, rotating order.

    A candidate that raises is logged, recorded in :data:`failed` and left out.
    """
    names = list(candidates)
    results = {name: Series() for name in names}
    for number in range(rounds):
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            if name in failed:
                continue
            gc.collect()  # no collection of the previous candidate's garbage in this window
            try:
                run = candidates[name]()
            except Exception as exc:  # one broken candidate must not sink the whole run
                failed[name] = f"{type(exc).__name__}: {exc}"
                log(f"  {name} FAILED, left out: {failed[name]}")
                continue
            results[name].runs.append(run)
        log(f"  {title}: round {number + 1}/{rounds} done")
    for name in failed:
        results.pop(name, None)
    for name, series in results.items():
        log(f"    {name}: {series.median:,.1f} ({series.low:,.1f}-{series.high:,.1f})")
    return results
