"""docs/benchmarks.md from a run's :class:`~benchmarks.results.Results`."""

# The report is typeset: en dashes for ranges, multiplication signs for ratios.
# ruff: noqa: RUF001

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import profile
from .fairness import IN_TURN
from .fairness import table as fairness_rows
from .harness import Series
from .results import (
    CELERY,
    PGQUEUER_DRAIN,
    PGQUEUER_ENQUEUE,
    Results,
    Row,
    dispatch_sql,
    insert_commit,
    instant_drain,
    raw_http_client,
)

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
    ratio: str = ""  # the ratio the goal is about, or the value over an absolute goal


NOT_MEASURED = "not measured"


def _median(rows: list[Row], name: str) -> float | None:
    row = next((row for row in rows if row.name == name), None)
    return None if row is None else row.series.median


def per_second(value: float) -> str:
    return f"{rate(value)}/s"


def in_micros(value: float) -> str:
    return f"{micros(value)} µs"


def events_per_second(value: float) -> str:
    return f"{rate(value)} events/s"


def targets(results: Results) -> list[Target]:
    """Every goal of the issue tracker's benchmark list, with what this run measured.

    A ratio goal compares two medians of this run: the candidate and its ceiling or
    peer, measured in the same rounds."""
    plan = results.machine.get("plan", {})
    workers, concurrency = plan.get("workers", 8), plan.get("concurrency", 64)
    table = results.throughput
    http_client = _median(table, raw_http_client(workers))
    aiohttp = _median(table, f"raw aiohttp, {concurrency} tasks")
    celery = _median(table, CELERY)
    found: list[Target] = []

    def versus(
        what: str,
        value: float | None,
        reference: float | None,
        goal: float,
        fmt: Callable[[float], str],
        *,
        at_most: bool = False,
    ) -> None:
        """``value / reference`` ≥ ``goal`` (≤ with ``at_most``)."""
        if value is None or not reference:
            found.append(Target(what, NOT_MEASURED, None))
            return
        share = value / reference
        met = share <= goal if at_most else share >= goal
        found.append(Target(what, f"{fmt(value)} vs {fmt(reference)}", met, f"{share:.2f}×"))

    def absolute(
        what: str, value: float | None, goal: float, fmt: Callable[[float], str], *, at_most: bool
    ) -> None:
        if value is None:
            found.append(Target(what, NOT_MEASURED, None))
            return
        met = value <= goal if at_most else value >= goal
        found.append(Target(what, fmt(value), met, f"{value / goal:.2f}× the goal"))

    for label, goal in (("memory", 0.8), ("SQLite", 0.5), ("PostgreSQL", 0.4)):
        versus(
            f"Dispatcher(workers={workers}) ({label}) ≥ {goal} × raw http.client ×{workers}",
            _median(table, f"Dispatcher workers={workers} ({label})"),
            http_client,
            goal,
            per_second,
        )
    for label in ("memory", "SQLite"):
        versus(
            f"Dispatcher(workers={workers}) ({label}) ≥ 2.5 × Celery",
            _median(table, f"Dispatcher workers={workers} ({label})"),
            celery,
            2.5,
            per_second,
        )
    for label, goal in (("memory", 0.6), ("SQLite", 0.5), ("PostgreSQL", 0.4)):
        versus(
            f"AsyncDispatcher(concurrency={concurrency}) ({label}) ≥ {goal} × raw aiohttp"
            f" ×{concurrency}",
            _median(table, f"AsyncDispatcher concurrency={concurrency} ({label})"),
            aiohttp,
            goal,
            per_second,
        )

    latency = results.latency
    absolute(
        "dispatch() p50 (memory) ≤ 15 µs",
        _median(latency, "dispatch() (memory)"),
        15.0,
        in_micros,
        at_most=True,
    )
    for label in ("SQLite", "PostgreSQL"):
        versus(
            f"dispatch() p50 ({label}) ≤ 1.5 × INSERT+COMMIT",
            _median(latency, f"dispatch() ({label})"),
            _median(latency, insert_commit(label)),
            1.5,
            in_micros,
            at_most=True,
        )
    delay = _median(latency, DELAY_CALL)
    for label in ("memory", "SQLite"):
        what = f"dispatch() ({label}) ≥ 5× faster than .delay()"
        p50 = _median(latency, f"dispatch() ({label})")
        if p50 is None or not delay:
            found.append(Target(what, NOT_MEASURED, None))
            continue
        found.append(
            Target(
                what,
                f"{micros(p50)} vs {micros(delay)} µs",
                delay / p50 >= 5,
                f"{delay / p50:.1f}× faster",
            )
        )

    for label, goal in (("PostgreSQL", 20_000), ("SQLite", 50_000)):
        each = _median(results.batch, f"dispatch_many(), per event ({label})")
        absolute(
            f"dispatch_many() ({label}) ≥ {goal:,} events/s",
            None if not each else 1e6 / each,
            goal,
            events_per_second,
            at_most=False,
        )
    versus(
        f"PostgreSQL drain (Dispatcher workers={workers}, instant transport) ≥ 1.0 ×"
        " PgQueuer's default worker",
        _median(results.queue, instant_drain("PostgreSQL", workers)),
        _median(results.queue, PGQUEUER_DRAIN),
        1.0,
        per_second,
    )

    for name, rows in results.fanout.items():
        first, last = rows[0], rows[-1]
        share = last[1] / first[1]
        found.append(
            Target(
                f"dispatch() p50 ({name}) at {last[0]:,.0f} endpoints ≤ 1.2× at {first[0]:,.0f}",
                f"{micros(last[1])} vs {micros(first[1])} µs",
                share <= 1.2,
                f"{share:.2f}×",
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
                f"{row['b_last']:.2f} s vs {'> ' if row['a_last'] is None else ''}{a_last:.2f} s",
                share >= 5,
                f"{'> ' if row['a_last'] is None else ''}{share:.1f}× sooner",
            )
        )
    levels = plan.get("backlogs") or [1_000, 1_000_000]
    for name, (claims, _, _) in backlogs(results).items():
        sizes = sorted(claims) if len(claims) >= 2 else [levels[0], levels[-1]]
        first, last = sizes[0], sizes[-1]
        what = f"claim(limit=8) p50 ({name}) flat: at {last:,} pending ≤ 2 × at {first:,}"
        if len(claims) < 2:
            found.append(Target(what, NOT_MEASURED, None))
            continue
        low, high = claims[first].median, claims[last].median
        found.append(
            Target(
                what, f"{micros(high)} vs {micros(low)} µs", high <= 2 * low, f"{high / low:.2f}×"
            )
        )
    absolute(
        "AsyncDispatcher, 256 in flight, 100 ms receiver ≥ 2,000/s",
        _median(results.slow.get(256, []), "AsyncDispatcher concurrency=256 (memory)"),
        2000,
        per_second,
        at_most=False,
    )
    return found


