"""Take a database back to an earlier schema version, as that release wrote it.

Each migration's undo, written once: the migration tests build a file or schema
with today's code, go back to version N here, and open it again to watch it
migrate. A new migration adds its undo here.
"""

from __future__ import annotations

import sqlite3
from typing import Any

__all__ = ["postgres_back_to", "result_columns", "sqlite_back_to"]

_SQLITE_UNDO: dict[int, tuple[str, ...]] = {
    # The undo of the migration that brought the file to this version.
    10: ("DROP TABLE fanout",),
    9: tuple(
        f"DROP INDEX {name}"
        for name in ("deliveries_failed", "deliveries_failed_tenant", "deliveries_failed_endpoint")
    ),
    8: ("DROP INDEX deliveries_tenant_due",),
    7: (
        "DROP INDEX deliveries_tenant",
        "DROP INDEX deliveries_created",
        "DROP INDEX deliveries_endpoint_created",
        "DROP INDEX endpoints_tenant",
        "ALTER TABLE deliveries DROP COLUMN tenant",
        "ALTER TABLE deliveries DROP COLUMN event_type",
        "ALTER TABLE endpoints DROP COLUMN deleted_at",
    ),
    6: tuple(
        f"ALTER TABLE endpoints DROP COLUMN {c}" for c in ("description", "headers", "metadata")
    ),
    5: (
        "ALTER TABLE endpoints DROP COLUMN previous_secret",
        "ALTER TABLE endpoints DROP COLUMN previous_secret_expires_at",
    ),
}

_POSTGRES_UNDO: dict[int, tuple[str, ...]] = {
    12: ("DROP FUNCTION {s}.complete_and_claim_v1",),
    11: ("DROP TABLE {s}.fanout",),
    10: tuple(
        "DROP INDEX {s}." + name
        for name in ("deliveries_failed", "deliveries_failed_tenant", "deliveries_failed_endpoint")
    ),
    9: (
        "DROP FUNCTION {s}.claim_due_v8",
        "DROP FUNCTION {s}.pending_tenants",
        "DROP INDEX {s}.deliveries_tenant_due",
    ),
    8: (
        "DROP FUNCTION {s}.claim_due_v7",
        "DROP INDEX {s}.deliveries_listed",
        "ALTER TABLE {s}.deliveries DROP COLUMN tenant, DROP COLUMN event_type",
        "ALTER TABLE {s}.endpoints DROP COLUMN deleted_at",
        "DROP INDEX {s}.endpoints_tenant",
    ),
    7: (
        "DROP FUNCTION {s}.claim_due_v6",
        "ALTER TABLE {s}.endpoints DROP COLUMN description, DROP COLUMN headers,"
        " DROP COLUMN metadata",
    ),
    6: (
        "DROP FUNCTION {s}.claim_due_v5",
        "ALTER TABLE {s}.endpoints DROP COLUMN previous_secret,"
        " DROP COLUMN previous_secret_expires_at",
    ),
    5: ("DROP INDEX {s}.deliveries_finished", "DROP INDEX {s}.events_created"),
    4: (
        "DROP FUNCTION {s}.claim_due_v4",
        "DROP TABLE {s}.subscriptions",
        "DROP FUNCTION {s}.sync_subscriptions CASCADE",  # and its triggers
        "ALTER TABLE {s}.endpoints DROP COLUMN tenant",
        "ALTER TABLE {s}.events DROP COLUMN tenant",
    ),
    3: ("DROP FUNCTION {s}.claim_due_v3",),
}


def sqlite_back_to(conn: sqlite3.Connection, version: int) -> None:
    """Undo the migrations after ``version`` (newest first) and set ``user_version``."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    for undone in range(current, version, -1):
        for statement in _SQLITE_UNDO[undone]:
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")


def result_columns(conn: Any, schema: str, function: str) -> int:
    """How many columns ``function`` of ``schema`` returns (its OUT parameters): a
    claim function kept for a rolling upgrade must not change under older processes."""
    [(count,)] = conn.execute(
        "SELECT count(*) FROM information_schema.parameters p"
        " JOIN information_schema.routines r ON r.specific_name = p.specific_name"
        " WHERE r.routine_schema = %s AND r.routine_name = %s"
        " AND p.parameter_mode = 'OUT'",
        (schema, function),
    ).fetchall()
    return int(count)


def postgres_back_to(conn: Any, schema: str, version: int) -> None:
    """Undo the migrations after ``version`` in ``schema`` (an autocommit psycopg
    connection) and set its ``schema_version``."""
    quoted = '"' + schema.replace('"', '""') + '"'
    [(current,)] = conn.execute(f"SELECT version FROM {quoted}.schema_version").fetchall()
    for undone in range(current, version, -1):
        for statement in _POSTGRES_UNDO[undone]:
            conn.execute(statement.format(s=quoted))
    conn.execute(f"UPDATE {quoted}.schema_version SET version = %s", (version,))
