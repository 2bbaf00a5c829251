"""Fresh storage for every measurement: memory, an SQLite file, a PostgreSQL schema.

PostgreSQL is used when a server answers on 127.0.0.1:5432 (user ``postgres``,
trust auth, database ``test``, or ``HOOKDISPATCH_BENCH_POSTGRES``): the benchmark
creates a throwaway database on it and drops it at the end. That database runs
with ``synchronous_commit = off``: the durability SQLiteStorage has with its default
``synchronous="NORMAL"`` (a crash of the application loses nothing, a crash of the
machine may lose the last commits), so that both pay for the same promise rather
than for this machine's fsync.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import hookdispatch as hd

from .harness import log

StorageFactory = Callable[[], hd.Storage]

ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"

_numbers = itertools.count()


def memory() -> StorageFactory:
    return hd.MemoryStorage


def sqlite(folder: Path) -> StorageFactory:
    def make() -> hd.Storage:
        return hd.SQLiteStorage(folder / f"bench-{next(_numbers)}.db")

    return make


@contextlib.contextmanager
def temporary_folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="hookdispatch-bench-") as folder:
        yield Path(folder)


@contextlib.contextmanager
def postgres_database() -> Iterator[tuple[str, str] | None]:
    """``(DSN, server version)`` of a throwaway database, or None without a server.

    The database is created for the caller and dropped afterwards, whoever is still
    connected to it (processes the caller started included).
    """
    try:
        import psycopg
        from psycopg import sql
        from psycopg.conninfo import make_conninfo
    except ImportError:
        log("  PostgreSQL: psycopg is not installed; skipped")
        yield None
        return
    admin = os.environ.get("HOOKDISPATCH_BENCH_POSTGRES", ADMIN_DSN)
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    except psycopg.Error as exc:
        log(f"  PostgreSQL: no server answers ({str(exc).strip().splitlines()[0]}); skipped")
        yield None
        return
    name = f"hd_bench_{secrets.token_hex(5)}"
    database = sql.Identifier(name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(database))
        conn.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(database))
    try:
        yield make_conninfo(admin, dbname=name), version.split()[0]
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(database))


@contextlib.contextmanager
def postgres() -> Iterator[tuple[StorageFactory, str] | None]:
    """``(factory, server version)`` on a throwaway database, or None without a server."""
    with postgres_database() as found:
        if found is None:
            yield None
            return
        dsn, version = found
        yield postgres_storage(dsn), version


def postgres_storage(dsn: str) -> StorageFactory:
    """A fresh schema of the database ``dsn`` for every storage made."""

    def make() -> hd.Storage:
        return hd.PostgresStorage(dsn, schema=f"bench_{next(_numbers)}", max_connections=12)

    return make
