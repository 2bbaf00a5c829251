"""The benchmark page's targets: each goal beside its measured value and ratio.

Made-up results (the figures do not matter, the arithmetic and the wording do):
the targets against the true ceilings (raw http.client, one INSERT+COMMIT,
PgQueuer), the backlog's flatness on SQLite and PostgreSQL, "not measured" where
a row is missing, and a JSON round trip that keeps the new rows.
"""

# The report is typeset: multiplication signs for ratios.
# ruff: noqa: RUF001

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("aiohttp", reason="the benchmarks import aiohttp (the test extra)")

from benchmarks import report, scale
from benchmarks.harness import Run, Series
from benchmarks.results import (
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


def series(value: float, p99: float | None = None) -> Series:
    return Series([Run(value * 0.9, p99=p99), Run(value, p99=p99), Run(value * 1.1, p99=p99)])


def results() -> Results:
    http_client = raw_http_client(8)
    aiohttp = "raw aiohttp, 64 tasks"
    return Results(
        machine={
            "date": "2026-12-07",
            "cpus": 2,
            "python": "3.11",
            "plan": {"workers": 8, "concurrency": 64, "batch": 1000, "drain": 5000},
            "versions": {"pgqueuer": "1.6.0"},
            "pgqueuer_driver": "asyncpg",
        },
        throughput=[
            Row(http_client, "ceiling", None, series(7000.0)),
            Row("raw httpx.Client, 8 threads", "ceiling", None, series(1600.0)),
            Row(aiohttp, "ceiling", None, series(6000.0)),
            Row("Dispatcher workers=8 (memory)", "hookdispatch", http_client, series(5600.0)),
            Row("Dispatcher workers=8 (SQLite)", "hookdispatch", http_client, series(1400.0)),
            Row("Dispatcher workers=8 (PostgreSQL)", "hookdispatch", http_client, series(2800.0)),
            Row("AsyncDispatcher concurrency=64 (memory)", "hookdispatch", aiohttp, series(4000.0)),
            Row("AsyncDispatcher concurrency=64 (SQLite)", "hookdispatch", aiohttp, series(3000.0)),
            Row(CELERY, "peer", http_client, series(200.0)),
        ],
        latency=[
            Row("dispatch() (memory)", "hookdispatch", None, series(12.0, 40.0)),
            Row("dispatch() (SQLite)", "hookdispatch", insert_commit("SQLite"), series(60.0)),
            Row(insert_commit("SQLite"), "ceiling", None, series(20.0, 90.0)),
            Row(dispatch_sql("SQLite"), "floor", insert_commit("SQLite"), series(50.0)),
            Row(
                "dispatch() (PostgreSQL)",
                "hookdispatch",
                insert_commit("PostgreSQL"),
                series(240.0),
            ),
            Row(insert_commit("PostgreSQL"), "ceiling", None, series(160.0, 280.0)),
        ],
        batch=[
            Row("dispatch_many(), per event (SQLite)", "batch", None, series(25.0)),
            Row("dispatch_many(), per event (PostgreSQL)", "batch", None, series(40.0)),
        ],
        queue=[
            Row(PGQUEUER_ENQUEUE, "peer", None, series(20_000.0)),
            Row(PGQUEUER_DRAIN, "peer", None, series(4000.0)),
            Row(instant_drain("PostgreSQL", 8), "hookdispatch", PGQUEUER_DRAIN, series(800.0)),
            Row(instant_drain("SQLite", 8), "hookdispatch", PGQUEUER_DRAIN, series(3000.0)),
        ],
    )


def by_goal(found: Results) -> dict[str, report.Target]:
    return {target.what: target for target in report.targets(found)}


def test_targets_compare_with_the_true_ceilings_measured_in_the_run() -> None:
    found = by_goal(results())

    pool = found["Dispatcher(workers=8) (memory) ≥ 0.8 × raw http.client ×8"]
    assert (pool.measured, pool.ratio, pool.met) == ("5,600/s vs 7,000/s", "0.80×", True)
    sqlite = found["Dispatcher(workers=8) (SQLite) ≥ 0.5 × raw http.client ×8"]
    assert (sqlite.ratio, sqlite.met) == ("0.20×", False)
    postgres = found["Dispatcher(workers=8) (PostgreSQL) ≥ 0.4 × raw http.client ×8"]
    assert (postgres.ratio, postgres.met) == ("0.40×", True)
    assert found["AsyncDispatcher(concurrency=64) (SQLite) ≥ 0.5 × raw aiohttp ×64"].met is True
    assert found["AsyncDispatcher(concurrency=64) (memory) ≥ 0.6 × raw aiohttp ×64"].met is True

    memory = found["dispatch() p50 (memory) ≤ 15 µs"]
    assert (memory.measured, memory.ratio, memory.met) == ("12.0 µs", "0.80× the goal", True)
    stored = found["dispatch() p50 (SQLite) ≤ 1.5 × INSERT+COMMIT"]
    assert (stored.measured, stored.ratio, stored.met) == ("60.0 µs vs 20.0 µs", "3.00×", False)
    assert found["dispatch() p50 (PostgreSQL) ≤ 1.5 × INSERT+COMMIT"].met is True

    many = found["dispatch_many() (PostgreSQL) ≥ 20,000 events/s"]
    assert (many.measured, many.ratio, many.met) == ("25,000 events/s", "1.25× the goal", True)
    assert found["dispatch_many() (SQLite) ≥ 50,000 events/s"].met is False
    drain = found[
        "PostgreSQL drain (Dispatcher workers=8, instant transport) ≥ 1.0 × PgQueuer's default"
        " worker"
    ]
    assert (drain.measured, drain.ratio, drain.met) == ("800/s vs 4,000/s", "0.20×", False)

    # The older goals against httpx.Client in 8 threads are gone: http.client is the ceiling now.
    assert not [what for what in found if "httpx.Client" in what]


def test_the_page_shows_each_ratio_next_to_its_target_and_says_what_the_ceilings_are() -> None:
    page = report.render(results(), images={})
    assert "| target | measured | ratio | met |" in page
    assert (
        "| dispatch() p50 (SQLite) ≤ 1.5 × INSERT+COMMIT | 60.0 µs vs 20.0 µs | 3.00× | **no** |"
        in page
    )
    assert "`http.client.HTTPConnection`" in page
    assert "**INSERT+COMMIT, one row**" in page
    # The latency table: dispatch() over its storage's ceiling, beside it.
    assert "| **dispatch() (SQLite)** | 60.0 | 54.0–66.0 |  | 3.00× | 1.20× |" in page
    assert "| INSERT+COMMIT, one row (SQLite) | 20.0 | 18.0–22.0 | 90.0 | ceiling |  |" in page
    # ... and over the storage's own statements, bare: what hookdispatch's code adds,
    # beside what the schema adds to the ceiling.
    assert "**dispatch()'s SQL, bare**" in page
    assert "| dispatch()'s SQL, bare (SQLite) | 50.0 | 45.0–55.0 |  | 2.50× | floor |  |" in page
    # Without a floor (PostgreSQL here), the column stays empty.
    assert "| **dispatch() (PostgreSQL)** | 240 | 216–264 |  | 1.50× |  |" in page
    # The job-queue section: PgQueuer's rows and hookdispatch's against them.
    assert "## PostgreSQL as a job queue: hookdispatch and PgQueuer" in page
    assert "PgQueuer 1.6.0" in page
    assert "| **Dispatcher workers=8 drain (PostgreSQL)** | 800 | 720–880 | 0.20× its drain |" in (
        page
    )
    assert "| **dispatch_many(), per event (PostgreSQL)** | 25,000 |" in page
    assert "1.25× its enqueue" in page


def test_without_postgresql_or_pgqueuer_the_rows_say_not_measured() -> None:
    found = results()
    found.throughput = [row for row in found.throughput if "PostgreSQL" not in row.name]
    found.latency = [row for row in found.latency if "PostgreSQL" not in row.name]
    found.batch = [row for row in found.batch if "PostgreSQL" not in row.name]
    found.queue = [row for row in found.queue if row.kind != "peer" and "SQLite" in row.name]
    goals = by_goal(found)
    for what in (
        "Dispatcher(workers=8) (PostgreSQL) ≥ 0.4 × raw http.client ×8",
        "dispatch() p50 (PostgreSQL) ≤ 1.5 × INSERT+COMMIT",
        "dispatch_many() (PostgreSQL) ≥ 20,000 events/s",
        "PostgreSQL drain (Dispatcher workers=8, instant transport) ≥ 1.0 × PgQueuer's default"
        " worker",
    ):
        assert (goals[what].measured, goals[what].met) == ("not measured", None)
    page = report.render(found, images={})
    assert f"| {PGQUEUER_DRAIN} | not measured |" in page
    assert f"| {PGQUEUER_ENQUEUE} | not measured |" in page

    nothing = by_goal(Results())
    assert {target.measured for target in nothing.values()} == {"not measured"}
    report.render(Results(), images={})
    report.summary(Results())


def test_the_new_rows_survive_a_json_round_trip(tmp_path: Path) -> None:
    found = results()
    path = tmp_path / "results.json"
    found.save(path)
    loaded = Results.load(path)
    assert loaded.queue == found.queue
    assert loaded.latency == found.latency
    assert report.render(loaded, images={}) == report.render(found, images={})


def with_backlogs(found: Results, *, postgres: bool = True) -> Results:
    levels = (1_000, 100_000, 1_000_000)
    found.machine["plan"]["backlogs"] = list(levels)
    found.backlog_claim = {
        n: series(v, v * 4) for n, v in zip(levels, (40.0, 42.0, 60.0), strict=True)
    }
    found.backlog_rate = {n: series(2000.0) for n in levels}
    found.backlog_fill = {n: n / 20_000 for n in levels}
    found.backlog_plan = "SEARCH d USING INDEX deliveries_due (next_attempt_at<?)"
    if postgres:
        found.backlog_pg_claim = {
            n: series(v, v * 3) for n, v in zip(levels, (300.0, 320.0, 900.0), strict=True)
        }
        found.backlog_pg_rate = {n: series(900.0) for n in levels}
        found.backlog_pg_fill = {n: n / 25_000 for n in levels}
        found.backlog_pg_plan = "Limit; LockRows; Nested Loop; Index Scan using deliveries_due"
        found.backlog_pg_notes = {
            "autovacuum": "on",
            "analyzed": {1_000: False, 100_000: False, 1_000_000: True},
            "reltuples": {1_000: -1.0, 100_000: -1.0, 1_000_000: 1e6},
        }
    return found


def test_the_backlog_targets_ask_each_backend_to_stay_flat() -> None:
    goals = by_goal(with_backlogs(results()))
    sqlite = goals["claim(limit=8) p50 (SQLite) flat: at 1,000,000 pending ≤ 2 × at 1,000"]
    assert (sqlite.measured, sqlite.ratio, sqlite.met) == ("60.0 vs 40.0 µs", "1.50×", True)
    postgres = goals["claim(limit=8) p50 (PostgreSQL) flat: at 1,000,000 pending ≤ 2 × at 1,000"]
    assert (postgres.measured, postgres.ratio, postgres.met) == ("900 vs 300 µs", "3.00×", False)

    # Without PostgreSQL (or without the section): its target is not measured.
    goals = by_goal(with_backlogs(results(), postgres=False))
    what = "claim(limit=8) p50 (PostgreSQL) flat: at 1,000,000 pending ≤ 2 × at 1,000"
    assert (goals[what].measured, goals[what].met) == ("not measured", None)
    assert by_goal(Results())[what].measured == "not measured"


def test_the_backlog_table_shows_both_backends_and_how_postgresql_was_filled() -> None:
    page = report.render(with_backlogs(results()), images={"backlog": "img/b.png"})
    assert "## SQLite and PostgreSQL as their backlog grows" in page
    assert "| SQLite | 1,000,000 | 60.0 | 54.0–66.0 | 240 | 2,000 | 1,800–2,200 | 50.0 s |" in page
    assert "| PostgreSQL | 1,000 | 300 | 270–330 | 900 | 900 | 810–990 | 0.0 s |" in page
    assert "`INSERT … SELECT … FROM generate_series`" in page
    assert "Nobody runs `ANALYZE` after a fill" in page
    assert "`autovacuum = on`" in page
    assert "analyzed the table by the end of the rounds at 1,000,000 pending" in page
    assert "`Limit; LockRows; Nested Loop; Index Scan using deliveries_due`" in page

    page = report.render(with_backlogs(results(), postgres=False), images={})
    assert "| PostgreSQL |  | not measured |" in page
    assert "generate_series" not in page


def test_the_backlogs_survive_a_json_round_trip(tmp_path: Path) -> None:
    found = with_backlogs(results())
    path = tmp_path / "results.json"
    found.save(path)
    loaded = Results.load(path)
    assert loaded.backlog_pg_claim == found.backlog_pg_claim
    assert loaded.backlog_pg_notes == found.backlog_pg_notes  # levels are ints again
    assert report.render(loaded, images={}) == report.render(found, images={})

    # Results saved before PostgreSQL's backlog was measured still load.
    data = json.loads(path.read_text())
    for name in [key for key in data if key.startswith("backlog_pg") or key == "profile"]:
        del data[name]
    path.write_text(json.dumps(data))
    older = Results.load(path)
    assert older.backlog_pg_claim == {}
    assert older.profile == {}
    report.render(older, images={})


def test_the_postgresql_plan_keeps_the_nodes() -> None:
    explained = [
        "Limit  (cost=0.56..1.20 rows=8 width=38)",
        "  ->  LockRows  (cost=0.56..80.31 rows=1000 width=38)",
        "        ->  Nested Loop  (cost=0.56..70.31 rows=1000 width=38)",
        "              Join Filter: (d.endpoint_id = e.id)",
        "              ->  Index Scan using deliveries_due on deliveries d  (cost=0.42..8.44)",
        "                    Index Cond: (next_attempt_at <= $1)",
    ]
    assert scale.plan_nodes(explained) == (
        "Limit; LockRows; Nested Loop; Index Scan using deliveries_due on deliveries d"
    )
