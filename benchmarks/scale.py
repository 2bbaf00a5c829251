"""Scale curves: SQLite and PostgreSQL as their backlog grows.

Backlog: one store per backend is filled to 1k, 100k and 1M pending deliveries, one
event each, due now. SQLite is filled straight through ``storage.add_events`` in
large batches; PostgreSQL by ``INSERT ... SELECT ... FROM generate_series`` into the
tables ``PostgresStorage`` created (its endpoint added through the storage, so its
subscriptions exist), which takes seconds where a million rows through the Python
API would take minutes. At each size we time ``claim(limit=8)``, the workers'
query, and the deliveries/s of a ``Dispatcher(workers=8)`` working through part of
the backlog. The due query walks the partial index ``deliveries_due``, so both must
stay flat; the query plan is recorded to show it. Between rounds the claimed rows
are released and the delivered ones replaced, so every round sees the same backlog.

PostgreSQL's table is not analyzed after a fill (no ``ANALYZE``): a real backlog
arrives faster than autovacuum analyzes, and the claims are timed as a worker sees
them right after the burst. Whether the table had been analyzed by the time its
claims were timed is recorded with the results.
"""

from __future__ import annotations

import itertools
import sqlite3
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import hookdispatch as hd

from .harness import BODY, DATA, EVENT_TYPE, Deadline, Run, Series, log
from .hookdispatch_runs import LOCAL
from .receiver import Receiver

FILL_BATCH = 20_000
PG_FILL_BATCH = 250_000  # rows per INSERT ... SELECT (its own transaction)
PG_SCHEMA = "backlog"

_serial = itertools.count()

# The claim's due query, as claim_due_v7 runs it (SET enable_sort = off, its
# parameters planned as parameters): what EXPLAIN shows for PostgreSQL.
_PG_DUE = (
    "SELECT d.id FROM {schema}.deliveries d JOIN {schema}.endpoints e ON e.id = d.endpoint_id"
    " WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND e.enabled"
    " AND d.endpoint_id <> ALL($3) ORDER BY d.next_attempt_at LIMIT $2"
    " FOR NO KEY UPDATE OF d SKIP LOCKED"
)

BacklogResult = tuple[dict[int, Series], dict[int, Series], str, dict[int, float]]


def utc_now() -> datetime:
    return datetime.now(UTC)


def fill(storage: hd.SQLiteStorage, endpoint: hd.Endpoint, count: int) -> None:
    """Add ``count`` events, each with one pending delivery due now."""
    while count > 0:
        now = utc_now()
        batch = []
        for _ in range(min(count, FILL_BATCH)):
            event_id = f"evt_backlog_{next(_serial):09d}"
            event = hd.Event(id=event_id, type=EVENT_TYPE, created_at=now, data=DATA, body=BODY)
            batch.append((event, [hd.Delivery.create(event, endpoint, now=now)]))
        storage.add_events(batch)
        count -= len(batch)


def pending(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM deliveries WHERE status = 'pending'").fetchone()[
            0
        ]


def release_leases(path: Path) -> None:
    """Make claimed deliveries due again, as their leases' end would."""
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE deliveries SET next_attempt_at = created_at, lease = NULL"
            " WHERE status = 'pending' AND lease IS NOT NULL"
        )


def query_plan(path: Path) -> str:
    """SQLite's plan for the claim's due query: it should SEARCH the partial index."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "EXPLAIN QUERY PLAN SELECT d.id FROM deliveries d JOIN endpoints e"
            " ON e.id = d.endpoint_id WHERE d.status = 'pending' AND d.next_attempt_at <= ?"
            " AND e.enabled = 1 ORDER BY d.next_attempt_at LIMIT 8",
            (time.time(),),
        ).fetchall()
    return "; ".join(row[-1] for row in rows)


def claim_cost(storage: hd.Storage, calls: int, limit: float) -> Run:
    """µs per ``claim(limit=8)``: median over ``calls`` calls (p99 kept too)."""
    samples: list[float] = []
    deadline = Deadline(limit)
    while len(samples) < calls and not deadline.expired:
        now = utc_now()
        began = time.perf_counter_ns()
        claims = storage.claim(now=now, lease_until=now + timedelta(seconds=60), limit=8)
        samples.append((time.perf_counter_ns() - began) / 1000)
        assert len(claims) == 8, "the backlog ran dry"
    ordered = sorted(samples)
    return Run(
        statistics.median(ordered),
        cut=len(samples) < calls,
        p99=ordered[round(0.99 * (len(ordered) - 1))],
    )


def work_through(storage: hd.Storage, receiver: Receiver, count: int, limit: float) -> Run:
    """Deliveries/s of ``Dispatcher(workers=8)`` delivering ``count`` of the backlog."""
    before = receiver.count()
    deadline = Deadline(limit)
    cpu = time.process_time()
    hooks = hd.Dispatcher(storage=storage, workers=8, targets=LOCAL)
    try:
        while (delivered := receiver.count() - before) < count and not deadline.expired:
            time.sleep(0.01)
        elapsed = time.perf_counter() - deadline.began
        cpu = time.process_time() - cpu
    finally:
        hooks.close(timeout=0)
    return Run(delivered / elapsed, cut=delivered < count, cpu_us=cpu / max(delivered, 1) * 1e6)


class Backlog(Protocol):
    """One backend's store of pending deliveries, and the SQL that keeps it so."""

    storage: hd.Storage

    def fill(self, count: int) -> None: ...

    def pending(self) -> int: ...

    def release(self) -> None: ...


