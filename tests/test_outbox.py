"""The transactional outbox: dispatch inside the application's own transaction."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pytest_httpserver import HTTPServer

import hookdispatch as hd
from pg_fixtures import new_schema, postgres_admin_dsn, postgres_dsn  # noqa: F401 - fixtures

from receivers import wait_for

FAST_POLL = 0.05


def app_connection(path: Path) -> sqlite3.Connection:
    """The application's own connection, with its own table, on the storage's file.

    Not tied to one thread: the async driver's facade dispatches from its loop thread.
    """
    conn = sqlite3.connect(path, check_same_thread=False)
    conn.execute("CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, email TEXT)")
    conn.commit()
    return conn


@pytest.fixture
def outbox(
    httpserver: HTTPServer, tmp_path: Path, make_dispatcher: Callable[..., Any]
) -> tuple[Any, sqlite3.Connection]:
    httpserver.expect_request("/hook").respond_with_data("")
    storage = hd.SQLiteStorage(tmp_path / "app.db")
    hooks = make_dispatcher(storage=storage, workers=2, poll_interval=FAST_POLL)
    hooks.add_endpoint(httpserver.url_for("/hook"))
    return hooks, app_connection(tmp_path / "app.db")


def received(httpserver: HTTPServer) -> list[str]:
    return [entry[0].headers["webhook-id"] for entry in httpserver.log]


def test_commit_then_delivered(outbox: tuple[Any, sqlite3.Connection], httpserver) -> None:
    hooks, conn = outbox
    conn.execute("INSERT INTO users VALUES ('user_1', 'a@example.com')")
    event = hooks.dispatch("user.created", {"user_id": "user_1"}, transaction=conn)
    conn.commit()

    assert wait_for(lambda: received(httpserver) == [event.id], timeout=10)
    assert hooks.deliveries(event_id=event.id)[0].status is hd.DeliveryStatus.SUCCEEDED


def test_rollback_is_never_sent(outbox: tuple[Any, sqlite3.Connection], httpserver) -> None:
    hooks, conn = outbox
    conn.execute("INSERT INTO users VALUES ('user_2', 'b@example.com')")
    event = hooks.dispatch("user.created", {"user_id": "user_2"}, transaction=conn)
    conn.rollback()

    assert hooks.drain(timeout=5)
    time.sleep(5 * FAST_POLL)
    assert received(httpserver) == []
    assert hooks.deliveries() == []
    with pytest.raises(hd.UnknownEventError):
        hooks.get_event(event.id)
    assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 0


def test_workers_never_see_uncommitted_events(
    outbox: tuple[Any, sqlite3.Connection], httpserver
) -> None:
    hooks, conn = outbox
    conn.execute("INSERT INTO users VALUES ('user_3', 'c@example.com')")
    event = hooks.dispatch("user.created", {"user_id": "user_3"}, transaction=conn)
    # Several poll intervals pass with the transaction open: nothing may be sent.
    time.sleep(10 * FAST_POLL)
    assert received(httpserver) == []
    assert hooks.deliveries() == []
    conn.commit()
    assert wait_for(lambda: received(httpserver) == [event.id], timeout=10)


def test_transaction_needs_the_same_file(tmp_path: Path, make_dispatcher) -> None:
    hooks = make_dispatcher(storage=hd.SQLiteStorage(tmp_path / "hooks.db"), workers=1)
    other = sqlite3.connect(tmp_path / "other.db", check_same_thread=False)
    with pytest.raises(hd.InvalidInputError, match="database file"):
        hooks.dispatch("user.created", {}, transaction=other)


def test_autocommit_connection_without_transaction_is_refused(
    tmp_path: Path, make_dispatcher
) -> None:
    path = tmp_path / "hooks.db"
    hooks = make_dispatcher(storage=hd.SQLiteStorage(path), workers=1)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    with pytest.raises(hd.InvalidStateError, match="BEGIN"):
        hooks.dispatch("user.created", {}, transaction=conn)
    conn.execute("BEGIN")
    hooks.dispatch("user.created", {}, transaction=conn)
    conn.rollback()


def test_inline_mode_refuses_a_transaction(tmp_path: Path, make_dispatcher) -> None:
    path = tmp_path / "hooks.db"
    hooks = make_dispatcher(storage=hd.SQLiteStorage(path), workers=0)
    with pytest.raises(hd.InvalidInputError, match="inline"):
        hooks.dispatch(
            "user.created", {}, transaction=sqlite3.connect(path, check_same_thread=False)
        )


def test_memory_storage_cannot_join_a_transaction(tmp_path: Path, make_dispatcher) -> None:
    hooks = make_dispatcher(storage=hd.MemoryStorage(), workers=1)
    with pytest.raises(hd.InvalidInputError, match="cannot join"):
        hooks.dispatch("user.created", {}, transaction=sqlite3.connect(tmp_path / "x.db"))


# PostgreSQL ---------------------------------------------------------------------------


@pytest.fixture
def pg_outbox(
    httpserver: HTTPServer,
    postgres_dsn: str,  # noqa: F811 - the fixture imported above
    make_dispatcher: Callable[..., Any],
) -> Iterator[tuple[Any, psycopg.Connection[Any], str]]:
    httpserver.expect_request("/hook").respond_with_data("")
    storage = hd.PostgresStorage(postgres_dsn, schema=new_schema())
    hooks = make_dispatcher(storage=storage, workers=2, poll_interval=FAST_POLL)
    hooks.add_endpoint(httpserver.url_for("/hook"))
    conn = psycopg.connect(postgres_dsn)  # not autocommit: every statement is in a transaction
    table = f"users_{new_schema()}"
    conn.execute(f"CREATE TABLE {table} (id text PRIMARY KEY)")
    conn.commit()
    yield hooks, conn, table
    conn.rollback()
    conn.execute(f"DROP TABLE {table}")
    conn.commit()
    conn.close()
    hooks.close(timeout=0)
    storage.close()


def test_postgres_commit_then_delivered(pg_outbox, httpserver: HTTPServer) -> None:
    hooks, conn, table = pg_outbox
    conn.execute(f"INSERT INTO {table} VALUES ('user_1')")
    event = hooks.dispatch("user.created", {"user_id": "user_1"}, transaction=conn)
    time.sleep(5 * FAST_POLL)
    assert received(httpserver) == []  # a concurrent worker sees nothing uncommitted
    conn.commit()

    assert wait_for(lambda: received(httpserver) == [event.id], timeout=10)


def test_postgres_rollback_is_never_sent(pg_outbox, httpserver: HTTPServer) -> None:
    hooks, conn, table = pg_outbox
    conn.execute(f"INSERT INTO {table} VALUES ('user_2')")
    event = hooks.dispatch("user.created", {"user_id": "user_2"}, transaction=conn)
    conn.rollback()

    time.sleep(5 * FAST_POLL)
    assert hooks.drain(timeout=5)
    assert received(httpserver) == []
    with pytest.raises(hd.UnknownEventError):
        hooks.get_event(event.id)


def test_postgres_autocommit_without_transaction_is_refused(
    pg_outbox,
    postgres_dsn: str,  # noqa: F811 - the fixture imported above
) -> None:
    hooks, _, _ = pg_outbox
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        with pytest.raises(hd.InvalidStateError, match=r"conn\.transaction"):
            hooks.dispatch("user.created", {}, transaction=conn)
        with conn.transaction():
            hooks.dispatch("user.created", {}, transaction=conn)
            raise psycopg.Rollback()
