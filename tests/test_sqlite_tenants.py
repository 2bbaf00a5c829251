"""SQLiteStorage and tenants: the schema 2 -> 3 migration, isolation, and fan-out's index."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from attrs import evolve

import hookdispatch as hd
from hookdispatch._models import subscription_keys
from hookdispatch.storage._sqlite import MIGRATIONS, _endpoints_for_sql

from stubs import Recording

NOW = datetime(2024, 6, 30, 15, 41, 23, tzinfo=UTC)
SECRET = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"


# The landed release's schema -----------------------------------------------------------

# Schema version 2, exactly as the landed release (commit 146ad55) created it: the SQL
# its _migrate_1 and _migrate_2 produced, copied from sqlite_master of a file they
# made. Deliberately NOT derived from the current code, so that a change to the old
# migrations cannot make this test pass by accident.
LANDED_RELEASE_SCHEMA = """
CREATE TABLE "endpoints" (
   "id" TEXT PRIMARY KEY,
   "url" TEXT NOT NULL,
   "secret" TEXT NOT NULL,
   "events" TEXT NOT NULL,
   "enabled" INTEGER NOT NULL,
   "created_at" REAL NOT NULL
, "consecutive_failures" INTEGER NOT NULL DEFAULT 0);
CREATE TABLE "events" (
   "id" TEXT PRIMARY KEY,
   "type" TEXT NOT NULL,
   "created_at" REAL NOT NULL,
   "body" BLOB NOT NULL
);
CREATE TABLE "deliveries" (
   "id" TEXT PRIMARY KEY,
   "event_id" TEXT NOT NULL REFERENCES "events"("id"),
   "endpoint_id" TEXT NOT NULL REFERENCES "endpoints"("id"),
   "status" TEXT NOT NULL,
   "attempt_count" INTEGER NOT NULL,
   "next_attempt_at" REAL,
   "last_error" TEXT,
   "lease" TEXT,
   "created_at" REAL NOT NULL,
   "updated_at" REAL NOT NULL
);
CREATE TABLE "attempts" (
   "id" TEXT PRIMARY KEY,
   "delivery_id" TEXT NOT NULL REFERENCES "deliveries"("id"),
   "number" INTEGER NOT NULL,
   "started_at" REAL NOT NULL,
   "duration" REAL NOT NULL,
   "status_code" INTEGER,
   "failure" TEXT,
   "error" TEXT,
   "response_body" BLOB
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX "deliveries_event"
    ON "deliveries" ("event_id");
CREATE INDEX "deliveries_endpoint"
    ON "deliveries" ("endpoint_id", "status");
CREATE INDEX "attempts_delivery"
    ON "attempts" ("delivery_id", "number");
"""


def landed_release_file(path: Path) -> None:
    """A version-2 file with the rows the landed release wrote: three endpoints (one
    for every event, one for user.created, one disabled), a delivered event with its
    attempt, and an event whose delivery is still pending and due."""
    t = NOW.timestamp()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA page_size = 2048")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(LANDED_RELEASE_SCHEMA)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO endpoints (id, url, secret, events, enabled, created_at,"
        " consecutive_failures) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            ("ep_all", "https://a.example.com/hooks", SECRET, '["*"]', 1, t, 0),
            ("ep_users", "https://u.example.com/hooks", SECRET, '["user.created"]', 1, t + 1, 2),
            ("ep_off", "https://o.example.com/hooks", SECRET, '["user.created"]', 0, t + 2, 0),
        ],
    )
    for event_id in ("evt_done", "evt_pending"):
        body = hd.Event.create("user.created", {"id": event_id}, now=NOW, id=event_id).body
        conn.execute(
            "INSERT INTO events (id, type, created_at, body) VALUES (?, ?, ?, ?)",
            (event_id, "user.created", t, body),
        )
    conn.executemany(
        "INSERT INTO deliveries (id, event_id, endpoint_id, status, attempt_count,"
        " next_attempt_at, last_error, lease, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            ("dlv_done", "evt_done", "ep_all", "succeeded", 1, None, None, None, t, t + 1),
            ("dlv_pending", "evt_pending", "ep_users", "pending", 1, t, "HTTP 503", None, t, t),
        ],
    )
    conn.executemany(
        "INSERT INTO attempts (id, delivery_id, number, started_at, duration, status_code,"
        " failure, error, response_body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            ("att_1", "dlv_done", 1, t, 0.05, 200, None, None, b"ok"),
            ("att_2", "dlv_pending", 1, t, 0.05, 503, "http_status", "HTTP 503", b""),
        ],
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA user_version = 2")
    conn.close()


def test_a_file_of_the_landed_release_migrates_and_keeps_every_row(tmp_path: Path) -> None:
    path = tmp_path / "landed.db"
    landed_release_file(path)

    storage = hd.SQLiteStorage(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        subscriptions = set(conn.execute("SELECT tenant, pattern, endpoint_id FROM subscriptions"))
        event_tenants = set(conn.execute("SELECT tenant FROM events"))
    assert subscriptions == {
        ("default", "*", "ep_all"),
        ("default", "user.created", "ep_users"),
        ("default", "user.created", "ep_off"),
    }
    assert event_tenants == {("default",)}

    endpoints = storage.list_endpoints()
    assert [(e.id, e.tenant, e.events, e.enabled, e.consecutive_failures) for e in endpoints] == [
        ("ep_all", "default", ("*",), True, 0),
        ("ep_users", "default", ("user.created",), True, 2),
        ("ep_off", "default", ("user.created",), False, 0),
    ]
    assert storage.get_endpoint("ep_users").url == "https://u.example.com/hooks"
    for event_id in ("evt_done", "evt_pending"):
        event = storage.get_event(event_id)
        assert (event.type, event.data, event.tenant) == (
            "user.created",
            {"id": event_id},
            "default",
        )
    # Deliveries got their event's tenant and type (schema version 7).
    assert {(d.id, d.status, d.tenant, d.event_type) for d in storage.list_deliveries()} == {
        ("dlv_done", hd.DeliveryStatus.SUCCEEDED, "default", "user.created"),
        ("dlv_pending", hd.DeliveryStatus.PENDING, "default", "user.created"),
    }
    assert [a.response_body for a in storage.list_attempts("dlv_done")] == [b"ok"]
    assert [a.status_code for a in storage.list_attempts("dlv_pending")] == [503]

    # Fan-out finds the old endpoints through the filled index ('*' ones too).
    assert [e.id for e in storage.endpoints_for("default", "user.created")] == [
        "ep_all",
        "ep_users",
    ]
    assert [e.id for e in storage.endpoints_for("default", "invoice.paid")] == ["ep_all"]
    assert storage.endpoints_for("acct_42", "user.created") == []

    # The pending work of the old release is still delivered.
    transport = Recording()
    hooks = hd.Dispatcher(
        storage=storage, workers=1, transport=transport, targets=hd.TargetPolicy.local()
    )
    try:
        assert hooks.drain(timeout=10)
    finally:
        hooks.close()
    assert transport.urls == ["https://u.example.com/hooks"]
    pending = storage.get_delivery("dlv_pending")
    assert (pending.status, pending.attempt_count) == (hd.DeliveryStatus.SUCCEEDED, 2)
    assert [a.status_code for a in storage.list_attempts("dlv_pending")] == [503, 200]

    # And new events fan out to the migrated endpoints.
    inline = hd.Dispatcher(
        storage=storage, workers=0, transport=transport, targets=hd.TargetPolicy.local()
    )
    event = inline.dispatch("user.created", {"id": "new"})
    assert sorted(d.endpoint_id for d in storage.list_deliveries(event_id=event.id)) == [
        "ep_all",
        "ep_users",
    ]
    inline.close()
    storage.close()

    # Opening it again migrates nothing.
    again = hd.SQLiteStorage(path)
    assert len(again.list_endpoints()) == 3
    again.close()


def test_a_version_1_file_migrates_through_2_to_3(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(
        LANDED_RELEASE_SCHEMA.replace(', "consecutive_failures" INTEGER NOT NULL DEFAULT 0);', ");")
    )
    conn.execute(
        "INSERT INTO endpoints (id, url, secret, events, enabled, created_at)"
        " VALUES ('ep_old', 'https://example.com/hooks', ?, '[\"user.*\", \"invoice.paid\"]',"
        " 1, 0)",
        (SECRET,),
    )
    conn.execute("PRAGMA user_version = 1")
    conn.close()

    storage = hd.SQLiteStorage(path)
    [endpoint] = storage.list_endpoints()
    assert (endpoint.tenant, endpoint.consecutive_failures) == ("default", 0)
    assert [e.id for e in storage.endpoints_for("default", "user.x.y")] == ["ep_old"]
    assert [e.id for e in storage.endpoints_for("default", "invoice.paid")] == ["ep_old"]
    assert storage.endpoints_for("default", "invoice.sent") == []
    storage.close()


# Tenant isolation, end to end ------------------------------------------------------------


def test_an_event_of_one_tenant_never_reaches_another_tenants_endpoint(tmp_path: Path) -> None:
    path = tmp_path / "hooks.db"
    storage = hd.SQLiteStorage(path)
    transport = Recording()
    hooks = hd.Dispatcher(
        storage=storage, workers=0, transport=transport, targets=hd.TargetPolicy.local()
    )
    a_users = hooks.add_endpoint("https://a.example.com/users", events=["user.*"], tenant="acct_a")
    a_all = hooks.add_endpoint("https://a.example.com/all", tenant="acct_a")
    b_all = hooks.add_endpoint("https://b.example.com/all", tenant="acct_b")
    b_users = hooks.add_endpoint(
        "https://b.example.com/users", events=["user.created"], tenant="acct_b"
    )
    default = hooks.add_endpoint("https://d.example.com/all")

    event = hooks.dispatch("user.created", {"n": 1}, tenant="acct_a")
    assert event.tenant == "acct_a"
    assert hooks.get_event(event.id).tenant == "acct_a"
    delivered = {d.endpoint_id for d in hooks.deliveries(event_id=event.id)}
    assert delivered == {a_users.id, a_all.id}
    assert sorted(transport.urls) == ["https://a.example.com/all", "https://a.example.com/users"]

    transport.urls.clear()
    [first, second] = hooks.dispatch_many(
        [("user.created", {"n": 2}), ("invoice.paid", {"n": 3})], tenant="acct_b"
    )
    assert {d.endpoint_id for d in hooks.deliveries(event_id=first.id)} == {b_all.id, b_users.id}
    assert {d.endpoint_id for d in hooks.deliveries(event_id=second.id)} == {b_all.id}
    assert all(url.startswith("https://b.example.com/") for url in transport.urls)

    untenanted = hooks.dispatch("user.created", {"n": 4})
    assert [d.endpoint_id for d in hooks.deliveries(event_id=untenanted.id)] == [default.id]

    # Moving an endpoint to another tenant moves its subscriptions with it.
    storage.update_endpoint(evolve(b_users, tenant="acct_a"))
    moved = hooks.dispatch("user.created", {"n": 5}, tenant="acct_a")
    assert {d.endpoint_id for d in hooks.deliveries(event_id=moved.id)} == {
        a_users.id,
        a_all.id,
        b_users.id,
    }
    hooks.close()
    storage.close()

    # The tenants are in the file, not in this process.
    reopened = hd.SQLiteStorage(path)
    assert {e.id: e.tenant for e in reopened.list_endpoints()} == {
        a_users.id: "acct_a",
        a_all.id: "acct_a",
        b_all.id: "acct_b",
        b_users.id: "acct_a",
        default.id: "default",
    }
    assert reopened.get_event(first.id).tenant == "acct_b"
    reopened.close()


def test_the_outbox_stores_the_events_tenant(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    storage = hd.SQLiteStorage(path)
    endpoint = hd.Endpoint.create("https://a.example.com/hooks", now=NOW, tenant="acct_a")
    storage.add_endpoint(endpoint)
    event = hd.Event.create("user.created", {"n": 1}, now=NOW, tenant="acct_a")
    conn = sqlite3.connect(path)
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY)")
        conn.execute("INSERT INTO users VALUES ('user_1')")
        assert storage.add_event_in_transaction(
            conn, event, [hd.Delivery.create(event, endpoint, now=NOW)]
        )
        conn.commit()
    finally:
        conn.close()
    assert storage.get_event(event.id).tenant == "acct_a"
    [claim] = storage.claim(now=NOW, lease_until=NOW + timedelta(seconds=60), limit=5)
    assert claim.endpoint.tenant == "acct_a"
    storage.close()


# Fan-out's query plan ---------------------------------------------------------------------


@pytest.mark.parametrize("analyzed", [False, True], ids=["fresh", "analyzed"])
def test_endpoints_for_searches_the_subscriptions_key_and_never_scans_endpoints(
    tmp_path: Path, analyzed: bool
) -> None:
    path = tmp_path / "hooks.db"
    storage = hd.SQLiteStorage(path)
    for n in range(300):
        storage.add_endpoint(
            hd.Endpoint.create(
                f"https://example.com/hooks/{n}",
                now=NOW + timedelta(seconds=n),
                tenant=f"acct_{n % 30}",
                events=["*"] if n % 3 == 0 else ["user.*", f"type_{n}"],
            )
        )
    storage.close()
    conn = sqlite3.connect(path)
    if analyzed:  # statistics must not talk the planner into a scan either
        conn.execute("ANALYZE")
    for event_type in ("ping", "user.created", "user.subscription.updated", "a.b.c.d.e"):
        keys = subscription_keys(event_type)
        sql = _endpoints_for_sql(len(keys))
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", ("acct_1", *keys))]
        text = "\n".join(plan)
        assert any(
            step.startswith("SEARCH subscriptions USING PRIMARY KEY (tenant=? AND pattern=?)")
            for step in plan
        ), text
        assert any(step.startswith("SEARCH e USING INDEX") for step in plan), text
        assert not any(step.startswith("SCAN") for step in plan), text
    conn.close()