class _SQLiteBacklog:
    def __init__(self, path: Path, url: str) -> None:
        self.path = path
        self.storage = hd.SQLiteStorage(path)
        self.endpoint = hd.Endpoint.create(url, now=utc_now())
        self.storage.add_endpoint(self.endpoint)

    def fill(self, count: int) -> None:
        fill(self.storage, self.endpoint, count)

    def pending(self) -> int:
        return pending(self.path)

    def release(self) -> None:
        release_leases(self.path)


class _PostgresBacklog:
    """A ``PostgresStorage`` schema filled by SQL, and a connection of our own to do it."""

    def __init__(self, dsn: str, url: str) -> None:
        import psycopg
        from psycopg import sql

        self.dsn = dsn
        self.storage = hd.PostgresStorage(dsn, schema=PG_SCHEMA, max_connections=12)
        self.endpoint = hd.Endpoint.create(url, now=utc_now())
        self.storage.add_endpoint(self.endpoint)  # its subscriptions come with it (a trigger)
        self.conn = psycopg.connect(dsn, autocommit=True)
        self._schema = sql.Identifier(PG_SCHEMA)
        self._sql = sql
        self.made = 0

    def q(self, template: str) -> Any:
        return self._sql.SQL(template).format(schema=self._schema)

    def fill(self, count: int) -> None:
        """``count`` events, one pending delivery each, due by now in the order made."""
        while count > 0:
            rows = min(count, PG_FILL_BATCH)
            first, last = self.made + 1, self.made + rows
            params = {
                "first": first,
                "last": last,
                "at": utc_now(),
                "type": EVENT_TYPE,
                "body": BODY,
                "tenant": self.endpoint.tenant,
                "endpoint": self.endpoint.id,
            }
            # The n-th row is made at `at` less (last - n) µs: the newest at `at`.
            with self.conn.transaction():
                self.conn.execute(
                    self.q(
                        "INSERT INTO {schema}.events (id, type, created_at, body, tenant)"
                        " SELECT 'evt_backlog_' || lpad(g::text, 9, '0'), %(type)s,"
                        " %(at)s - (%(last)s - g) * interval '1 microsecond', %(body)s,"
                        " %(tenant)s FROM generate_series(%(first)s::bigint, %(last)s) AS g"
                    ),
                    params,
                )
                self.conn.execute(
                    self.q(
                        "INSERT INTO {schema}.deliveries (id, event_id, endpoint_id, status,"
                        " attempt_count, next_attempt_at, last_error, lease, created_at,"
                        " updated_at, tenant, event_type)"
                        " SELECT 'dlv_backlog_' || lpad(g::text, 9, '0'),"
                        " 'evt_backlog_' || lpad(g::text, 9, '0'), %(endpoint)s, 'pending', 0,"
                        " t.at, NULL, NULL, t.at, t.at, %(tenant)s, %(type)s"
                        " FROM generate_series(%(first)s::bigint, %(last)s) AS g,"
                        " LATERAL (SELECT %(at)s - (%(last)s - g) * interval '1 microsecond')"
                        " AS t (at)"
                    ),
                    params,
                )
            self.made = last
            count -= rows

    def pending(self) -> int:
        query = "SELECT count(*) FROM {schema}.deliveries WHERE status = 'pending'"
        return int(self.conn.execute(self.q(query)).fetchone()[0])  # type: ignore[index]

    def release(self) -> None:
        self.conn.execute(
            self.q(
                "UPDATE {schema}.deliveries SET next_attempt_at = created_at, lease = NULL"
                " WHERE status = 'pending' AND lease IS NOT NULL"
            )
        )

    def analyzed(self) -> tuple[bool, float]:
        """Whether the deliveries table has been analyzed (by anyone), and the row
        count the planner believes it has (-1: never counted)."""
        row = self.conn.execute(
            "SELECT s.last_analyze IS NOT NULL OR s.last_autoanalyze IS NOT NULL, c.reltuples"
            " FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid"
            " WHERE c.oid = %s::regclass",
            (f"{PG_SCHEMA}.deliveries",),
        ).fetchone()
        return (bool(row[0]), float(row[1])) if row else (False, -1.0)

    def autovacuum(self) -> str:
        return str(self.conn.execute("SHOW autovacuum").fetchone()[0])  # type: ignore[index]

    def plan(self) -> str:
        """PostgreSQL's plan for the claim's due query, as ``claim_due_v7`` runs it."""
        import psycopg

        with psycopg.connect(self.dsn) as conn:  # its prepared statement goes with it
            conn.execute("SET enable_sort = off")
            conn.execute("SET plan_cache_mode = force_generic_plan")
            conn.execute(
                self.q("PREPARE backlog_due (timestamptz, integer, text[]) AS ")
                + self._sql.SQL(_PG_DUE).format(schema=self._schema)
            )
            rows = conn.execute("EXPLAIN EXECUTE backlog_due (now(), 8, '{}')").fetchall()
        return plan_nodes([row[0] for row in rows])

    def close(self) -> None:
        self.storage.close()
        self.conn.close()


