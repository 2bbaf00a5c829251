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
from matplotlib.ticker import FuncFormatter, MaxNLocator

from . import profile
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

COLORS = {
    "ceiling": "#9e9e9e",
    "floor": "#bdbdbd",
    "hookdispatch": "#1f77b4",
    "peer": "#d62728",
    "batch": "#2ca02c",
}


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
    else:  # few ticks, with thousands separators: long numbers must not run together
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
    ax.grid(axis="x", alpha=0.3)


def _throughput(ax: Any, results: Results) -> None:
    _bars(ax, results.throughput, xlabel="deliveries/s (median, min–max)")
    ax.set_title("Instant receiver\ngrey: raw ceilings\nblue: hookdispatch · red: Celery")


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


BACKEND_COLORS = {"SQLite": "C0", "PostgreSQL": "C2"}


def _backlogs(results: Results) -> dict[str, tuple[dict[int, Series], dict[int, Series]]]:
    """The backends whose backlog was measured: (claim µs, deliveries/s) by size."""
    found = {
        "SQLite": (results.backlog_claim, results.backlog_rate),
        "PostgreSQL": (results.backlog_pg_claim, results.backlog_pg_rate),
    }
    return {name: pair for name, pair in found.items() if pair[0]}


def _backlog(axes: Any, results: Results) -> None:
    claim_ax, rate_ax = axes
    for name, (claims, rates) in _backlogs(results).items():
        color = BACKEND_COLORS[name]
        sizes = list(claims)
        series = list(claims.values())
        claim_ax.errorbar(
            sizes,
            [s.median for s in series],
            yerr=_whiskers(series),
            marker="o",
            color=color,
        )
        p99 = [s.median_of("p99") for s in series]
        if all(value is not None for value in p99):
            claim_ax.plot(sizes, p99, linestyle=":", marker=".", color=color)
        points = [size for size in sizes if size in rates]
        if points:
            done = [rates[size] for size in points]
            rate_ax.errorbar(
                points,
                [s.median for s in done],
                yerr=_whiskers(done),
                marker="s",
                color=color,
                label=name,
            )
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("pending deliveries")
        ax.grid(alpha=0.3)
    claim_ax.set_yscale("log")
    claim_ax.set_ylabel("µs per call")
    claim_ax.set_title("claim(limit=8): p50, p99 dotted")
    rate_ax.set_ylabel("deliveries/s")
    rate_ax.set_ylim(bottom=0)
    rate_ax.set_title("Dispatcher(workers=8)")
    rate_ax.legend()


def _profiles(results: Results) -> list[tuple[str, dict[str, float], float]]:
    """(bar label, components in µs per delivery, total) of each profile measured."""
    bars = []
    for backend in ("SQLite", "PostgreSQL"):
        for side in ("before", "after"):
            data = (results.profile.get(side) or {}).get("backends", {}).get(backend)
            if data and data.get("total_us") and "functions" in data:
                parts = profile.split(data["functions"], data["total_us"])
                bars.append((f"{backend}, {side}", parts, data["total_us"]))
    return bars


def _profile(ax: Any, results: Results) -> None:
    bars = _profiles(results)[::-1]
    names = [name for name, _, _ in bars]
    left = [0.0] * len(bars)
    for index, component in enumerate(bars[0][1]):
        shares = [parts[component] / total * 100 for _, parts, total in bars]
        ax.barh(names, shares, left=left, color=f"C{index}", label=component)
        left = [a + b for a, b in zip(left, shares, strict=True)]
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of the CPU time per delivery, % (under yappi)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.35, -0.25), ncol=2, frameon=False)
    ax.set_title("Where a durable delivery's CPU time goes")


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
    "backlog": (_backlog, _backlogs, lambda r: 3.6),
    "profile": (_profile, _profiles, lambda r: 2.2 + 0.35 * len(_profiles(r))),
}
"""The charts, one per section of the report that has one."""
COLUMNS = {"backlog": 2}
"""Charts of side-by-side panels: their draw function gets that many axes."""


def draw(results: Results, folder: Path) -> dict[str, str]:
    """Draw each chart the run has into ``folder`` (``benchmarks-<name>.png``); return
    their file names by chart name, for the report to place next to their tables."""
    drawn: dict[str, str] = {}
    folder.mkdir(parents=True, exist_ok=True)
    with plt.rc_context(STYLE):
        for name, (panel, present, height) in CHARTS.items():
            if not present(results):
                continue
            columns = COLUMNS.get(name, 1)
            figure, ax = plt.subplots(1, columns, figsize=(WIDTH, height(results)))
            panel(ax, results)
            figure.tight_layout()
            file = f"benchmarks-{name}.png"
            figure.savefig(folder / file, dpi=DPI)
            plt.close(figure)
            drawn[name] = file
    return drawn
