"""docs/benchmarks.md from a run's :class:`~benchmarks.results.Results`."""

# The report is typeset: en dashes for ranges, multiplication signs for ratios.
# ruff: noqa: RUF001

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .fairness import IN_TURN
from .fairness import table as fairness_rows
from .harness import Series
from .results import CELERY, Results, Row

DELAY_CALL = "Celery .delay()"


def rate(value: float) -> str:
    return f"{value:,.0f}"


def micros(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def spread(series: Series, fmt: Callable[[float], str]) -> str:
    return f"{fmt(series.low)}–{fmt(series.high)}"


def ratio(value: float, reference: float | None) -> str:
    return "" if not reference else f"{value / reference:.2f}×"


def percent(value: float, reference: float | None) -> str:
    return "" if not reference else f"{value / reference:.0%}"


def optional(value: float | None, fmt: Callable[[float], str]) -> str:
    return "" if value is None else fmt(value)


def cut_mark(series: Series) -> str:
    return " †" if series.cut else ""


@dataclass
class Target:
    what: str
    measured: str
    met: bool | None  # None: not measured in this run


def _median(rows: list[Row], name: str) -> float | None:
    row = next((row for row in rows if row.name == name), None)
    return None if row is None else row.series.median


def targets(results: Results) -> list[Target]:
    plan = results.machine.get("plan", {})
    workers, concurrency = plan.get("workers", 8), plan.get("concurrency", 64)
    table = results.throughput
    threads = _median(table, f"raw httpx.Client, {workers} threads")
    aiohttp = _median(table, f"raw aiohttp, {concurrency} tasks")
    celery = _median(table, CELERY)
    found: list[Target] = []

    def compare(what: str, value: float | None, reference: float | None, goal: float) -> None:
        if value is None or not reference:
            found.append(Target(what, "not measured", None))
            return
        share = value / reference
        shown = f"{share:.0%}" if goal < 1.5 else f"{share:.2f}×"
        found.append(Target(what, f"{shown} ({rate(value)} vs {rate(reference)}/s)", share >= goal))

    for label, goal in (("memory", 0.80), ("SQLite", 0.75)):
        pool = _median(table, f"Dispatcher workers={workers} ({label})")
        compare(
            f"thread pool ({label}) ≥ {goal:.0%} of raw httpx.Client ×{workers}",
            pool,
            threads,
            goal,
        )
        compare(f"thread pool ({label}) ≥ 2.5× Celery", pool, celery, 2.5)
    compare(
        "AsyncDispatcher (memory) ≥ 60% of raw aiohttp",
        _median(table, f"AsyncDispatcher concurrency={concurrency} (memory)"),
        aiohttp,
        0.60,
    )
    delay = _median(results.latency, DELAY_CALL)
    for label, bound in (("memory", 30.0), ("SQLite", 150.0)):
        p50 = _median(results.latency, f"dispatch() ({label})")
        if p50 is None:
            found.append(Target(f"dispatch() p50 ({label}) ≤ {bound:.0f} µs", "not measured", None))
            continue
        found.append(
            Target(f"dispatch() p50 ({label}) ≤ {bound:.0f} µs", f"{micros(p50)} µs", p50 <= bound)
        )
        if delay:
            found.append(
                Target(
                    f"dispatch() ({label}) ≥ 5× faster than .delay()",
                    f"{delay / p50:.1f}× ({micros(p50)} vs {micros(delay)} µs)",
                    delay / p50 >= 5,
                )
            )
    for name, rows in results.fanout.items():
        first, last = rows[0], rows[-1]
        share = last[1] / first[1]
        found.append(
            Target(
                f"dispatch() p50 ({name}) at {last[0]:,.0f} endpoints ≤ 1.2× at {first[0]:,.0f}",
                f"{share:.2f}× ({micros(last[1])} vs {micros(first[1])} µs)",
                share <= 1.2,
            )
        )
    for name, rows in results.fairness.items():
        row = next((row for row in rows if row["label"] == IN_TURN), None)
        if row is None or row["b_last"] is None:
            continue
        # A's backlog cut by the time limit: the limit is a lower bound of its time.
        a_last = row["a_last"] or plan.get("fairness_limit", 60.0)
        share = a_last / max(row["b_last"], 1e-9)
        found.append(
            Target(
                f"noisy neighbour ({name}): tenant B's last delivery ≥ 5× sooner than A's",
                f"{'> ' if row['a_last'] is None else ''}{share:.1f}× ({row['b_last']:.2f} s"
                f" vs {a_last:.2f} s)",
                share >= 5,
            )
        )
    slow = results.slow.get(256, [])
    value = _median(slow, "AsyncDispatcher concurrency=256 (memory)")
    found.append(
        Target(
            "AsyncDispatcher, 256 in flight, 100 ms receiver ≥ 2,000/s",
            "not measured" if value is None else f"{rate(value)}/s",
            None if value is None else value >= 2000,
        )
    )
    return found


def targets_table(results: Results) -> list[str]:
    lines = ["| target | measured | met |", "|---|---|:-:|"]
    for target in targets(results):
        mark = {True: "yes", False: "**no**", None: "–"}[target.met]
        lines.append(f"| {target.what} | {target.measured} | {mark} |")
    return lines


def throughput_table(results: Results) -> list[str]:
    table = results.throughput
    celery = _median(table, CELERY)
    lines = [
        "| sender | deliveries/s | min–max | vs raw ceiling | vs Celery | enqueue µs/call"
        " | sender CPU µs/delivery |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in table:
        series = row.series
        ceiling = _median(table, row.ceiling) if row.ceiling else None
        versus = f"{percent(series.median, ceiling)} of {row.ceiling}" if ceiling else "ceiling"
        if row.kind != "ceiling" and not ceiling:
            versus = ""
        name = f"**{row.name}**" if row.kind == "hookdispatch" else row.name
        lines.append(
            f"| {name}{cut_mark(series)} | {rate(series.median)} | {spread(series, rate)}"
            f" | {versus} | {ratio(series.median, celery)}"
            f" | {optional(series.median_of('enqueue_us'), micros)}"
            f" | {optional(series.median_of('cpu_us'), micros)} |"
        )
    return lines


def latency_table(results: Results) -> list[str]:
    delay = _median(results.latency, DELAY_CALL)
    busy_delay = _median(results.latency_busy, DELAY_CALL)
    lines = [
        "| call | p50 µs, consumer waiting | min–max | p99 µs | vs .delay()"
        " | p50 µs, consumer busy | p99 µs | vs .delay() |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def faster(value: float, reference: float | None, name: str) -> str:
        return "" if not reference or name == DELAY_CALL else f"{reference / value:.1f}× faster"

    for row in results.latency + results.batch:
        series = row.series
        busy = results.row(results.latency_busy, row.name)
        busy_cells = " |  |  | "
        if busy is not None:
            p50, p99 = busy.series.median, busy.series.median_of("p99")
            busy_cells = (
                f" | {micros(p50)} | {optional(p99, micros)} | {faster(p50, busy_delay, row.name)} "
            )
        name = f"**{row.name}**" if row.kind != "peer" else row.name
        lines.append(
            f"| {name}{cut_mark(series)} | {micros(series.median)} | {spread(series, micros)}"
            f" | {optional(series.median_of('p99'), micros)}"
            f" | {faster(series.median, delay, row.name)}{busy_cells}|"
        )
    return lines


def slow_table(results: Results) -> list[str]:
    delay = results.machine.get("plan", {}).get("delay", 0.1)
    lines = [
        "| in flight | sender | deliveries/s | min–max | vs raw ceiling | vs Celery |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for level, rows in results.slow.items():
        celery = next((row.series.median for row in rows if row.kind == "peer"), None)
        for row in rows:
            series = row.series
            ceiling = _median(rows, row.ceiling) if row.ceiling else None
            if row.kind == "ceiling":
                versus = f"{percent(series.median, level / delay)} of {rate(level / delay)}/s"
            else:
                versus = f"{percent(series.median, ceiling)} of {row.ceiling}"
            name = f"**{row.name}**" if row.kind == "hookdispatch" else row.name
            lines.append(
                f"| {level} | {name}{cut_mark(series)} | {rate(series.median)}"
                f" | {spread(series, rate)} | {versus} | {ratio(series.median, celery)} |"
            )
    return lines


def curve_table(results: Results) -> list[str]:
    lines = ["| driver | workers / concurrency | deliveries/s | min–max |", "|---|---:|---:|---:|"]
    for driver, points in results.curve.items():
        for size, series in points.items():
            lines.append(
                f"| {driver} | {size} | {rate(series.median)}{cut_mark(series)}"
                f" | {spread(series, rate)} |"
            )
    return lines


def backlog_table(results: Results) -> list[str]:
    lines = [
        "| pending deliveries | claim(limit=8) p50 µs | min–max | p99 µs"
        " | Dispatcher workers=8, deliveries/s | min–max | filled in |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level, claim in results.backlog_claim.items():
        deliveries = results.backlog_rate[level]
        lines.append(
            f"| {level:,} | {micros(claim.median)}{cut_mark(claim)} | {spread(claim, micros)}"
            f" | {optional(claim.median_of('p99'), micros)} | {rate(deliveries.median)}"
            f"{cut_mark(deliveries)} | {spread(deliveries, rate)}"
            f" | {results.backlog_fill.get(level, 0):.1f} s |"
        )
    return lines


def fanout_table(results: Results) -> list[str]:
    lines = [
        "| storage | endpoints registered | dispatch() p50 µs | p99 µs | p50 / p50 at the fewest |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, rows in results.fanout.items():
        for registered, p50, p99 in rows:
            lines.append(
                f"| {name} | {registered:,.0f} | {micros(p50)} | {micros(p99)}"
                f" | {p50 / rows[0][1]:.2f}× |"
            )
    if results.fanout_wide:
        lines += [
            "",
            "One tenant with 1,000 subscribed endpoints: each `dispatch()` creates 1,000"
            " deliveries, written in one batch.",
            "",
            "| storage | dispatch() p50 µs | µs per delivery |",
            "|---|---:|---:|",
        ]
        for name, (p50, each) in results.fanout_wide.items():
            lines.append(f"| {name} | {micros(p50)} | {each:.1f} |")
    return lines


def machine_line(results: Results) -> str:
    m = results.machine
    versions = ", ".join(f"{name} {version}" for name, version in m.get("versions", {}).items())
    servers = [f"SQLite {m.get('sqlite')}"]
    if m.get("postgresql"):
        servers.append(f"PostgreSQL {m['postgresql']}")
    if m.get("redis"):
        servers.append(f"Redis {m['redis']}")
    wall = m.get("wall_seconds")
    load = ""
    if "load_before" in m and "load_after" in m:
        load = (
            f" Load average (1 min) {m['load_before']:.1f} before and {m['load_after']:.1f}"
            " after: the machine is shared, other work ran beside this run."
        )
    return (
        f"Run on {m.get('date')}: {m.get('cpus')} CPUs ({m.get('cpu_model') or 'unknown model'}),"
        f" Python {m.get('python')}, {m.get('system')}; {', '.join(servers)}; {versions}."
        + (f" The run took {wall / 60:.1f} minutes." if wall else "")
        + load
    )


def receiver_line(results: Results) -> str:
    r = results.receiver
    if not r:
        return ""
    wrk = f" wrk measured {rate(r['wrk_rate'])} requests/s." if r.get("wrk_rate") else ""
    return (
        f"The receiver runs in its own process on core 1. Its ceiling is about"
        f" {rate(r['per_cpu_second'])} requests per CPU-second of that core: loaded by"
        f" {r['clients']} client processes it answered {rate(r['rate'])} requests/s with its"
        f" core {r['busy']:.0%} busy"
        + (" (the clients, on the sender core, were the limit)." if r["busy"] < 0.9 else ".")
        + wrk
        + f" During the measurements its core was at most {r.get('busiest', 0):.0%} busy:"
        " it was never the bottleneck."
    )


METHOD = """\
How it is measured (`benchmarks/`):

* The sender (this process with its threads, and the Celery worker) is pinned to core 0,
  the receiver to core 1. Redis and PostgreSQL are the machine's shared servers,
  not pinned.
* Every figure is the median of several rounds, with the min–max range; rounds are
  interleaved (each round measures every candidate once, in a rotated order). Every
  measurement has a count and a time limit; † marks one cut by its limit.
* A dispatcher's clock runs from its first `dispatch()` to the moment every delivery is
  recorded as succeeded (`drain`); Celery's from the first `.delay()` to the moment the
  receiver has answered every POST. Each checks that the receiver got them all.
* Ratios compare medians measured in the same run. "vs raw ceiling": the bare client
  doing the same POSTs with nothing else to do (no signing, no storage); "vs Celery":
  Celery + Redis, one task per webhook (build the body, sign it, POST it with httpx),
  `--pool threads`, results ignored.
* "enqueue µs/call": the mean cost of `dispatch()` / `.delay()` during the run;
  "sender CPU": CPU time of the sending processes (this one, and the Celery worker)
  per delivery, broker and database servers not included.
* Call latency: each call timed alone, back to back; see that section for the two
  settings of the consumer.
"""


CHART_ALT = {
    "throughput": "Deliveries per second against an instant receiver",
    "latency": "What the caller pays per webhook",
    "slow": "Deliveries per second against a slow receiver",
    "curve": "Deliveries per second by workers and concurrency",
    "backlog": "SQLite claims and throughput as the backlog grows",
}


def render(results: Results, *, images: Mapping[str, str]) -> str:
    """The page. ``images``: the path of each chart the run drew, by chart name
    (``benchmarks.chart.CHARTS``), each shown right after its table."""

    def chart(name: str) -> list[str]:
        return ["", f"![{CHART_ALT[name]}]({images[name]})"] if name in images else []

    plan = results.machine.get("plan", {})
    delay_ms = plan.get("delay", 0.1) * 1000
    parts = [
        "# Benchmarks",
        "",
        "<!-- Generated by `make bench` (python -m benchmarks); do not edit by hand. -->",
        "",
        machine_line(results),
    ]
    if results.machine.get("quick"):
        parts += ["", "> **Quick mode**: small counts, for checking the harness only."]
    parts += ["", "## Targets", "", *targets_table(results)]
    if results.throughput:
        parts += [
            "",
            f"## Throughput against an instant receiver ({plan.get('count', 0):,} POSTs a run)",
            "",
            *throughput_table(results),
            *chart("throughput"),
        ]
    if results.latency or results.batch or results.latency_busy:
        parts += [
            "",
            "## What the caller pays per webhook",
            "",
            "Each call timed alone, back to back: `dispatch()` on a `Dispatcher(workers=8)`,"
            " Celery's `.delay()` with its worker (threads, 8) running. *Consumer waiting*:"
            f" it sends to the {delay_ms:.0f} ms receiver, so it hardly uses the CPU, and"
            " the figure is the cost of the call itself. *Consumer busy*: it delivers to the"
            " instant receiver flat out, on the same core. `dispatch_many()`: one call of"
            f" {plan.get('batch', 0):,} events, per event.",
            "",
            *latency_table(results),
            *chart("latency"),
        ]
    if results.slow:
        parts += [
            "",
            f"## Against a receiver that answers after {delay_ms:.0f} ms",
            "",
            f"Throughput is bound by how many deliveries are in flight: at most N / {delay_ms:.0f}"
            " ms. Memory storage; raw ceilings are compared with that bound.",
            "",
            *slow_table(results),
            *chart("slow"),
        ]
    if results.curve:
        parts += [
            "",
            "## Throughput against workers / concurrency (instant receiver, memory)",
            "",
            *curve_table(results),
            *chart("curve"),
        ]
    if results.backlog_claim:
        parts += [
            "",
            "## SQLite as its backlog grows",
            "",
            "The claim stays flat because the due query walks the partial index on"
            " `next_attempt_at`; SQLite's plan for it:"
            f" `{results.backlog_plan}`.",
            "",
            *backlog_table(results),
            *chart("backlog"),
        ]
    if results.fanout:
        parts += [
            "",
            "## dispatch() as endpoints and tenants grow (fan-out)",
            "",
            "One store per storage grows through the sizes: endpoints spread over 10,000"
            " tenants, subscribed to other types, plus the dispatching tenant's 3 endpoints"
            " subscribed to the type (exactly, by `user.*` and by `*`). Each `dispatch()` is"
            " timed alone, the background worker idle: validation, the fan-out lookup"
            " (`Storage.endpoints_for`, an index on (tenant, pattern)) and storing the event"
            " with its 3 deliveries (`python -m benchmarks.fanout` runs this section alone).",
            "",
            *fanout_table(results),
        ]
    if results.fairness:
        before = results.machine.get("fairness_before")
        parts += [
            "",
            "## One tenant's burst and another tenant's events (fairness)",
            "",
            f"Tenant A dispatches {plan.get('fairness_backlog', 20_000):,} deliveries"
            " (`dispatch_many`, to its 4 endpoints); right after, tenant B dispatches"
            f" {plan.get('fairness_events', 100)} events to its one endpoint. A"
            f" `Dispatcher(workers={plan.get('workers', 8)})` delivers them to the instant"
            " receiver, and the times run from B's dispatch to the success of B's last"
            " delivery and of A's last. *Tenants in turn*: how claims choose"
            " (`Storage.claim`: the tenants with due work take turns, earliest due first"
            " within each; see [tenants](tenants.md#fairness)). *One tenant*: the same"
            " events, B's endpoint in A's account, so that the claims see one queue in due"
            " order, which is how every claim chose before the tenants took turns: B's"
            " events wait behind A's backlog. The AsyncDispatcher row (memory):"
            f" `AsyncDispatcher(concurrency={plan.get('concurrency', 64)})`, tenants in turn."
            + (f" *Before*: the same scenario on the code of `{before}`." if before else "")
            + " Each measurement runs in a fresh process and stops"
            f" {plan.get('fairness_limit', 60.0):.0f} s after B's dispatch"
            " (`python -m benchmarks.fairness` runs this section alone).",
            "",
            *fairness_rows(results.fairness, limit=plan.get("fairness_limit", 60.0)),
        ]
    parts += ["", "## Receiver", "", receiver_line(results)]
    if results.skipped:
        parts += ["", "Skipped in this run: " + "; ".join(results.skipped) + "."]
    parts += ["", "## Method", "", METHOD]
    return "\n".join(parts)


def summary(results: Results) -> str:
    """The console version: the targets, then the main tables."""
    parts = [machine_line(results), "", *targets_table(results)]
    if results.throughput:
        parts += ["", *throughput_table(results)]
    if results.latency:
        parts += ["", *latency_table(results)]
    if results.slow:
        parts += ["", *slow_table(results)]
    parts += ["", receiver_line(results)]
    return "\n".join(parts)