def targets_table(results: Results) -> list[str]:
    lines = ["| target | measured | ratio | met |", "|---|---|---:|:-:|"]
    for target in targets(results):
        mark = {True: "yes", False: "**no**", None: "–"}[target.met]
        lines.append(f"| {target.what} | {target.measured} | {target.ratio} | {mark} |")
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
        versus = f"{ratio(series.median, ceiling)} {row.ceiling}" if ceiling else "ceiling"
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
        "| call | p50 µs, consumer waiting | min–max | p99 µs | vs INSERT+COMMIT"
        " | vs its SQL, bare | vs .delay() | p50 µs, consumer busy | p99 µs | vs .delay() |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def faster(value: float, reference: float | None, name: str) -> str:
        return "" if not reference or name == DELAY_CALL else f"{reference / value:.1f}× faster"

    for row in results.latency + results.batch:
        series = row.series
        bound = ""
        if row.kind == "ceiling":
            bound = "ceiling"
        elif row.ceiling and row.ceiling.startswith("INSERT+COMMIT"):
            bound = ratio(series.median, _median(results.latency, row.ceiling))
        own = ""  # a dispatch() row over its storage's statements, bare
        if row.kind == "floor":
            own = "floor"
        elif (storage := _storage_of(row.name)) is not None and row.kind == "hookdispatch":
            floor = _median(results.latency, dispatch_sql(storage))
            own = ratio(series.median, floor) if floor else ""
        quiet = row.kind in ("ceiling", "floor")
        delay_cell = "" if quiet else faster(series.median, delay, row.name)
        busy = results.row(results.latency_busy, row.name)
        busy_cells = " |  |  | "
        if busy is not None:
            p50, p99 = busy.series.median, busy.series.median_of("p99")
            busy_cells = (
                f" | {micros(p50)} | {optional(p99, micros)} | {faster(p50, busy_delay, row.name)} "
            )
        name = row.name if row.kind in ("peer", "ceiling", "floor") else f"**{row.name}**"
        lines.append(
            f"| {name}{cut_mark(series)} | {micros(series.median)} | {spread(series, micros)}"
            f" | {optional(series.median_of('p99'), micros)} | {bound} | {own}"
            f" | {delay_cell}{busy_cells}|"
        )
    return lines


