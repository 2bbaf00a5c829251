"""docs/img/benchmarks-*.png: one chart per question of a run, each shown next to its
table in docs/benchmarks.md (matplotlib).

Each figure is :data:`WIDTH` inches wide at :data:`DPI` dots per inch, no wider than the
documentation's text column, so it is shown at its own size and its smallest text (tick
labels, legends) stays at :data:`SMALLEST` points."""

# The report is typeset: en dashes for ranges, multiplication signs for ratios.
# ruff: noqa: RUF001

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt

from .harness import Series
from .results import PGQUEUER_ENQUEUE, Results, Row

WIDTH = 7.2
"""Inches: at :data:`DPI`, 720 px, the width of the docs' text column."""
DPI = 100
SMALLEST = 10
"""Points: no text of a chart is smaller."""
STYLE = {
    "font.size": SMALLEST + 1,
    "axes.titlesize": SMALLEST + 2,
    "axes.labelsize": SMALLEST + 1,
    "xtick.labelsize": SMALLEST,
    "ytick.labelsize": SMALLEST,
    "legend.fontsize": SMALLEST,
}

COLORS = {"ceiling": "#9e9e9e", "hookdispatch": "#1f77b4", "peer": "#d62728", "batch": "#2ca02c"}


def _whiskers(series: list[Series]) -> list[list[float]]:
    return [[s.median - s.low for s in series], [s.high - s.median for s in series]]


def _bars(ax: Any, rows: list[Row], *, xlabel: str, log: bool = False) -> None:
    names = [row.name for row in rows][::-1]
    series = [row.series for row in rows][::-1]
    ax.barh(
        names,
        [s.median for s in series],
        xerr=_whiskers(series),
        color=[COLORS.get(row.kind, "#1f77b4") for row in rows][::-1],
        capsize=2,
    )
    ax.set_xlabel(xlabel)
    if log:
        ax.set_xscale("log")
    ax.grid(axis="x", alpha=0.3)


def _throughput(ax: Any, results: Results) -> None:
    _bars(ax, results.throughput, xlabel="deliveries/s (median, min–max)")
    ax.set_title("Instant receiver\ngrey: raw ceilings · blue: hookdispatch · red: Celery")


def _latency(ax: Any, results: Results) -> None:
    rows = results.latency + results.batch
    _bars(ax, rows, xlabel="µs per webhook (log scale)", log=True)
    names = [row.name for row in rows][::-1]
    p99 = [row.series.median_of("p99") for row in rows][::-1]
    points = [(name, value) for name, value in zip(names, p99, strict=True) if value]
    if points:
        ax.plot([v for _, v in points], [n for n, _ in points], "k.", label="p99")
    busy = [(row.name, row.series.median) for row in results.latency_busy if row.name in names]
    if busy:
        ax.plot([v for _, v in busy], [n for n, _ in busy], "kx", label="p50, consumer busy")
    ax.legend()
    ax.set_title("What the caller pays per webhook\nbars: p50, consumer waiting")


def _drains(results: Results) -> list[Row]:
    """The queue section's drains: PgQueuer's default worker and hookdispatch's."""
    return [row for row in results.queue if row.name != PGQUEUER_ENQUEUE]


def _queue(ax: Any, results: Results) -> None:
    _bars(ax, _drains(results), xlabel="per second (median, min–max)")
    ax.set_title("Draining stored work, instant transport\nblue: hookdispatch · red: PgQueuer")


def _slow(ax: Any, results: Results) -> None:
    levels = list(results.slow)
    kinds: dict[str, list[float]] = {}
    for level in levels:
        for row in results.slow[level]:
            label = row.name.rsplit(",", 1)[0] if row.kind == "ceiling" else row.name
            label = label.replace(f"={level}", "=N").replace(f" {level} ", " N ")
            label = label.replace(f"threads {level}", "threads N")
            kinds.setdefault(label, []).append(row.series.median)
    width = 0.8 / max(len(kinds), 1)
    for index, (label, values) in enumerate(kinds.items()):
        positions = [i + index * width for i in range(len(values))]
        ax.bar(positions, values, width=width, label=label)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(levels))], [str(n) for n in levels])
    ax.set_xlabel("deliveries in flight (N)")
    ax.set_ylabel("deliveries/s")
    ax.set_yscale("log")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    delay = results.machine.get("plan", {}).get("delay", 0.1)
    ax.set_title(f"Receiver answering after {delay * 1000:.0f} ms")


def _curve(ax: Any, results: Results) -> None:
    for driver, points in results.curve.items():
        sizes = list(points)
        series = list(points.values())
        ax.errorbar(
            sizes, [s.median for s in series], yerr=_whiskers(series), marker="o", label=driver
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("workers / concurrency")
    ax.set_ylabel("deliveries/s")
    ax.legend()
    ax.set_title("Instant receiver, memory storage")
    ax.grid(alpha=0.3)


def _backlog(ax: Any, results: Results) -> None:
    sizes = list(results.backlog_claim)
    claims = list(results.backlog_claim.values())
    ax.errorbar(sizes, [s.median for s in claims], yerr=_whiskers(claims), marker="o", color="C0")
    ax.set_xscale("log")
    ax.set_xlabel("pending deliveries in SQLite")
    ax.set_ylabel("claim(limit=8), µs", color="C0")
    ax.set_ylim(bottom=0)
    rates = [results.backlog_rate[size] for size in sizes]
    twin = ax.twinx()
    twin.errorbar(sizes, [s.median for s in rates], yerr=_whiskers(rates), marker="s", color="C1")
    twin.set_ylabel("deliveries/s, workers=8", color="C1")
    twin.set_ylim(bottom=0)
    ax.set_title("SQLite: flat as the backlog grows")


CHARTS: dict[str, tuple[Any, Any, Any]] = {
    # name: (draw, whether the run has it, height in inches)
    "throughput": (_throughput, lambda r: r.throughput, lambda r: 1.6 + 0.32 * len(r.throughput)),
    "latency": (
        _latency,
        lambda r: r.latency or r.batch,
        lambda r: 1.8 + 0.32 * len(r.latency + r.batch),
    ),
    "queue": (_queue, _drains, lambda r: 1.6 + 0.32 * len(_drains(r))),
    "slow": (_slow, lambda r: r.slow, lambda r: 5.2),
    "curve": (_curve, lambda r: r.curve, lambda r: 3.6),
    "backlog": (_backlog, lambda r: r.backlog_claim, lambda r: 3.6),
}
"""The charts, one per section of the report that has one."""


def draw(results: Results, folder: Path) -> dict[str, str]:
    """Draw each chart the run has into ``folder`` (``benchmarks-<name>.png``); return
    their file names by chart name, for the report to place next to their tables."""
    drawn: dict[str, str] = {}
    folder.mkdir(parents=True, exist_ok=True)
    with plt.rc_context(STYLE):
        for name, (panel, present, height) in CHARTS.items():
            if not present(results):
                continue
            figure, ax = plt.subplots(figsize=(WIDTH, height(results)))
            panel(ax, results)
            figure.tight_layout()
            file = f"benchmarks-{name}.png"
            figure.savefig(folder / file, dpi=DPI)
            plt.close(figure)
            drawn[name] = file
    return drawn