def plan_nodes(lines: list[str]) -> str:
    """The node names of an EXPLAIN's lines, costs and conditions left out."""
    nodes = []
    for line in lines:
        text = line.strip()
        if text.startswith("->"):
            text = text[2:].strip()
        elif nodes:
            continue  # a condition or filter of the node above
        nodes.append(text.split("  (cost=")[0].strip())
    return "; ".join(nodes)


def _levels(
    backlog: Backlog,
    receiver: Receiver,
    *,
    levels: list[int],
    rounds: int,
    claims: int,
    deliveries: int,
    limit: float,
    after_level: Any = None,
) -> tuple[dict[int, Series], dict[int, Series], dict[int, float]]:
    """Per backlog size: claim µs, deliveries/s, seconds to fill the level."""
    claim_us: dict[int, Series] = {}
    rates: dict[int, Series] = {}
    fill_seconds: dict[int, float] = {}
    size = 0
    for level in levels:
        began = time.perf_counter()
        backlog.fill(level - size)
        fill_seconds[level] = time.perf_counter() - began
        size = level
        log(f"  backlog {level:,}: filled in {fill_seconds[level]:.1f} s")
        claim_us[level], rates[level] = Series(), Series()
        for _ in range(rounds):
            claim_us[level].runs.append(
                claim_cost(backlog.storage, min(claims, level // 16), limit)
            )
            backlog.release()
            rates[level].runs.append(
                work_through(backlog.storage, receiver, min(deliveries, level // 2), limit)
            )
            backlog.release()
            backlog.fill(level - backlog.pending())
        if after_level is not None:
            after_level(level)
        log(f"    claim {claim_us[level].median:,.0f} µs, {rates[level].median:,.0f} deliveries/s")
    return claim_us, rates, fill_seconds


def backlog_curve(
    receiver: Receiver,
    folder: Path,
    *,
    levels: list[int],
    rounds: int,
    claims: int,
    deliveries: int,
    limit: float,
) -> BacklogResult:
    """SQLite, per backlog size: claim µs, deliveries/s; the query plan; seconds to fill."""
    path = folder / "backlog.db"
    backlog = _SQLiteBacklog(path, receiver.url)
    try:
        claim_us, rates, fill_seconds = _levels(
            backlog,
            receiver,
            levels=levels,
            rounds=rounds,
            claims=claims,
            deliveries=deliveries,
            limit=limit,
        )
        plan = query_plan(path)
    finally:
        backlog.storage.close()
    return claim_us, rates, plan, fill_seconds


def postgres_backlog_curve(
    receiver: Receiver,
    dsn: str,
    *,
    levels: list[int],
    rounds: int,
    claims: int,
    deliveries: int,
    limit: float,
) -> tuple[dict[int, Series], dict[int, Series], str, dict[int, float], dict[str, Any]]:
    """PostgreSQL (a schema of the database ``dsn``), as :func:`backlog_curve`; and
    what the planner knew: the server's autovacuum setting, and per level whether
    the table had been analyzed once its claims were timed and the rows it believed
    the table had."""
    backlog = _PostgresBacklog(dsn, receiver.url)
    notes: dict[str, Any] = {"autovacuum": backlog.autovacuum(), "analyzed": {}, "reltuples": {}}

    def note(level: int) -> None:
        analyzed, reltuples = backlog.analyzed()
        notes["analyzed"][level], notes["reltuples"][level] = analyzed, reltuples

    try:
        claim_us, rates, fill_seconds = _levels(
            backlog,
            receiver,
            levels=levels,
            rounds=rounds,
            claims=claims,
            deliveries=deliveries,
            limit=limit,
            after_level=note,
        )
        plan = backlog.plan()
    finally:
        backlog.close()
    return claim_us, rates, plan, fill_seconds, notes