def _storage_of(name: str) -> str | None:
    """``SQLite`` of ``dispatch() (SQLite)``: the storage a dispatch() row ran on."""
    prefix = "dispatch() ("
    return name[len(prefix) : -1] if name.startswith(prefix) and name.endswith(")") else None


def queue_table(results: Results) -> list[str]:
    """PgQueuer's rows, hookdispatch's instant drains, and dispatch_many() per second."""
    table = results.queue
    enqueue, drain = _median(table, PGQUEUER_ENQUEUE), _median(table, PGQUEUER_DRAIN)
    lines = [
        "| what | per second | min–max | vs PgQueuer | sender CPU µs/job |",
        "|---|---:|---:|---:|---:|",
    ]

    def peer(name: str) -> None:
        row = results.row(table, name)
        if row is None:
            lines.append(f"| {name} | {NOT_MEASURED} |  |  |  |")
            return
        series = row.series
        lines.append(
            f"| {name}{cut_mark(series)} | {rate(series.median)} | {spread(series, rate)}"
            f" | peer | {optional(series.median_of('cpu_us'), micros)} |"
        )

    peer(PGQUEUER_ENQUEUE)
    for row in results.batch:  # µs per event, measured in the call latency section
        each = row.series
        versus = ""
        if enqueue and row.name.endswith("(PostgreSQL)"):  # the like-for-like row
            versus = f"{ratio(1e6 / each.median, enqueue)} its enqueue"
        lines.append(
            f"| **{row.name}** | {rate(1e6 / each.median)} | {rate(1e6 / each.high)}–"
            f"{rate(1e6 / each.low)} | {versus} |  |"
        )
    peer(PGQUEUER_DRAIN)
    for row in table:
        if row.kind == "peer":
            continue
        series = row.series
        versus = ""
        if drain and row.name.endswith("(PostgreSQL)"):
            versus = f"{ratio(series.median, drain)} its drain"
        lines.append(
            f"| **{row.name}**{cut_mark(series)} | {rate(series.median)}"
            f" | {spread(series, rate)} | {versus}"
            f" | {optional(series.median_of('cpu_us'), micros)} |"
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


BACKENDS = ("SQLite", "PostgreSQL")


def backlogs(
    results: Results,
) -> dict[str, tuple[dict[int, Series], dict[int, Series], dict[int, float]]]:
    """Each backend's backlog: (claim µs, deliveries/s, fill seconds) by pending
    deliveries; empty dicts for a backend not measured."""
    return {
        "SQLite": (results.backlog_claim, results.backlog_rate, results.backlog_fill),
        "PostgreSQL": (results.backlog_pg_claim, results.backlog_pg_rate, results.backlog_pg_fill),
    }


def backlog_table(results: Results) -> list[str]:
    lines = [
        "| storage | pending deliveries | claim(limit=8) p50 µs | min–max | p99 µs"
        " | Dispatcher workers=8, deliveries/s | min–max | filled in |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, (claims, rates, fills) in backlogs(results).items():
        if not claims:
            lines.append(f"| {name} |  | {NOT_MEASURED} |  |  |  |  |  |")
            continue
        for level, claim in claims.items():
            deliveries = rates.get(level)
            delivered = (
                "|"
                if deliveries is None
                else (
                    f"{rate(deliveries.median)}{cut_mark(deliveries)} | {spread(deliveries, rate)}"
                )
            )
            lines.append(
                f"| {name} | {level:,} | {micros(claim.median)}{cut_mark(claim)}"
                f" | {spread(claim, micros)} | {optional(claim.median_of('p99'), micros)}"
                f" | {delivered} | {fills.get(level, 0):.1f} s |"
            )
    return lines


def backlog_postgres_note(results: Results) -> str:
    """What PostgreSQL's planner knew when the claims were timed."""
    notes = results.backlog_pg_notes
    analyzed = [level for level, done in notes.get("analyzed", {}).items() if done]
    autovacuum = notes.get("autovacuum")
    server = f" This server runs with `autovacuum = {autovacuum}`." if autovacuum else ""
    if not notes.get("analyzed"):
        return server
    if analyzed:
        return (
            f"{server} Autovacuum had analyzed the table by the end of the rounds at"
            f" {', '.join(f'{level:,}' for level in analyzed)} pending deliveries: those"
            " rounds' claims may have been timed with statistics, the others without."
        )
    return f"{server} The table was never analyzed while its claims were timed."


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


SIDES = ("before", "after")


def profile_parts(
    results: Results, side: str, backend: str
) -> tuple[dict[str, float], dict[str, Any]] | None:
    """One side's profile of ``backend``: its components (µs per delivery, from the
    inclusive times it stored, through :func:`benchmarks.profile.split`) and the
    whole summary; None when not measured."""
    found = results.profile.get(side) or {}
    data = found.get("backends", {}).get(backend)
    if not data or not data.get("total_us"):
        return None
    if "functions" not in data:  # only the components, as some other version split them
        return dict(data.get("components", {})), data
    return profile.split(data["functions"], data["total_us"]), data


def profile_table(results: Results, backend: str) -> list[str]:
    """µs per delivery and share of each component, before and after."""
    sides = {side: profile_parts(results, side, backend) for side in SIDES}
    lines = [
        "| component | before µs/delivery | share | after µs/delivery | share |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in [*(c.name for c in profile.COMPONENTS), profile.OTHER, ""]:
        cells = []
        for found in sides.values():
            if found is None:
                cells.append(f"{NOT_MEASURED} | ")
                continue
            parts, data = found
            value = parts.get(name, 0.0) if name else data["total_us"]
            cells.append(f"{micros(value)} | {value / data['total_us']:.1%}")
        lines.append(f"| {name or '**total**'} | {' | '.join(cells)} |")
    return lines


def profile_top(results: Results, backend: str) -> list[str]:
    """The functions with the most CPU time of their own, before and after, side by side."""
    sides = {side: profile_parts(results, side, backend) for side in SIDES}
    tops = {
        side: [] if found is None else found[1].get("top", [])[: profile.TOP]
        for side, found in sides.items()
    }
    lines = [
        "| # | before: function | µs | share | after: function | µs | share |",
        "|---:|---|---:|---:|---|---:|---:|",
    ]
    for rank in range(max(len(top) for top in tops.values())):
        cells = []
        for side, top in tops.items():
            if rank >= len(top):
                cells.append(" |  | ")
                continue
            where, own = top[rank]
            where = where.replace(" (hookdispatch/", " (")  # the library's own files
            total = sides[side][1]["total_us"]  # type: ignore[index]
            cells.append(f"`{where}` | {micros(own)} | {own / total:.1%}")
        lines.append(f"| {rank + 1} | {' | '.join(cells)} |")
    return lines


def profile_section(results: Results, chart: Sequence[str] = ()) -> list[str]:
    """The profile section; ``chart``: its chart's lines, placed after the tables."""
    after = results.profile.get("after") or {}
    before = results.profile.get("before") or {}
    meta = after.get("meta") or before.get("meta") or {}
    then = before.get("meta", {})
    count = meta.get("count", 3000)
    profiler = meta.get("profiler", "yappi")
    lines = [
        "## Where a durable delivery's CPU time goes (profile)",
        "",
        f"`Dispatcher(workers={meta.get('workers', 8)})` on SQLite and on PostgreSQL"
        f" delivering {count:,} POSTs to the instant receiver, run as in the throughput"
        f" table, under {profiler} (every thread, CPU time): the CPU time per delivery,"
        " split into components by the inclusive time of the functions each is made of"
        " (listed below), and the functions with the most time of their own. The"
        " profiler's hook runs on every Python call, so these µs per delivery are several"
        " times those of a run without it (the throughput table's sender CPU): **compare"
        " the shares**.",
        "",
    ]
    if then:
        load = then.get("load")
        lines.append(
            f"*Before*: the code of commit `{then.get('commit') or '?'}` (before issue 16's"
            f" group commit), {then.get('count', count):,} POSTs, measured on"
            f" {then.get('machine', 'this machine')} on {then.get('date', '?')} by"
            f" `{then.get('command', 'python -m benchmarks.profile')}`"
            " (a `git worktree` of that commit: a fresh process imports its `src`, the harness"
            " is this checkout's), stored in"
            f" `benchmarks/data/{profile.BEFORE.name}`."
            + (
                f" The machine's 1-minute load average was {load[0]:.1f} to {load[1]:.1f}"
                " then: it is shared, and CPU time, though less disturbed by other work than"
                " wall time, is not immune."
                if load
                else ""
            )
        )
    else:
        lines.append(
            f"*Before*: {NOT_MEASURED} (`benchmarks/data/{profile.BEFORE.name}` is missing)."
        )
    lines[-1] += (
        " *After*: this checkout's code, measured in this run."
        if after
        else f" *After*: {NOT_MEASURED} in this run."
    )
    for backend in BACKENDS:
        lines += ["", f"### {backend}", "", *profile_table(results, backend)]
        sides = {side: profile_parts(results, side, backend) for side in SIDES}
        measured = {side: found[1] for side, found in sides.items() if found is not None}
        rates = [
            f"{rate(data['rate'])}{' †' if data.get('cut') else ''} deliveries/s {side}"
            for side, data in measured.items()
            if data.get("rate")
        ]
        harness = [
            f"{micros(data['harness_us'])} µs per delivery {side}"
            for side, data in measured.items()
            if data.get("harness_us") is not None
        ]
        if rates or harness:
            lines += [
                "",
                "; ".join(
                    ([f"Under the profiler: {', '.join(rates)}"] if rates else [])
                    + (
                        [
                            "left out of the total, setting up and checking the run (a fresh"
                            " storage, the endpoint, the final count of successes, closing): "
                            + ", ".join(harness)
                        ]
                        if harness
                        else []
                    )
                )
                + ".",
            ]
        if any(data.get("top") for data in measured.values()):
            lines += [
                "",
                f"The {profile.TOP} functions with the most CPU time of their own"
                " (µs per delivery, share of the total):",
                "",
                *profile_top(results, backend),
            ]
    lines += list(chart)
    lines += [
        "",
        "What each component is made of (inclusive CPU time, callees included):",
        "",
        "| component | functions |",
        "|---|---|",
        *(f"| {c.name} | {c.what} |" for c in profile.COMPONENTS),
        f"| {profile.OTHER} | {profile.OTHER_WHAT} |",
    ]
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
* Ratios compare medians measured in the same run, each candidate in the same rounds
  as what it is compared with. "vs raw ceiling": the bare client doing the same POSTs
  with nothing else to do (no signing, no storage); "vs INSERT+COMMIT": one single-row
  insert committed on the same database; "vs Celery": Celery + Redis, one task per
  webhook (build the body, sign it, POST it with httpx), `--pool threads`, results
  ignored; "vs PgQueuer": the PostgreSQL job queue on the same database.
* "enqueue µs/call": the mean cost of `dispatch()` / `.delay()` during the run;
  "sender CPU": CPU time of the sending processes (this one, and the Celery worker)
  per delivery, broker and database servers not included.
* Call latency: each call timed alone, back to back; see that section for the two
  settings of the consumer.
"""


CHART_ALT = {
    "throughput": "Deliveries per second against an instant receiver",
    "latency": "What the caller pays per webhook",
    "queue": "Deliveries or jobs per second draining stored work on PostgreSQL",
    "slow": "Deliveries per second against a slow receiver",
    "curve": "Deliveries per second by workers and concurrency",
    "backlog": "SQLite and PostgreSQL claims and throughput as the backlog grows",
    "profile": "Shares of a durable delivery's CPU time, before and after the group commit",
}


def render(results: Results, *, images: Mapping[str, str]) -> str:
    """The page. ``images``: the path of each chart the run drew, by chart name
    (``benchmarks.chart.CHARTS``), each shown right after its table."""

    def chart(name: str) -> list[str]:
        return ["", f"![{CHART_ALT[name]}]({images[name]})"] if name in images else []

    plan = results.machine.get("plan", {})
    delay_ms = plan.get("delay", 0.1) * 1000
    workers, concurrency = plan.get("workers", 8), plan.get("concurrency", 64)
    parts = [
        "# Benchmarks",
        "",
        "<!-- Generated by `make bench` (python -m benchmarks); do not edit by hand. -->",
        "",
        machine_line(results),
    ]
    if results.machine.get("quick"):
        parts += ["", "> **Quick mode**: small counts, for checking the harness only."]
    parts += [
        "",
        "## Targets",
        "",
        "Each goal with what this run measured and the ratio it is about; a ratio divides"
        " two medians of this run, measured in the same interleaved rounds (the ceilings"
        " and peers are described with their tables below).",
        "",
        *targets_table(results),
    ]
    if results.throughput:
        parts += [
            "",
            f"## Throughput against an instant receiver ({plan.get('count', 0):,} POSTs a run)",
            "",
            "The rows marked *ceiling* (grey in the chart) do the same POSTs with"
            f" nothing else to do. **raw http.client, {workers} threads**: {workers} threads,"
            " each with its own keep-alive `http.client.HTTPConnection` (the standard"
            " library's client: no pool, no lock), taking requests from one shared"
            " counter and reading each whole response: the ceiling of a pool of"
            f" {workers} threads, to which `Dispatcher(workers={workers})` and Celery's"
            f" {workers} threads are compared. **raw httpx.Client**: one thread in a loop"
            f" (the ceiling of inline mode), or one client shared by {workers} threads,"
            " which shows what httpx's pool costs threads (no row is compared with it)."
            f" **raw aiohttp, {concurrency} tasks**: {concurrency} coroutines over one"
            f" session, the ceiling of `AsyncDispatcher(concurrency={concurrency})` and"
            " of httpx's async clients.",
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
            "The storages' ceiling, **INSERT+COMMIT, one row**: one single-row insert"
            " committed on its own, timed like `dispatch()`. SQLite: a fresh file in the"
            " same folder with SQLiteStorage's settings (WAL, `synchronous = NORMAL`, its"
            " page size and checkpoint size), each call `BEGIN IMMEDIATE`, an INSERT of a"
            " 200-byte row,"
            " `COMMIT`. PostgreSQL: one connection in autocommit to the same throwaway"
            " database (`synchronous_commit = off`), each call one `INSERT` through one"
            " cursor used again (as PostgresStorage keeps its cursors), whose round"
            " trip is the insert and its commit. A `dispatch()` stores its event and"
            " delivery in one transaction, so it cannot cost less than one of these;"
            " *vs INSERT+COMMIT* is its p50 over the ceiling's.",
            "",
            "The storages' floor, **dispatch()'s SQL, bare**: the statements the storage"
            " runs for such a `dispatch()` (no worker free to lease its delivery, as here),"
            " on a fresh storage's own tables with one endpoint subscribed, through a bare"
            " connection, every parameter made before the clock starts: no hookdispatch"
            " code runs. SQLite: `BEGIN IMMEDIATE`, the event's INSERT, the fan-out row's"
            " INSERT (its subscribers looked up by the same statement), `COMMIT`;"
            " PostgreSQL: the one statement that does all three. Its *vs INSERT+COMMIT* is"
            " what the schema adds to the one-row ceiling (the event's two indexes, the"
            " fan-out row, the subscriber lookup); a `dispatch()`'s *vs its SQL, bare* is"
            " what hookdispatch's own code adds (validating and encoding the event, ids,"
            " the driver's call; and in the first few calls, made while workers were"
            " free, the lease of their deliveries).",
            "",
            *latency_table(results),
            *chart("latency"),
        ]
    if results.queue:
        versions = results.machine.get("versions", {})
        pgqueuer = f"PgQueuer {versions['pgqueuer']}" if "pgqueuer" in versions else "PgQueuer"
        driver = results.machine.get("pgqueuer_driver") or "its driver"
        parts += [
            "",
            "## PostgreSQL as a job queue: hookdispatch and PgQueuer",
            "",
            f"The peer: {pgqueuer}, a job queue on PostgreSQL alone, installed by its own"
            " installer (what `pgq install` runs) in the same throwaway database, with"
            f" {driver} (the driver its documentation recommends) on the event loop `pgq"
            " run` uses. *Enqueue*: one `Queries.enqueue()` of"
            f" {plan.get('batch', 0):,} jobs (its batch insert), each job's payload the"
            " webhook body; beside it `dispatch_many()` of as many events, from the call"
            f" latency section, per second. *Drain*: {plan.get('drain', 0):,} jobs"
            " enqueued first, then a `QueueManager` with every setting at its default"
            " (batch size 10) and an entrypoint that does nothing, run until the queue is"
            " empty (`run(mode=drain)`, as its own drain benchmark does): jobs/s from its"
            " start to its return. hookdispatch's drain: as many events stored first"
            " (`Storage.add_events`, one delivery each, no dispatcher running), then"
            f" `Dispatcher(workers={workers})` with a transport that answers 200 at once"
            " without any I/O: deliveries/s from its creation to `drain()` returning,"
            " every delivery recorded as succeeded. That is the queue alone (claim, sign,"
            " record the attempt, complete); SQLite and memory are shown for what the"
            " dispatcher itself costs, and only the PostgreSQL rows are compared with"
            " PgQueuer.",
            "",
            *queue_table(results),
            *chart("queue"),
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
    if results.backlog_claim or results.backlog_pg_claim:
        parts += [
            "",
            "## SQLite and PostgreSQL as their backlog grows",
            "",
            "One store per backend grows through the sizes: one event each, its one"
            " delivery due now. At each size, `claim(limit=8)` is timed call by call (the"
            " workers' query), then a `Dispatcher(workers=8)` delivers part of the backlog"
            " to the instant receiver; between rounds the claimed rows are released and the"
            " delivered ones replaced, so each round sees the same backlog. The claim stays"
            " flat because the due query walks the partial index on `next_attempt_at`."
            + (f" SQLite's plan for it: `{results.backlog_plan}`." if results.backlog_plan else ""),
        ]
        if results.backlog_pg_claim:
            parts += [
                "",
                "PostgreSQL's backlog is filled by `INSERT … SELECT … FROM generate_series`"
                " into the tables `PostgresStorage` created (its endpoint added through the"
                " storage, so that its subscriptions exist), in a throwaway database of its"
                " own. Nobody runs `ANALYZE` after a fill: a real backlog arrives faster than"
                " autovacuum analyzes it, so the claims are timed as a worker sees them right"
                " after the burst."
                + backlog_postgres_note(results)
                + (
                    " Its plan for the claim's due query (inside `claim_due_v7`, which runs it"
                    f" with `enable_sort = off`), planned generically as the function's:"
                    f" `{results.backlog_pg_plan}`."
                    if results.backlog_pg_plan
                    else ""
                ),
            ]
        parts += ["", *backlog_table(results), *chart("backlog")]
    if results.profile:
        parts += ["", *profile_section(results, chart("profile"))]
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
    if results.queue:
        parts += ["", *queue_table(results)]
    if results.slow:
        parts += ["", *slow_table(results)]
    parts += ["", receiver_line(results)]
    return "\n".join(parts)
