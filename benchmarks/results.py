"""What a run found, in one structure the report and the chart read (and JSON keeps)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .harness import Series

CELERY = "Celery + Redis, threads 8"
PGQUEUER_ENQUEUE = "PgQueuer enqueue(), one batch"
PGQUEUER_DRAIN = "PgQueuer default worker: drain"


def raw_http_client(threads: int) -> str:
    """The thread pool's ceiling: ``threads`` threads, each its own ``http.client`` connection."""
    return f"raw http.client, {threads} threads"


def insert_commit(storage: str) -> str:
    """The storage's ceiling: one single-row INSERT and its COMMIT."""
    return f"INSERT+COMMIT, one row ({storage})"


def dispatch_sql(storage: str) -> str:
    """The storage's own statements for a ``dispatch()``, run bare."""
    return f"dispatch()'s SQL, bare ({storage})"


def instant_drain(storage: str, workers: int) -> str:
    """A ``Dispatcher`` working through stored deliveries, its transport answering at once."""
    return f"Dispatcher workers={workers} drain ({storage})"


def pg_notes(notes: dict[str, Any]) -> dict[str, Any]:
    """``backlog_pg_notes`` from JSON: its per-level maps keyed by int again."""
    return {
        key: {int(level): item for level, item in value.items()}
        if isinstance(value, dict)
        else value
        for key, value in notes.items()
    }


@dataclass
class Row:
    """One candidate of a table: ``ceiling`` names the row it is compared with."""

    name: str
    kind: str  # "ceiling", "floor" (a storage's own statements, bare), "hookdispatch", "peer"
    ceiling: str | None
    series: Series


@dataclass
class Results:
    machine: dict[str, Any] = field(default_factory=dict)
    receiver: dict[str, Any] = field(default_factory=dict)
    throughput: list[Row] = field(default_factory=list)
    latency: list[Row] = field(default_factory=list)  # consumer waiting on a slow receiver
    latency_busy: list[Row] = field(default_factory=list)  # consumer delivering as calls come
    batch: list[Row] = field(default_factory=list)
    # PostgreSQL as a job queue: PgQueuer's enqueue and drain, hookdispatch's instant drain
    queue: list[Row] = field(default_factory=list)
    slow: dict[int, list[Row]] = field(default_factory=dict)
    curve: dict[str, dict[int, Series]] = field(default_factory=dict)
    backlog_claim: dict[int, Series] = field(default_factory=dict)
    backlog_rate: dict[int, Series] = field(default_factory=dict)
    backlog_plan: str = ""
    backlog_fill: dict[int, float] = field(default_factory=dict)
    # The same backlog on PostgreSQL (filled by SQL, never analyzed by us)
    backlog_pg_claim: dict[int, Series] = field(default_factory=dict)
    backlog_pg_rate: dict[int, Series] = field(default_factory=dict)
    backlog_pg_plan: str = ""
    backlog_pg_fill: dict[int, float] = field(default_factory=dict)
    # {"autovacuum": the server's setting, "analyzed": {level: bool}, "reltuples": {level: n}}
    backlog_pg_notes: dict[str, Any] = field(default_factory=dict)
    # backend -> [[endpoints registered, dispatch() p50 µs, p99 µs], ...]
    fanout: dict[str, list[list[float]]] = field(default_factory=dict)
    # backend -> [dispatch() p50 µs, µs per delivery] for one tenant with 1,000 endpoints
    fanout_wide: dict[str, list[float]] = field(default_factory=dict)
    # backend -> one row per variant of the noisy neighbour (benchmarks/fairness.py):
    # {"label", "b_last", "a_last", "a_pending", "dispatch_a"}, seconds from B's dispatch
    fairness: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Where a durable delivery's CPU time goes (benchmarks/profile.py): {"after": the
    # run's own profile, "before": the stored one of an older commit}, each
    # {"meta": {...}, "backends": {backend: profile.summarize()'s dict}}
    profile: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def row(self, table: list[Row], name: str) -> Row | None:
        return next((row for row in table if row.name == name), None)

    def save(self, path: Path) -> None:
        def encode(value: Any) -> Any:
            if isinstance(value, Series):
                return value.to_json()
            if isinstance(value, Row):
                return {**asdict(value), "series": value.series.to_json()}
            if isinstance(value, dict):
                return {str(key): encode(item) for key, item in value.items()}
            if isinstance(value, list):
                return [encode(item) for item in value]
            return value

        data = {name: encode(getattr(self, name)) for name in self.__dataclass_fields__}
        path.write_text(json.dumps(data, indent=1))

    @classmethod
    def load(cls, path: Path) -> Results:
        data = json.loads(path.read_text())

        def rows(items: list[dict[str, Any]]) -> list[Row]:
            return [Row(**{**item, "series": Series.from_json(item["series"])}) for item in items]

        def by_int(items: dict[str, Any]) -> dict[int, Series]:
            return {int(key): Series.from_json(value) for key, value in items.items()}

        return cls(
            machine=data["machine"],
            receiver=data["receiver"],
            throughput=rows(data["throughput"]),
            latency=rows(data["latency"]),
            latency_busy=rows(data.get("latency_busy", [])),
            batch=rows(data["batch"]),
            queue=rows(data.get("queue", [])),
            slow={int(key): rows(value) for key, value in data["slow"].items()},
            curve={key: by_int(value) for key, value in data["curve"].items()},
            backlog_claim=by_int(data["backlog_claim"]),
            backlog_rate=by_int(data["backlog_rate"]),
            backlog_plan=data["backlog_plan"],
            backlog_fill={int(key): value for key, value in data["backlog_fill"].items()},
            backlog_pg_claim=by_int(data.get("backlog_pg_claim", {})),
            backlog_pg_rate=by_int(data.get("backlog_pg_rate", {})),
            backlog_pg_plan=data.get("backlog_pg_plan", ""),
            backlog_pg_fill={
                int(key): value for key, value in data.get("backlog_pg_fill", {}).items()
            },
            backlog_pg_notes=pg_notes(data.get("backlog_pg_notes", {})),
            fanout=data.get("fanout", {}),
            fanout_wide=data.get("fanout_wide", {}),
            fairness=data.get("fairness", {}),
            profile=data.get("profile", {}),
            skipped=data["skipped"],
        )
