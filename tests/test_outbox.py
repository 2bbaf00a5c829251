"""The transactional outbox: dispatch inside the application's own transaction."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

import hookdispatch as hd

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
