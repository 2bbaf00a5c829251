"""PostgresStorage and tenants: the migration from the landed release's schema, what a
process of that release still running afterwards does, tenants kept apart through a
Dispatcher, and fan-out's query plan.

The tenant contract itself is checked by the conformance suite (test_conformance.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

import hookdispatch as hd
from hookdispatch.storage._postgres import _ENDPOINTS_FOR, MIGRATIONS
from pg_fixtures import new_schema, postgres_admin_dsn, postgres_dsn  # noqa: F401 - fixtures

from stubs import Recording

NOW = datetime(2024, 6, 30, 15, 41, 23, tzinfo=UTC)
LEASE = timedelta(seconds=60)

# The landed release's schema ---------------------------------------------------------
#
# Copied from hookdispatch as released (git show 146ad55:src/hookdispatch/storage/
# _postgres.py, MIGRATIONS 1-3 rendered, and the statements its methods run), NOT
# derived from the code under test: these are the tables, functions and writes that
# databases in production hold and processes of that release still run. Never edit
# them to fit the new code.

RELEASED_VERSION = 3

RELEASED_SCHEMA = (
    # Migration 1.
    """
    CREATE TABLE {schema}.endpoints (
        id text PRIMARY KEY,
        url text NOT NULL,
        secret text NOT NULL,
        events text[] NOT NULL,
        enabled boolean NOT NULL,
        created_at timestamptz NOT NULL,
        seq bigint GENERATED ALWAYS AS IDENTITY
    )
    """,
    """
    CREATE TABLE {schema}.events (
        id text PRIMARY KEY,
        type text NOT NULL,
        created_at timestamptz NOT NULL,
        body bytea NOT NULL
    )
    """,
    """
    CREATE TABLE {schema}.deliveries (
        id text PRIMARY KEY,
        event_id text NOT NULL
            CONSTRAINT deliveries_event_fk REFERENCES {schema}.events (id),
        endpoint_id text NOT NULL
            CONSTRAINT deliveries_endpoint_fk REFERENCES {schema}.endpoints (id),
        status text NOT NULL,
        attempt_count integer NOT NULL,
        next_attempt_at timestamptz,
        last_error text,
        lease text,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        seq bigint GENERATED ALWAYS AS IDENTITY
    )
    """,
    """
    CREATE INDEX deliveries_due ON {schema}.deliveries (next_attempt_at)
        WHERE status = 'pending'
    """,
    "CREATE INDEX deliveries_event ON {schema}.deliveries (event_id)",
    "CREATE INDEX deliveries_endpoint ON {schema}.deliveries (endpoint_id, status)",
    "CREATE INDEX deliveries_created ON {schema}.deliveries (created_at, seq)",
    """
    CREATE TABLE {schema}.attempts (
        id text PRIMARY KEY,
        delivery_id text NOT NULL
            CONSTRAINT attempts_delivery_fk REFERENCES {schema}.deliveries (id),
        number integer NOT NULL,
        started_at timestamptz NOT NULL,
        duration double precision NOT NULL,
        status_code integer,
        failure text,
        error text,
        response_body bytea NOT NULL,
        seq bigint GENERATED ALWAYS AS IDENTITY
    )
    """,
    "CREATE INDEX attempts_delivery ON {schema}.attempts (delivery_id, number)",
    """
    CREATE FUNCTION {schema}.claim_due(
        timestamptz, timestamptz, text, integer, text[]
    ) RETURNS TABLE (
        id text, event_id text, endpoint_id text, status text, attempt_count integer,
        next_attempt_at timestamptz, last_error text, created_at timestamptz,
        updated_at timestamptz, event_type text, body bytea, endpoint_key text,
        url text, secret text, events text[], enabled boolean,
        endpoint_created_at timestamptz
    ) LANGUAGE sql VOLATILE SET enable_sort = off AS $$
        WITH due AS MATERIALIZED (
            SELECT d.id FROM {schema}.deliveries d
            JOIN {schema}.endpoints e ON e.id = d.endpoint_id
            WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND e.enabled
                AND d.endpoint_id <> ALL($5)
            ORDER BY d.next_attempt_at LIMIT $4
            FOR NO KEY UPDATE OF d SKIP LOCKED
        )
        UPDATE {schema}.deliveries d SET next_attempt_at = $2, lease = $3
        FROM due, {schema}.events ev, {schema}.endpoints e
        WHERE d.id = due.id AND ev.id = d.event_id AND e.id = d.endpoint_id
        RETURNING d.id, d.event_id, d.endpoint_id, d.status, d.attempt_count,
            d.next_attempt_at, d.last_error, d.created_at, d.updated_at, ev.type,
            ev.body, e.id, e.url, e.secret, e.events, e.enabled, e.created_at
    $$
    """,
    """
    CREATE FUNCTION {schema}.next_due() RETURNS timestamptz
    LANGUAGE sql STABLE SET enable_sort = off AS $$
        SELECT d.next_attempt_at FROM {schema}.deliveries d
        JOIN {schema}.endpoints e ON e.id = d.endpoint_id
        WHERE d.status = 'pending' AND e.enabled AND d.next_attempt_at IS NOT NULL
        ORDER BY d.next_attempt_at LIMIT 1
    $$
    """,
    # Migration 2.
    "ALTER TABLE {schema}.endpoints ADD COLUMN consecutive_failures integer NOT NULL DEFAULT 0",
    # Migration 3.
    """
    CREATE FUNCTION {schema}.claim_due_v3(
        timestamptz, timestamptz, text, integer, text[]
    ) RETURNS TABLE (
        id text, event_id text, endpoint_id text, status text, attempt_count integer,
        next_attempt_at timestamptz, last_error text, created_at timestamptz,
        updated_at timestamptz, event_type text, body bytea, endpoint_key text,
        url text, secret text, events text[], enabled boolean,
        endpoint_created_at timestamptz,
        endpoint_failures integer
    ) LANGUAGE sql VOLATILE SET enable_sort = off AS $$
        WITH due AS MATERIALIZED (
            SELECT d.id FROM {schema}.deliveries d
            JOIN {schema}.endpoints e ON e.id = d.endpoint_id
            WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND e.enabled
                AND d.endpoint_id <> ALL($5)
            ORDER BY d.next_attempt_at LIMIT $4
            FOR NO KEY UPDATE OF d SKIP LOCKED
        )
        UPDATE {schema}.deliveries d SET next_attempt_at = $2, lease = $3
        FROM due, {schema}.events ev, {schema}.endpoints e
        WHERE d.id = due.id AND ev.id = d.event_id AND e.id = d.endpoint_id
        RETURNING d.id, d.event_id, d.endpoint_id, d.status, d.attempt_count,
            d.next_attempt_at, d.last_error, d.created_at, d.updated_at, ev.type,
            ev.body, e.id, e.url, e.secret, e.events, e.enabled, e.created_at,
            e.consecutive_failures
    $$
    """,
)

# The released methods' statements (add_endpoint, update_endpoint, add_event, claim,
# complete's attempt), as that release sends them.
RELEASED_ADD_ENDPOINT = (
    "INSERT INTO {schema}.endpoints"
    " (id, url, secret, events, enabled, created_at, consecutive_failures)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s)"
)
RELEASED_UPDATE_ENDPOINT = (
    "UPDATE {schema}.endpoints SET url = %s, secret = %s, events = %s,"
    " enabled = %s, created_at = %s, consecutive_failures = %s WHERE id = %s"
)
RELEASED_ADD_EVENT = (
    "WITH event AS ("
    " INSERT INTO {schema}.events (id, type, created_at, body) VALUES (%s, %s, %s, %s)"
    " ON CONFLICT (id) DO NOTHING RETURNING id),"
    " delivery AS (INSERT INTO {schema}.deliveries (id, event_id, endpoint_id, status,"
    " attempt_count, next_attempt_at, last_error, created_at, updated_at)"
    " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::integer[],"
    " %s::timestamptz[], %s::text[], %s::timestamptz[], %s::timestamptz[])"
    " WHERE EXISTS (SELECT 1 FROM event) ON CONFLICT (id) DO NOTHING)"
    " SELECT count(*) FROM event"
)
RELEASED_CLAIM = "SELECT * FROM {schema}.claim_due_v3(%s, %s, %s, %s, %s)"
RELEASED_ADD_ATTEMPT = (
    "INSERT INTO {schema}.attempts (id, delivery_id, number, started_at, duration,"
    " status_code, failure, error, response_body) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (id) DO NOTHING"
)
# The body the released Event.create encoded.
RELEASED_BODY = (
    b'{"id":"evt_old","event":"user.created","created_at":"2024-06-30T15:41:23Z",'
    b'"data":{"user_id":"u1"}}'
)


def released(template: str, schema: str) -> sql.Composed:
    return sql.SQL(template).format(schema=sql.Identifier(schema))


def create_released_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    """The schema as the landed release leaves it: its tables, at its version."""
    with conn.transaction():
        conn.execute(released("CREATE SCHEMA {schema}", schema))
        conn.execute(released("CREATE TABLE {schema}.schema_version (version integer)", schema))
        conn.execute(
            released("INSERT INTO {schema}.schema_version VALUES (%s)", schema),
            (RELEASED_VERSION,),
        )
        for statement in RELEASED_SCHEMA:
            conn.execute(released(statement, schema))


def add_released_endpoint(
    conn: psycopg.Connection[Any],
    schema: str,
    endpoint_id: str,
    events: list[str],
    *,
    at: datetime = NOW,
    enabled: bool = True,
) -> None:
    conn.execute(
        released(RELEASED_ADD_ENDPOINT, schema),
        (endpoint_id, f"https://{endpoint_id}.example/hook", "s" * 32, events, enabled, at, 0),
    )


def add_released_event(
    conn: psycopg.Connection[Any],
    schema: str,
    deliveries: list[tuple[str, str, str, datetime | None]],
) -> None:
    """The event RELEASED_BODY, with deliveries (id, endpoint_id, status, next_attempt_at)."""
    conn.execute(
        released(RELEASED_ADD_EVENT, schema),
        (
            "evt_old",
            "user.created",
            NOW,
            RELEASED_BODY,
            [d[0] for d in deliveries],
            ["evt_old"] * len(deliveries),
            [d[1] for d in deliveries],
            [d[2] for d in deliveries],
            [1 if d[2] == "succeeded" else 0 for d in deliveries],
            [d[3] for d in deliveries],
            [None] * len(deliveries),
            [NOW] * len(deliveries),
            [NOW] * len(deliveries),
        ),
    )


@pytest.fixture
def schema() -> str:
    return new_schema()


@pytest.fixture
def storage(postgres_dsn: str, schema: str) -> Iterator[hd.PostgresStorage]:  # noqa: F811
    store = hd.PostgresStorage(postgres_dsn, schema=schema)
    yield store
    store.close()


def ids(endpoints: list[hd.Endpoint]) -> list[str]:
    return [endpoint.id for endpoint in endpoints]


def succeed(storage: hd.Storage, claim: hd._core.Claim) -> bool:
    ok = hd.Response(status_code=200, headers={}, body=b"")
    attempt, done = hd._core.conclude(
        claim, ok, started_at=NOW, duration=0.1, now=NOW, policy=hd.RetryPolicy()
    )
    return storage.complete(claim, attempt, done)


# Migration ---------------------------------------------------------------------------


def test_the_landed_releases_schema_is_migrated_and_every_row_kept(
    postgres_dsn: str,  # noqa: F811
    schema: str,
) -> None:
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        create_released_schema(conn, schema)
        add_released_endpoint(conn, schema, "ep_all", ["*"], at=NOW)
        add_released_endpoint(conn, schema, "ep_exact", ["user.created", "invoice.paid"], at=NOW)
        add_released_endpoint(conn, schema, "ep_off", ["*"], at=NOW + LEASE, enabled=False)
        add_released_event(
            conn,
            schema,
            [("dlv_done", "ep_all", "succeeded", None), ("dlv_due", "ep_exact", "pending", NOW)],
        )
        conn.execute(
            released(RELEASED_ADD_ATTEMPT, schema),
            ("att_old", "dlv_done", 1, NOW, 0.25, 200, None, None, b"ok"),
        )

    storage = hd.PostgresStorage(postgres_dsn, schema=schema)
    try:
        endpoints = storage.list_endpoints()
        assert ids(endpoints) == ["ep_all", "ep_exact", "ep_off"]
        assert {endpoint.tenant for endpoint in endpoints} == {hd.DEFAULT_TENANT}
        assert endpoints[1].events == ("user.created", "invoice.paid")
        assert endpoints[1].url == "https://ep_exact.example/hook"
        assert not endpoints[2].enabled
        event = storage.get_event("evt_old")
        assert (event.tenant, event.type, event.data) == (
            "default",
            "user.created",
            {"user_id": "u1"},
        )
        assert event.body == RELEASED_BODY
        assert [(d.id, d.status) for d in storage.list_deliveries()] == [
            ("dlv_done", hd.DeliveryStatus.SUCCEEDED),
            ("dlv_due", hd.DeliveryStatus.PENDING),
        ]
        [attempt] = storage.list_attempts("dlv_done")
        assert (attempt.id, attempt.status_code, attempt.response_body) == ("att_old", 200, b"ok")

        # Fan-out finds the released endpoints through the filled-in subscriptions.
        assert ids(storage.endpoints_for("default", "user.created")) == ["ep_all", "ep_exact"]
        assert ids(storage.endpoints_for("default", "invoice.paid")) == ["ep_all", "ep_exact"]
        assert ids(storage.endpoints_for("default", "order.shipped")) == ["ep_all"]
        assert storage.endpoints_for("acct_a", "user.created") == []

        # The pending delivery is claimed (through the new claim function) and completed.
        [claim] = storage.claim(now=NOW, lease_until=NOW + LEASE, limit=5)
        assert claim.delivery.id == "dlv_due"
        assert claim.endpoint == storage.get_endpoint("ep_exact")
        assert claim.endpoint.tenant == "default"
        assert claim.body == RELEASED_BODY
        assert succeed(storage, claim)
        assert storage.get_delivery("dlv_due").status is hd.DeliveryStatus.SUCCEEDED
        assert len(storage.list_attempts("dlv_due")) == 1
    finally:
        storage.close()

    with psycopg.connect(postgres_dsn) as conn:
        [(version,)] = conn.execute(released("SELECT version FROM {schema}.schema_version", schema))
        functions = {
            row[0]
            for row in conn.execute(
                "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                " WHERE n.nspname = %s",
                (schema,),
            )
        }
    assert version == len(MIGRATIONS)
    # The released processes' claim functions stay, for a rolling upgrade.
    assert {"claim_due", "claim_due_v3", "claim_due_v4", "next_due"} <= functions


def test_a_process_of_the_landed_release_keeps_working_after_the_migration(
    storage: hd.PostgresStorage,
    postgres_dsn: str,  # noqa: F811
    schema: str,
) -> None:
    storage.add_endpoint(
        hd.Endpoint.create("https://a.example/hook", now=NOW, events=["*"], tenant="acct_a")
    )
    with psycopg.connect(postgres_dsn, autocommit=True) as old:
        # An endpoint the released add_endpoint writes (it knows nothing of
        # subscriptions): the trigger indexes it, in the default tenant.
        add_released_endpoint(old, schema, "ep_old", ["user.created"], at=NOW + LEASE)
        assert storage.get_endpoint("ep_old").tenant == "default"
        assert ids(storage.endpoints_for("default", "user.created")) == ["ep_old"]

        # The released update_endpoint re-subscribes it; the index follows.
        old.execute(
            released(RELEASED_UPDATE_ENDPOINT, schema),
            ("https://ep_old.example/v2", "s" * 32, ["invoice.*"], True, NOW, 0, "ep_old"),
        )
        assert storage.endpoints_for("default", "user.created") == []
        assert ids(storage.endpoints_for("default", "invoice.paid")) == ["ep_old"]

        # Its update of a tenant's endpoint leaves the tenant alone (no column for it).
        [endpoint] = storage.endpoints_for("acct_a", "user.created")
        old.execute(
            released(RELEASED_UPDATE_ENDPOINT, schema),
            (endpoint.url, endpoint.secret, ["user.*"], True, NOW, 0, endpoint.id),
        )
        assert storage.get_endpoint(endpoint.id).tenant == "acct_a"
        assert ids(storage.endpoints_for("acct_a", "user.created")) == [endpoint.id]
        assert storage.endpoints_for("acct_a", "invoice.paid") == []

        # Its add_event stores a default-tenant event, and its claim function still
        # answers with the columns it expects.
        add_released_event(old, schema, [("dlv_old", "ep_old", "pending", NOW)])
        assert storage.get_event("evt_old").tenant == "default"
        rows = old.execute(
            released(RELEASED_CLAIM, schema), (NOW, NOW + LEASE, "lse_old", 5, [])
        ).fetchall()
        assert [(row[0], len(row)) for row in rows] == [("dlv_old", 18)]


# Tenants through a Dispatcher ---------------------------------------------------------


def test_a_dispatcher_sends_each_tenant_its_own_events_only(
    storage: hd.PostgresStorage,
) -> None:
    transport = Recording()
    hooks = hd.Dispatcher(storage=storage, workers=0, transport=transport)
    try:
        hooks.add_endpoint("https://a.example/all", tenant="acct_a")
        a_users = hooks.add_endpoint("https://a.example/users", events=["user.*"], tenant="acct_a")
        hooks.add_endpoint("https://a.example/invoices", events=["invoice.paid"], tenant="acct_a")
        hooks.add_endpoint("https://b.example/all", tenant="acct_b")
        hooks.add_endpoint("https://default.example/users", events=["user.created"])

        event = hooks.dispatch("user.created", {"user_id": "user_1"}, tenant="acct_a")
        assert sorted(transport.urls) == ["https://a.example/all", "https://a.example/users"]
        assert storage.get_event(event.id).tenant == "acct_a"
        assert {d.status for d in hooks.deliveries(event_id=event.id)} == {
            hd.DeliveryStatus.SUCCEEDED
        }
        transport.urls.clear()

        hooks.dispatch_many([("invoice.paid", {}), ("user.deleted", {})], tenant="acct_b")
        assert transport.urls == ["https://b.example/all", "https://b.example/all"]
        transport.urls.clear()

        hooks.dispatch("user.created", {})
        assert transport.urls == ["https://default.example/users"]
        transport.urls.clear()

        hooks.dispatch("user.created", {}, tenant="acct_nobody")
        assert transport.urls == []

        # A disabled endpoint drops out of its tenant's fan-out.
        hooks.disable_endpoint(a_users.id)
        hooks.dispatch("user.updated", {}, tenant="acct_a")
        assert transport.urls == ["https://a.example/all"]
    finally:
        hooks.close()


def test_the_outbox_stores_the_events_tenant(
    storage: hd.PostgresStorage,
    postgres_dsn: str,  # noqa: F811
) -> None:
    endpoint = hd.Endpoint.create("https://a.example/hook", now=NOW, tenant="acct_a")
    storage.add_endpoint(endpoint)
    event = hd.Event.create("user.created", {}, now=NOW, tenant="acct_a")
    with psycopg.connect(postgres_dsn) as conn:
        delivery = hd.Delivery.create(event, endpoint, now=NOW)
        assert storage.add_event_in_transaction(conn, event, [delivery])
        with pytest.raises(hd.UnknownEventError):
            storage.get_event(event.id)  # not committed yet
    assert storage.get_event(event.id).tenant == "acct_a"
    [claim] = storage.claim(now=NOW, lease_until=NOW + LEASE, limit=5)
    assert claim.endpoint.tenant == "acct_a"


def test_fan_out_orders_endpoints_created_together_as_list_endpoints_does(
    storage: hd.PostgresStorage,
) -> None:
    for n in range(6):
        events = ["*"] if n % 2 else ["user.*", "user.created"]  # two patterns match
        storage.add_endpoint(
            hd.Endpoint.create(f"https://{n}.example/", now=NOW, events=events, tenant="acct_a")
        )
    found = storage.endpoints_for("acct_a", "user.created")
    assert ids(found) == ids(storage.list_endpoints())
    assert found == storage.list_endpoints()


# The plan ----------------------------------------------------------------------------


def test_fan_out_looks_up_the_subscriptions_index_not_every_endpoint(
    storage: hd.PostgresStorage,
    postgres_dsn: str,  # noqa: F811
    schema: str,
) -> None:
    # 20,000 endpoints of 2,000 tenants, written as plain rows: the trigger indexes them.
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(
            released(
                "INSERT INTO {schema}.endpoints (id, url, secret, events, enabled, created_at,"
                " tenant) SELECT 'ep_' || n, 'https://example.com/hook', repeat('s', 32),"
                " ARRAY[(ARRAY['user.created', 'user.*', '*', 'invoice.paid'])[n / 2000 %% 4 + 1]],"
                " true,"
                " %s::timestamptz + n * interval '1 second', 'acct_' || n %% 2000"
                " FROM generate_series(1, 20000) AS n",
                schema,
            ),
            (NOW,),
        )
        conn.execute(released("ANALYZE {schema}.endpoints", schema))
        conn.execute(released("ANALYZE {schema}.subscriptions", schema))
        params = ("acct_7", list(hd._models.subscription_keys("user.created")))
        plan = "\n".join(
            row[0] for row in conn.execute(b"EXPLAIN " + storage._q(_ENDPOINTS_FOR), params)
        )
    # acct_7's 10 endpoints: 3 user.created, 3 user.*, 2 *, 2 invoice.paid.
    assert len(storage.endpoints_for("acct_7", "user.created")) == 8
    assert "subscriptions_pkey" in plan, plan
    assert "Index Cond: (tenant = " in plan, plan
    assert "Seq Scan" not in plan, plan
    assert "endpoints_pkey" in plan, plan
