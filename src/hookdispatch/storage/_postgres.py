"""PostgresStorage: PostgreSQL on psycopg 3, shared by processes on many machines.

Needs the ``postgres`` extra: ``pip install 'hookdispatch[postgres]'``.
"""

# SQL is assembled only from constant fragments and the schema name, which goes in
# through sql.Identifier; every value is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import re
import time
import weakref
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
from attrs import frozen
from psycopg import sql
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg.errors import DeadlockDetected, ForeignKeyViolation, LockNotAvailable, UniqueViolation
from psycopg.pq import Format
from psycopg.types.string import BytesBinaryDumper
from psycopg_pool import ConnectionPool

from .._core import Claim
from .._listing import DeliveryQuery, EndpointQuery
from .._models import (
    Attempt,
    Delivery,
    DeliveryStatus,
    Endpoint,
    Event,
    holds_nul,
    new_id,
    new_ids,
    subscription_keys,
)
from ..exceptions import (
    InvalidInputError,
    InvalidStateError,
    StorageError,
    UnknownDeliveryError,
    UnknownEndpointError,
    UnknownEventError,
)
from ._base import ENDPOINT_DELETED, Storage, check_prune_limit
from ._kept import KeptConnections
from ._rotation import Rotation
from ._rows import (
    DELIVERY_WIDTH,
    EndpointCache,
    attempt_from_row,
    delivery_filter,
    delivery_from_row,
    delivery_query,
    endpoint_query,
    json_object,
    json_text,
)

__all__ = ["MIGRATIONS", "PostgresStorage"]


_FAILURES = (("endpoint_failures integer", "e.consecutive_failures"),)
_TENANT = (("endpoint_tenant text", "e.tenant"),)
_PREVIOUS_SECRET = (
    ("endpoint_previous_secret text", "e.previous_secret"),
    ("endpoint_previous_secret_expires_at timestamptz", "e.previous_secret_expires_at"),
)
_MANAGEMENT = (
    ("endpoint_description text", "e.description"),
    ("endpoint_headers jsonb", "e.headers"),
    ("endpoint_metadata jsonb", "e.metadata"),
)


def _claim_due_function(
    name: str = "claim_due",
    *,
    extra: Sequence[tuple[str, str]] = (),
    delivery_columns: bool = False,
) -> str:
    """claim_due: lease up to $4 due deliveries, earliest first, skipping rows that
    another claim holds locked and endpoints in $5. Rows it waited for are
    re-checked, and a claimed row is no longer due (next_attempt_at = $2).

    ``extra``: the endpoint's further columns, as (result column, expression).
    Schema version 1's ``claim_due`` returns the endpoint without
    ``consecutive_failures`` (added in version 2); version 3 adds ``claim_due_v3``,
    which returns it, version 4 ``claim_due_v4``, which returns its ``tenant``
    too, version 6 ``claim_due_v5``, which returns its previous secret and that
    secret's expiry too (a rotation's overlap), and version 7 ``claim_due_v6``,
    which returns its description, custom headers and metadata too, so a claim
    carries the endpoint as stored; version 8's ``claim_due_v7``
    (``delivery_columns``) returns the delivery's tenant and event type after its
    ``updated_at``, as a delivery row has them. New functions rather than
    replaced ones: processes still running an older hookdispatch during a rolling
    upgrade keep calling the one they know, whose result type (which their
    prepared statements depend on) does not change under them. Version 9 adds
    ``claim_due_v8`` (:func:`_claim_in_turn_function`), which serves tenants in
    turn; this version calls ``claim_due_v7`` still whenever one tenant at most has
    due work.
    """
    column = "".join(f",\n            {declaration}" for declaration, _ in extra)
    value = "".join(f", {expression}" for _, expression in extra)
    delivery_column = ", tenant text, delivery_event_type text" if delivery_columns else ""
    delivery_value = ", d.tenant, d.event_type" if delivery_columns else ""
    return f"""
        CREATE FUNCTION {{schema}}.{name}(
            timestamptz, timestamptz, text, integer, text[]
        ) RETURNS TABLE (
            id text, event_id text, endpoint_id text, status text, attempt_count integer,
            next_attempt_at timestamptz, last_error text, created_at timestamptz,
            updated_at timestamptz{delivery_column}, event_type text, body bytea,
            endpoint_key text,
            url text, secret text, events text[], enabled boolean,
            endpoint_created_at timestamptz{column}
        ) LANGUAGE sql VOLATILE SET enable_sort = off AS $$
            WITH due AS MATERIALIZED (
                SELECT d.id FROM {{schema}}.deliveries d
                JOIN {{schema}}.endpoints e ON e.id = d.endpoint_id
                WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND e.enabled
                    AND d.endpoint_id <> ALL($5)
                ORDER BY d.next_attempt_at LIMIT $4
                FOR NO KEY UPDATE OF d SKIP LOCKED
            )
            UPDATE {{schema}}.deliveries d SET next_attempt_at = $2, lease = $3
            FROM due, {{schema}}.events ev, {{schema}}.endpoints e
            WHERE d.id = due.id AND ev.id = d.event_id AND e.id = d.endpoint_id
            RETURNING d.id, d.event_id, d.endpoint_id, d.status, d.attempt_count,
                d.next_attempt_at, d.last_error, d.created_at, d.updated_at{delivery_value},
                ev.type, ev.body, e.id, e.url, e.secret, e.events, e.enabled, e.created_at{value}
        $$
        """


_ALL_ENDPOINT_COLUMNS = (*_FAILURES, *_TENANT, *_PREVIOUS_SECRET, *_MANAGEMENT)


_CLAIM_PARAMETERS = ("now", "lease_until", "lease", "limit", "excluded")
"""The named parameters of ``_CLAIM_DUE``, in ``claim_due_v7``'s order."""


def _claim_due_statement() -> str:
    """``claim_due_v7``'s query as a statement of its own, with named parameters.

    A SQL function with a ``SET`` clause is planned again on every call; this
    statement, prepared by psycopg, is planned once per connection (see
    :data:`_CLAIM_SETTINGS`). The function stays, for processes of the version
    before, and this is built from its text, so the two cannot drift apart.
    """
    function = _claim_due_function(
        "claim_due_v7", extra=_ALL_ENDPOINT_COLUMNS, delivery_columns=True
    )
    body = function.split("$$")[1].strip()
    for number, name in enumerate(_CLAIM_PARAMETERS, 1):
        cast = "::text[]" if name == "excluded" else ""  # sent as text: _array_literal
        body = body.replace(f"${number}", f"%({name})s{cast}")
    return body


_CLAIM_DUE = _claim_due_statement()
_NO_CLAIM: dict[str, Any] = {**dict.fromkeys(_CLAIM_PARAMETERS), "limit": 0, "excluded": "{}"}
"""``_CLAIM_DUE``'s parameters for ``complete_and_claim_v1`` with nothing to claim."""
# The claim and the group commit's statements are prepared, and run with one plan
# planned once per connection (planning them costs more than running them). That
# plan must stay right at any table size, so it is the one that is: every row
# found through an index, joined by nested loops. Without these settings a plan
# made while deliveries was small (a hash join over a sequential scan) was kept as
# the table grew: at 100,000 pending deliveries a Dispatcher drained 78 a second
# instead of 900 (python -m benchmarks, backlog section). Set for the statements'
# transaction only.
_INDEXED_PLANS = (
    b"set_config('plan_cache_mode', 'force_generic_plan', true),"
    b" set_config('enable_seqscan', 'off', true),"
    b" set_config('enable_hashjoin', 'off', true),"
    b" set_config('enable_mergejoin', 'off', true)"
)
_COMPLETION_SETTINGS = b"SELECT " + _INDEXED_PLANS
# A claim walks deliveries_due in order, too (claim_due_v7's own setting: with
# statistics that lag a burst, the planner would sort every due row instead).
_CLAIM_SETTINGS = b"SELECT set_config('enable_sort', 'off', true), " + _INDEXED_PLANS


def _claim_in_turn_function(name: str = "claim_due_v8") -> str:
    """claim_due_v8: lease up to $4 due deliveries of the tenants $6, in turn: round
    after round, the earliest due delivery of each tenant (in the order given) that
    has one left, each tenant taking at most $7; room left when they run short goes
    to the earliest due deliveries of anyone. Endpoints in $5 are left alone, rows
    another claim holds locked are skipped, a claimed row is no longer due
    (next_attempt_at = $2, lease = $3), as in claim_due.

    The result has ``claim_due_v7``'s columns. Besides the claimed deliveries, one
    row for each tenant of $6 that ran short (fewer than $7 due deliveries left to
    take): ``id`` NULL, ``tenant`` the tenant, ``next_attempt_at`` the due time of
    its earliest pending delivery to an enabled endpoint other than those just
    claimed (leased ones at their lease's end; NULL: none), for the caller's
    rotation (see PostgresStorage.claim).

    Each tenant's rows are a range of ``deliveries_tenant_due``, from
    (tenant, -infinity) to (tenant, $1), read in order and only as far as needed:
    never the tenant's rows due later, nor another tenant's, however many there are.
    The row comparisons and the ORDER BY on both columns make that index the only
    one that returns them in order: with sorts "disabled" (``enable_sort`` and
    ``enable_incremental_sort`` off), PostgreSQL walks it whatever its statistics
    say, rather than, say, ``deliveries_tenant`` (tenant first too) and a sort of
    every row of the tenant. The final ordering by round is a sort of a few rows;
    ``jit`` is off so that the nominal cost of that "disabled" sort never makes
    PostgreSQL compile the statement (hundreds of milliseconds). PL/pgSQL, with a
    generic plan, so that the statement is planned once per connection rather than
    on every call (planning it takes longer than running it); since that plan then
    outlives the statistics it was made with, ``enable_seqscan`` is off too: every
    row (an endpoint, an event) is found through its index, never by reading a
    table that was small when the connection planned the statement.
    """
    column = "".join(f",\n            {declaration}" for declaration, _ in _ALL_ENDPOINT_COLUMNS)
    value = "".join(f", {expression}" for _, expression in _ALL_ENDPOINT_COLUMNS)
    nulls = ", ".join(["NULL"] * (5 + len(_ALL_ENDPOINT_COLUMNS)))
    return f"""
        CREATE FUNCTION {{schema}}.{name}(
            timestamptz, timestamptz, text, integer, text[], text[], integer
        ) RETURNS TABLE (
            id text, event_id text, endpoint_id text, status text, attempt_count integer,
            next_attempt_at timestamptz, last_error text, created_at timestamptz,
            updated_at timestamptz, tenant text, delivery_event_type text, event_type text,
            body bytea, endpoint_key text,
            url text, secret text, events text[], enabled boolean,
            endpoint_created_at timestamptz{column}
        ) LANGUAGE plpgsql VOLATILE
        SET enable_sort = off SET enable_incremental_sort = off SET enable_seqscan = off
        SET jit = off SET plan_cache_mode = force_generic_plan AS $$
        #variable_conflict use_column
        BEGIN
            RETURN QUERY
            WITH turn AS MATERIALIZED (
                SELECT t.tenant, t.position FROM unnest($6) WITH ORDINALITY AS t (tenant, position)
            ),
            fetched AS MATERIALIZED (
                SELECT turn.position, x.id, x.round FROM turn, LATERAL (
                    SELECT y.id, row_number() OVER () AS round FROM (
                        SELECT d.id FROM {{schema}}.deliveries d
                        JOIN {{schema}}.endpoints e ON e.id = d.endpoint_id
                        WHERE (d.tenant, d.next_attempt_at) >= (turn.tenant, '-infinity')
                            AND (d.tenant, d.next_attempt_at) <= (turn.tenant, $1)
                            AND d.status = 'pending' AND e.enabled AND d.endpoint_id <> ALL($5)
                        ORDER BY d.tenant, d.next_attempt_at LIMIT $7
                        FOR NO KEY UPDATE OF d SKIP LOCKED
                    ) y
                ) x
            ),
            in_turn AS MATERIALIZED (
                SELECT fetched.id FROM fetched ORDER BY fetched.round, fetched.position LIMIT $4
            ),
            fill AS MATERIALIZED (
                SELECT d.id FROM {{schema}}.deliveries d
                JOIN {{schema}}.endpoints e ON e.id = d.endpoint_id
                WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND e.enabled
                    AND d.endpoint_id <> ALL($5) AND d.id NOT IN (SELECT fetched.id FROM fetched)
                ORDER BY d.next_attempt_at LIMIT $4 - (SELECT count(*) FROM in_turn)
                FOR NO KEY UPDATE OF d SKIP LOCKED
            ),
            claimed AS (
                UPDATE {{schema}}.deliveries d SET next_attempt_at = $2, lease = $3
                FROM (SELECT in_turn.id FROM in_turn UNION ALL SELECT fill.id FROM fill) due,
                    {{schema}}.events ev, {{schema}}.endpoints e
                WHERE d.id = due.id AND ev.id = d.event_id AND e.id = d.endpoint_id
                RETURNING d.id, d.event_id, d.endpoint_id, d.status, d.attempt_count,
                    d.next_attempt_at, d.last_error, d.created_at, d.updated_at, d.tenant,
                    d.event_type, ev.type, ev.body, e.id, e.url, e.secret, e.events, e.enabled,
                    e.created_at{value}
            )
            SELECT * FROM claimed
            UNION ALL
            SELECT NULL, NULL, NULL, NULL, NULL, (
                    SELECT d.next_attempt_at FROM {{schema}}.deliveries d
                    JOIN {{schema}}.endpoints e ON e.id = d.endpoint_id
                    WHERE (d.tenant, d.next_attempt_at) >= (turn.tenant, '-infinity')
                        AND (d.tenant, d.next_attempt_at) <= (turn.tenant, 'infinity')
                        AND d.status = 'pending' AND e.enabled
                        AND d.id NOT IN (SELECT in_turn.id FROM in_turn)
                    ORDER BY d.tenant, d.next_attempt_at LIMIT 1
                ), NULL, NULL, NULL, turn.tenant, NULL, NULL, NULL, NULL, {nulls}
            FROM turn
            WHERE (SELECT count(*) FROM fetched WHERE fetched.position = turn.position) < $7;
        END
        $$
        """


# The tenants with pending work, each with the due time of its earliest pending
# delivery (leased and parked ones included): a loose scan of deliveries_tenant_due,
# one index search per tenant (the first entry after the previous tenant's), however
# many rows each tenant has. PostgresStorage.claim walks it now and then (see there).
_PENDING_TENANTS = """
    CREATE FUNCTION {schema}.pending_tenants() RETURNS TABLE (tenant text, earliest timestamptz)
    LANGUAGE sql STABLE SET enable_sort = off SET enable_incremental_sort = off SET jit = off
    AS $$
        WITH RECURSIVE walk AS (
            (
                SELECT d.tenant, d.next_attempt_at FROM {schema}.deliveries d
                WHERE d.status = 'pending' ORDER BY d.tenant, d.next_attempt_at LIMIT 1
            )
            UNION ALL
            SELECT n.tenant, n.next_attempt_at FROM walk, LATERAL (
                SELECT d.tenant, d.next_attempt_at FROM {schema}.deliveries d
                WHERE d.status = 'pending' AND d.tenant > walk.tenant
                ORDER BY d.tenant, d.next_attempt_at LIMIT 1
            ) n
        )
        SELECT walk.tenant, walk.next_attempt_at FROM walk
    $$
"""


MIGRATIONS: list[tuple[str, ...]] = [
    (
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
        # The workers' query: pending deliveries by due time. Partial, so finished
        # deliveries cost nothing however many pile up.
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
        # The workers' two hot queries, as functions that always walk deliveries_due
        # in order (SET enable_sort = off). A queue table fills faster than autovacuum
        # analyzes it; with statistics from when it was small, the planner expects a
        # handful of due rows and sorts them, and every claim then reads every due row
        # (milliseconds, growing with the backlog) instead of the first few index
        # entries. A function call is also one statement: one round trip.
        _claim_due_function(),
        """
        CREATE FUNCTION {schema}.next_due() RETURNS timestamptz
        LANGUAGE sql STABLE SET enable_sort = off AS $$
            SELECT d.next_attempt_at FROM {schema}.deliveries d
            JOIN {schema}.endpoints e ON e.id = d.endpoint_id
            WHERE d.status = 'pending' AND e.enabled AND d.next_attempt_at IS NOT NULL
            ORDER BY d.next_attempt_at LIMIT 1
        $$
        """,
    ),
    ("ALTER TABLE {schema}.endpoints ADD COLUMN consecutive_failures integer NOT NULL DEFAULT 0",),
    (_claim_due_function("claim_due_v3", extra=_FAILURES),),
    # Tenants. Every row stored so far is the default tenant's (the columns' default,
    # which also fills them in for processes of an older hookdispatch still writing).
    (
        "ALTER TABLE {schema}.endpoints ADD COLUMN tenant text NOT NULL DEFAULT 'default'",
        "ALTER TABLE {schema}.events ADD COLUMN tenant text NOT NULL DEFAULT 'default'",
        # Fan-out's index: one row per (tenant, subscription pattern, endpoint), so
        # dispatch looks up the few patterns matching a type (subscription_keys) in
        # the primary key instead of reading every endpoint.
        """
        CREATE TABLE {schema}.subscriptions (
            tenant text NOT NULL,
            pattern text NOT NULL,
            endpoint_id text NOT NULL
                CONSTRAINT subscriptions_endpoint_fk REFERENCES {schema}.endpoints (id)
                ON DELETE CASCADE,
            PRIMARY KEY (tenant, pattern, endpoint_id)
        )
        """,
        "CREATE INDEX subscriptions_endpoint ON {schema}.subscriptions (endpoint_id)",
        # The endpoints row is the truth and a trigger derives the index from it, in
        # the writer's transaction: every writer keeps it right, processes of an older
        # hookdispatch (which know nothing of subscriptions) and manual SQL included.
        """
        CREATE FUNCTION {schema}.sync_subscriptions() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'UPDATE' THEN
                DELETE FROM {schema}.subscriptions WHERE endpoint_id = OLD.id;
            END IF;
            INSERT INTO {schema}.subscriptions (tenant, pattern, endpoint_id)
                SELECT DISTINCT NEW.tenant, pattern, NEW.id FROM unnest(NEW.events) AS pattern
                ON CONFLICT DO NOTHING;
            RETURN NULL;
        END
        $$
        """,
        """
        CREATE TRIGGER subscriptions_of_new_endpoint AFTER INSERT ON {schema}.endpoints
        FOR EACH ROW EXECUTE FUNCTION {schema}.sync_subscriptions()
        """,
        # Only when the subscriptions change: not on complete()'s failure counts.
        """
        CREATE TRIGGER subscriptions_of_changed_endpoint
        AFTER UPDATE OF events, tenant ON {schema}.endpoints FOR EACH ROW
        WHEN (OLD.events IS DISTINCT FROM NEW.events OR OLD.tenant IS DISTINCT FROM NEW.tenant)
        EXECUTE FUNCTION {schema}.sync_subscriptions()
        """,
        """
        INSERT INTO {schema}.subscriptions (tenant, pattern, endpoint_id)
        SELECT DISTINCT e.tenant, pattern, e.id FROM {schema}.endpoints e,
            unnest(e.events) AS pattern
        """,
        _claim_due_function("claim_due_v4", extra=(*_FAILURES, *_TENANT)),
    ),
    # Retention: the indexes prune() finds old rows by. Finished deliveries by
    # updated_at (partial: pending ones, which prune never deletes, stay out of it),
    # and events by created_at (for the events that never had a delivery). Building
    # them blocks writes to the two tables while it runs: on large tables, build them
    # beforehand with CREATE INDEX CONCURRENTLY and these same definitions (see
    # docs/storage.md); IF NOT EXISTS then finds them built.
    (
        """
        CREATE INDEX IF NOT EXISTS deliveries_finished ON {schema}.deliveries (updated_at)
            WHERE status <> 'pending'
        """,
        "CREATE INDEX IF NOT EXISTS events_created ON {schema}.events (created_at)",
    ),
    # Secret rotation with overlap: the secret before the last rotation and when it
    # stops signing, NULL for every existing endpoint (no rotation under way); no
    # default to fill in, so adding them rewrites nothing. Processes of an older
    # hookdispatch neither read nor write them (their UPDATE names its columns), and
    # keep calling claim_due_v4: they sign with the current secret only.
    (
        "ALTER TABLE {schema}.endpoints ADD COLUMN previous_secret text,"
        " ADD COLUMN previous_secret_expires_at timestamptz",
        _claim_due_function("claim_due_v5", extra=(*_FAILURES, *_TENANT, *_PREVIOUS_SECRET)),
    ),
    # Endpoint management: a description, custom headers (sent with every request)
    # and the host's metadata. Constant defaults, so adding them rewrites nothing and
    # every existing endpoint gets none; processes of an older hookdispatch neither
    # read nor write them, and keep calling claim_due_v5 (they send no custom headers).
    (
        "ALTER TABLE {schema}.endpoints ADD COLUMN description text NOT NULL DEFAULT '',"
        " ADD COLUMN headers jsonb NOT NULL DEFAULT '{{}}',"
        " ADD COLUMN metadata jsonb NOT NULL DEFAULT '{{}}'",
        _claim_due_function(
            "claim_due_v6", extra=(*_FAILURES, *_TENANT, *_PREVIOUS_SECRET, *_MANAGEMENT)
        ),
    ),
    # Listings and deletion. Deliveries carry their event's tenant and type, copied
    # from the events for every existing row (this UPDATE rewrites the table: on a
    # large one, run it in a quiet hour), so listings filter and page on an index
    # without a join. Rows that processes of an older hookdispatch insert meanwhile
    # get the defaults ('default', ''): upgrade every writer together (docs/storage.md).
    # Endpoints get deleted_at: a deleted endpoint stays, hidden, so the history of
    # its deliveries keeps its reference.
    (
        "ALTER TABLE {schema}.deliveries ADD COLUMN tenant text NOT NULL DEFAULT 'default',"
        " ADD COLUMN event_type text NOT NULL DEFAULT ''",
        "UPDATE {schema}.deliveries d SET tenant = ev.tenant, event_type = ev.type"
        " FROM {schema}.events ev WHERE ev.id = d.event_id",
        "ALTER TABLE {schema}.endpoints ADD COLUMN deleted_at timestamptz",
        """
        CREATE INDEX IF NOT EXISTS deliveries_tenant
            ON {schema}.deliveries (tenant, created_at, id)
        """,
        """
        CREATE INDEX IF NOT EXISTS deliveries_endpoint_created
            ON {schema}.deliveries (endpoint_id, created_at, id)
        """,
        """
        CREATE INDEX IF NOT EXISTS deliveries_listed ON {schema}.deliveries (created_at, id)
        """,
        """
        CREATE INDEX IF NOT EXISTS endpoints_tenant
            ON {schema}.endpoints (tenant, created_at, id)
        """,
        _claim_due_function(
            "claim_due_v7",
            extra=(*_FAILURES, *_TENANT, *_PREVIOUS_SECRET, *_MANAGEMENT),
            delivery_columns=True,
        ),
    ),
    # Fair claims (docs/tenants.md, "Fairness"): pending deliveries by (tenant, due
    # time), in which claim_due_v8 finds each tenant's earliest due deliveries and
    # pending_tenants() steps from tenant to tenant. Building the index blocks writes
    # to deliveries while it runs: on a large table, build it beforehand with CREATE
    # INDEX CONCURRENTLY and this same definition (docs/tenants.md); IF NOT EXISTS
    # then finds it built. Processes of an older hookdispatch keep calling
    # claim_due_v7 (earliest due first, whoever's), which stays.
    (
        """
        CREATE INDEX IF NOT EXISTS deliveries_tenant_due
            ON {schema}.deliveries (tenant, next_attempt_at) WHERE status = 'pending'
        """,
        _claim_in_turn_function(),
        _PENDING_TENANTS,
    ),
    # Failures, listed fast: the listing indexes again, for failed deliveries only
    # (partial: a success never writes to them), so a page of failures is one short
    # range scan rather than a walk past every success. find_deliveries names the
    # status as a literal, which lets the planner pick them. On a large table, build
    # them beforehand with CREATE INDEX CONCURRENTLY and these same definitions.
    (
        """
        CREATE INDEX IF NOT EXISTS deliveries_failed ON {schema}.deliveries (created_at, id)
            WHERE status = 'failed'
        """,
        """
        CREATE INDEX IF NOT EXISTS deliveries_failed_tenant
            ON {schema}.deliveries (tenant, created_at, id) WHERE status = 'failed'
        """,
        """
        CREATE INDEX IF NOT EXISTS deliveries_failed_endpoint
            ON {schema}.deliveries (endpoint_id, created_at, id) WHERE status = 'failed'
        """,
    ),
    # Deliveries written out in bulk (see _SETTLE): a dispatch stores its event and
    # one row here naming its subscribers (a row in a table with one index, where a
    # delivery's costs thirteen), with the ids its deliveries will have. No foreign
    # key: checking it costs a dispatch more than the row; _SETTLE drops a row whose
    # event is gone. Processes of an older hookdispatch write deliveries themselves.
    (
        """
        CREATE TABLE IF NOT EXISTS {schema}.fanout (
            seq bigserial PRIMARY KEY,
            event_id text NOT NULL,
            at timestamptz NOT NULL,
            tenant text NOT NULL,
            event_type text NOT NULL,
            endpoints text[] NOT NULL,
            ids text[] NOT NULL,
            base text NOT NULL
        )
        """,
    ),
]
"""Schema migrations: the n-th list of statements takes the schema from version n to n + 1.

``{schema}`` stands for the quoted schema name.
"""

logger = logging.getLogger("hookdispatch")

_T = TypeVar("_T")

_LOCK_NAMESPACE = 0x686B64  # "hkd": first key of the migrations' advisory lock

_ENDPOINT_COLUMNS = (
    "id, url, secret, events, enabled, created_at, consecutive_failures, tenant,"
    " previous_secret, previous_secret_expires_at, description, headers, metadata"
)
_ENDPOINT_WIDTH = 13  # the columns of _ENDPOINT_COLUMNS, as _endpoint reads them
_DELIVERY_COLUMNS = (
    "id, event_id, endpoint_id, status, attempt_count, next_attempt_at, last_error,"
    " created_at, updated_at, tenant, event_type"
)
_ATTEMPT_COLUMNS = (
    "id, delivery_id, number, started_at, duration, status_code, failure, error, response_body"
)


# Completions from one array per column, numbered (WITH ORDINALITY): each as
# complete() does it, the whole group in one statement. An endpoint's run of
# failures ends as the completions in their order leave it: the failures after
# its last success in the group, added to the stored run if the group has none.
# Returns the numbers of the completions whose lease held.
_COMPLETE_MANY = (
    "WITH input AS MATERIALIZED (SELECT * FROM unnest(%s::text[], %s::text[],"
    " %s::integer[], %s::timestamptz[], %s::float8[], %s::integer[], %s::text[], %s::text[],"
    " %s::bytea[], %s::text[], %s::integer[], %s::timestamptz[], %s::text[],"
    " %s::timestamptz[], %s::text[]) WITH ORDINALITY AS i(attempt_id, delivery_id, number,"
    " started_at, duration, status_code, failure, error, response_body, status,"
    " attempt_count, next_attempt_at, last_error, updated_at, lease, n)),"
    f" attempt AS (INSERT INTO {{schema}}.attempts ({_ATTEMPT_COLUMNS})"
    " SELECT i.attempt_id, i.delivery_id, i.number, i.started_at, i.duration,"
    " i.status_code, i.failure, i.error, i.response_body FROM input i"
    " WHERE EXISTS (SELECT 1 FROM {schema}.deliveries d WHERE d.id = i.delivery_id)"
    " ON CONFLICT (id) DO NOTHING),"
    " delivery AS (UPDATE {schema}.deliveries d SET status = i.status,"
    " attempt_count = i.attempt_count, next_attempt_at = i.next_attempt_at,"
    " last_error = i.last_error, updated_at = i.updated_at, lease = NULL"
    " FROM input i WHERE d.id = i.delivery_id AND d.lease = i.lease"
    " RETURNING i.n, d.endpoint_id, i.status),"
    " finals AS (SELECT endpoint_id, n, status, max(n) FILTER (WHERE status <> 'failed')"
    " OVER (PARTITION BY endpoint_id) AS reset_at FROM delivery WHERE status <> 'pending'),"
    " runs AS (SELECT endpoint_id, max(reset_at) AS reset_at, count(*) FILTER"
    " (WHERE status = 'failed' AND n > coalesce(reset_at, 0)) AS failed"
    " FROM finals GROUP BY endpoint_id),"
    " endpoint AS (UPDATE {schema}.endpoints e SET consecutive_failures = CASE"
    " WHEN r.reset_at IS NULL THEN e.consecutive_failures + r.failed ELSE r.failed END"
    # As in complete(): a success with no failures to reset writes nothing.
    " FROM runs r WHERE e.id = r.endpoint_id AND (r.failed > 0 OR e.consecutive_failures <> 0))"
    " SELECT n FROM delivery"
)


def _completion_columns(
    completions: Sequence[tuple[Claim, Attempt, Delivery]],
) -> tuple[str, ...]:
    """The arrays of ``_COMPLETE_MANY``, one per column, each in PostgreSQL's text
    form (see :func:`_array_literal`)."""
    if not completions:  # (a claim alone)
        return ("{}",) * _COMPLETION_COLUMNS
    rows = [
        (*_attempt_values(attempt), *_outcome_values(delivery), claim.lease)
        for claim, attempt, delivery in completions
    ]
    return tuple(_array_literal(column) for column in zip(*rows, strict=True))


_COMPLETION_COLUMNS = 15
"""The arrays ``_COMPLETE_MANY`` takes: an attempt's 9 columns, a delivery's 5, the lease."""


def _array_literal(values: Sequence[Any]) -> str:
    """``values`` as one PostgreSQL array in its text form, for a parameter the
    statement casts (``%s::text[]``, ``%s::timestamptz[]``...).

    psycopg dumps a Python list in Python, element by element, after looking for
    the elements' type: about 50 us of CPU for the 15 short arrays of a group
    commit, where this takes 3. Every element is quoted (so braces, commas, quotes,
    spaces and the word NULL inside text stay text), with backslashes and double
    quotes escaped; None is NULL; bytes (and bytearray, memoryview) are bytea's
    hex form (``\\x...``); datetimes (aware: every one stored is) their ISO form
    with the offset; numbers their ``str``. A NUL in a text is refused by psycopg
    as in any parameter (see ``_run``)."""
    items: list[str] = []
    append = items.append
    for value in values:
        if value is None:
            append("NULL")
            continue
        if isinstance(value, str):
            text = value
        elif isinstance(value, bytes | bytearray | memoryview):
            text = "\\x" + bytes(value).hex()
        else:
            text = str(value)
        if "\\" in text or '"' in text:  # (ids, numbers and times hold neither)
            text = text.replace("\\", "\\\\").replace('"', '\\"')
        append(f'"{text}"')
    return "{" + ",".join(items) + "}"


def _attempt_values(attempt: Attempt) -> tuple[Any, ...]:
    """An attempt's row, in the order of ``_ATTEMPT_COLUMNS``."""
    return (
        attempt.id,
        attempt.delivery_id,
        attempt.number,
        attempt.started_at,
        attempt.duration,
        attempt.status_code,
        None if attempt.failure is None else attempt.failure.value,
        attempt.error,
        attempt.response_body,
    )


def _outcome_values(delivery: Delivery) -> tuple[Any, ...]:
    """What completing a delivery stores of it: status, attempt count, next attempt,
    last error and update time."""
    return (
        delivery.status.value,
        delivery.attempt_count,
        delivery.next_attempt_at,
        delivery.last_error,
        delivery.updated_at,
    )


# Deliveries from one array per column: any number of rows in one statement.
# ON CONFLICT keeps a retried insert (after a broken connection) harmless.
_INSERT_DELIVERIES = (
    f"INSERT INTO {{schema}}.deliveries ({_DELIVERY_COLUMNS})"
    " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::integer[],"
    " %s::timestamptz[], %s::text[], %s::timestamptz[], %s::timestamptz[], %s::text[],"
    " %s::text[])"
)
# Leases given back (release): each delivery still under the claim's lease is due
# again at %s (release's due), unleased.
_RELEASE = (
    "UPDATE {schema}.deliveries d SET next_attempt_at = %s, lease = NULL"
    " FROM unnest(%s::text[], %s::text[]) AS r(id, lease)"
    " WHERE d.id = r.id AND d.lease = r.lease AND d.status = 'pending'"
)
_ON_CONFLICT = " ON CONFLICT (id) DO NOTHING"
# One statement: the deliveries go in only if the event did (a new id).
_INSERT_EVENT = (
    "WITH event AS ("
    " INSERT INTO {schema}.events (id, type, created_at, body, tenant)"
    " VALUES (%s, %s, %s, %s, %s)"
    " ON CONFLICT (id) DO NOTHING RETURNING id),"
    f" delivery AS ({_INSERT_DELIVERIES} WHERE EXISTS (SELECT 1 FROM event){_ON_CONFLICT})"
    " SELECT count(*) FROM event"
)


def _delivery_id(ids: str, base: str, n: str) -> str:
    """SQL for the id of a dispatch's ``n``-th delivery (by its subscriber's place in
    creation order): the n-th of the ``ids`` the caller made, and past those (a
    fan-out wider than the caller guessed) the ``base`` id with the number appended
    (six digits at least: never cut short, never the same twice)."""
    return (
        f"coalesce(({ids})[{n}], {base} || '_' || lpad({n}::text,"
        f" greatest(6, length({n}::text)), '0'))"
    )


_NAME_BYTES = 63
"""The longest name PostgreSQL keeps whole (``NAMEDATALEN - 1``): it cuts longer ones."""
_GUESSED_FAN_OUT = 4
_IDS = "string_to_array(%(ids)s, ',')"  # the delivery ids a dispatch made (see _names)
# dispatch() with no worker slot to fill, in one statement (one round trip): the
# event, and its subscribers' ids (found as _ENDPOINTS_FOR finds them, in creation
# order) as one row of fanout, from which _SETTLE writes the deliveries out, with
# the ids _delivery_id gives them. No row for an event stored already, or without
# subscribers.
_INSERT_EVENT_TO_FANOUT = (
    "WITH event AS ("
    " INSERT INTO {schema}.events (id, type, created_at, body, tenant)"
    " VALUES (%(event_id)s, %(type)s, %(event_at)s, %(body)s, %(tenant)s)"
    " ON CONFLICT (id) DO NOTHING RETURNING id),"
    " fan AS (INSERT INTO {schema}.fanout (event_id, at, tenant, event_type, endpoints, ids, base)"
    " SELECT %(event_id)s, %(at)s, %(tenant)s, %(type)s,"
    f" array_agg(e.id ORDER BY e.created_at, e.seq), {_IDS}, %(base)s"
    " FROM {schema}.endpoints e WHERE e.id IN (SELECT endpoint_id FROM {schema}.subscriptions"
    " WHERE tenant = %(tenant)s AND pattern = ANY(string_to_array(%(patterns)s, ',')))"
    " AND e.enabled AND EXISTS (SELECT 1 FROM event) HAVING count(*) > 0)"
    " SELECT count(*) FROM event"
)
# Write out the deliveries of the oldest fanout rows and delete the rows: at most
# %(rows)s rows, and no row past the one that makes %(deliveries)s deliveries (a
# transaction stays short however wide the fan-outs). One new delivery per (row,
# endpoint), in dispatch order; pending, or cancelled if its endpoint was deleted
# since. Each endpoint is read FOR KEY SHARE: delete_endpoint() locks its row FOR
# UPDATE first, so a write-out that meets an endpoint being deleted waits for the
# delete and then sees it deleted. Every row is found through an index (LATERAL
# with LIMIT: a plan that cannot become a hash join over a whole table, whatever
# the statistics of fanout, whose rows come and go). ``{lock}``: SKIP LOCKED for a
# claim, which leaves rows another is writing out to it; nothing for a read, which
# waits for that one to commit and then sees its deliveries (the read is a later
# statement of the same transaction, with a snapshot of its own). Returns the rows
# locked, the rows written out, and those dropped because their event is gone (an
# older process's prune: logged).
_SETTLE = (
    "WITH locked AS MATERIALIZED (SELECT seq, cardinality(endpoints) AS width"
    " FROM {{schema}}.fanout ORDER BY seq LIMIT %(rows)s FOR UPDATE{lock}),"
    " picked AS MATERIALIZED (SELECT seq FROM (SELECT seq,"
    " sum(width) OVER (ORDER BY seq) - width AS before FROM locked) w"
    " WHERE before < %(deliveries)s),"
    " f AS (DELETE FROM {{schema}}.fanout WHERE seq IN (SELECT seq FROM picked) RETURNING *),"
    " known AS MATERIALIZED (SELECT f.*, ev.found FROM f LEFT JOIN LATERAL"
    " (SELECT true AS found FROM {{schema}}.events WHERE id = f.event_id LIMIT 1) ev ON true),"
    f" written AS (INSERT INTO {{{{schema}}}}.deliveries ({_DELIVERY_COLUMNS})"
    f" SELECT {_delivery_id('k.ids', 'k.base', 'u.n')}, k.event_id, u.endpoint_id,"
    " CASE WHEN e.deleted_at IS NULL THEN 'pending' ELSE 'cancelled' END, 0,"
    " CASE WHEN e.deleted_at IS NULL THEN k.at END,"
    " CASE WHEN e.deleted_at IS NOT NULL THEN %(deleted)s END,"
    " k.at, coalesce(e.deleted_at, k.at), k.tenant, k.event_type"
    " FROM known k CROSS JOIN LATERAL unnest(k.endpoints) WITH ORDINALITY AS u(endpoint_id, n)"
    " CROSS JOIN LATERAL (SELECT deleted_at FROM {{schema}}.endpoints"
    " WHERE id = u.endpoint_id FOR KEY SHARE) e"
    " WHERE k.found ORDER BY k.seq, u.n ON CONFLICT (id) DO NOTHING)"
    " SELECT (SELECT count(*) FROM locked), (SELECT count(*) FROM known),"
    " (SELECT count(*) FROM known WHERE found IS NULL)"
)
_SETTLE_FOR_CLAIM = _SETTLE.format(lock=" SKIP LOCKED")
_SETTLE_FOR_READ = _SETTLE.format(lock="")
_SETTLE_ROWS = 1024
"""The most fanout rows (dispatches) one write-out takes (see SQLiteStorage's)."""
_SETTLE_DELIVERIES = 10_000
"""... and the most deliveries, but for a single row wider than that."""
_SETTLE_INTERVAL = 0.05
"""Seconds between the claims that write out other processes' dispatches: a claim
after one of this object's own writes them out too. The statement costs a claim
about a tenth of its time even when there is nothing to write out (measured: a
Dispatcher(workers=8) draining stored deliveries, 7% slower with it in every claim)."""
_VACUUM_EVERY = 10_000
"""Rows of fanout this object deletes between two ``VACUUM`` of the table: its rows
come and go, and the dead ones slow every write-out until vacuumed, when
autovacuum is off or slow to come (see ``_after_settling``)."""


def _numbered(statement: str, names: Sequence[str] = (), *, first: int = 1) -> str:
    """``statement`` with a function's parameters: each ``%s`` in turn, or else
    ``%(name)s`` for each of ``names`` in turn, becomes ``$first``, ``$first + 1``..."""
    numbers = itertools.count(first)
    for name in names:
        statement = statement.replace(f"%({name})s", f"${next(numbers)}")
    if not names:
        statement = re.sub("%s", lambda _: f"${next(numbers)}", statement)
    assert "%" not in statement, statement
    return statement


def _complete_and_claim_function() -> str:
    """complete_and_claim_v1: a group commit's whole transaction, one statement (one
    round trip, nothing to BEGIN or COMMIT, no settings sent first): a write-out
    (``_SETTLE_FOR_CLAIM``) when $21 > 0, the completions $1..$15 (``_COMPLETE_MANY``)
    and a claim of $19 (``claim_due_v7``'s statement, $16..$20), each built from the
    text of the statement it runs, so the two paths cannot drift apart.

    Its first row carries no delivery (``id`` NULL): the numbers of the completions
    whose lease held (``held``) and the write-out's counts (NULL: none ran). The
    claimed rows follow, with ``claim_due_v7``'s columns. PL/pgSQL under the
    claims' settings (see :data:`_INDEXED_PLANS` and ``claim_due_v8``), so each
    statement is planned once per connection, with a plan that holds at any size.
    """
    claim = _claim_due_function("claim_due_v7", extra=_ALL_ENDPOINT_COLUMNS, delivery_columns=True)
    columns = claim.split("RETURNS TABLE (", 1)[1].split(") LANGUAGE", 1)[0]
    claiming = claim.split("$$")[1]
    assert set(re.findall(r"\$(\d+)", claiming)) == {"1", "2", "3", "4", "5"}, claiming
    claiming = re.sub(r"\$(\d+)", lambda m: f"${int(m[1]) + 15}", claiming)
    update = "UPDATE {schema}.deliveries d SET next_attempt_at"
    assert claiming.count(update) == 1
    claiming = claiming.replace(update, f", claimed AS ({update}") + (
        ") SELECT claimed.*, NULL::integer[], NULL::bigint, NULL::bigint, NULL::bigint FROM claimed"
    )
    settling = _numbered(_SETTLE_FOR_CLAIM, ("rows", "deliveries", "deleted"), first=21)
    completing = _numbered(_COMPLETE_MANY)
    assert completing.endswith(" SELECT n FROM delivery")
    completing = completing.removesuffix(" SELECT n FROM delivery")
    return f"""
        CREATE FUNCTION {{schema}}.complete_and_claim_v1(
            text[], text[], integer[], timestamptz[], float8[], integer[], text[], text[],
            bytea[], text[], integer[], timestamptz[], text[], timestamptz[], text[],
            timestamptz, timestamptz, text, integer, text[], integer, integer, text
        ) RETURNS TABLE ({columns}, held integer[], settle_locked bigint,
            settle_written bigint, settle_dropped bigint
        ) LANGUAGE plpgsql VOLATILE
        SET enable_sort = off SET enable_incremental_sort = off SET enable_seqscan = off
        SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off
        SET plan_cache_mode = force_generic_plan AS $$
        #variable_conflict use_column
        BEGIN
            IF $21 > 0 THEN
                {settling}
                    INTO settle_locked, settle_written, settle_dropped;
            END IF;
            IF cardinality($1) > 0 THEN
                {completing} SELECT coalesce(array_agg(n), '{{{{}}}}') INTO held FROM delivery;
            END IF;
            RETURN NEXT;
            IF $19 > 0 THEN
                RETURN QUERY {claiming.strip()};
            END IF;
        END
        $$
        """


# Version 12 (see MIGRATIONS): built from the statements above.
MIGRATIONS.append((_complete_and_claim_function(),))

_COMPLETE_AND_CLAIM = (
    "SELECT * FROM {schema}.complete_and_claim_v1(%s::text[], %s::text[], %s::integer[],"
    " %s::timestamptz[], %s::float8[], %s::integer[], %s::text[], %s::text[], %s::bytea[],"
    " %s::text[], %s::integer[], %s::timestamptz[], %s::text[], %s::timestamptz[], %s::text[],"
    " %s, %s, %s, %s, %s::text[], %s, %s, %s)"
)
"""A call of ``complete_and_claim_v1``, its arrays (the completions' columns and the
endpoints to skip) sent as text (see :func:`_array_literal`)."""

# dispatch() with worker slots free: the first %(limit)s deliveries to endpoints not
# in %(excluded)s go in leased (due at the lease's end, under %(lease)s), the others
# in one fanout row as _INSERT_EVENT_TO_FANOUT's do, each with the id the leased ones'
# expression gives it (by its place among all the subscribers). One row for the
# event stored or not, then one per leased delivery: its id and its endpoint. The
# endpoints of the leased ones are read again FOR KEY SHARE (``locked``), as _SETTLE
# reads them: a delete_endpoint() under way (it locks the row FOR UPDATE first) is
# waited for, and its endpoint, now disabled, goes to the fanout row instead, whose
# write-out records its delivery cancelled, rather than leased with its erased secret
# and sent to. The others are locked by their write-out only (a wide fan-out's
# dispatch locks a few rows, not all).
_INSERT_EVENT_AND_CLAIM = (
    "WITH event AS ("
    " INSERT INTO {schema}.events (id, type, created_at, body, tenant)"
    " VALUES (%(event_id)s, %(type)s, %(event_at)s, %(body)s, %(tenant)s)"
    " ON CONFLICT (id) DO NOTHING RETURNING id),"
    " subscriber AS (SELECT e.id, row_number() OVER (ORDER BY e.created_at, e.seq) AS n,"
    " e.id <> ALL(string_to_array(%(excluded)s, ',')) AS free"
    " FROM {schema}.endpoints e WHERE e.id IN (SELECT endpoint_id FROM {schema}.subscriptions"
    " WHERE tenant = %(tenant)s AND pattern = ANY(string_to_array(%(patterns)s, ',')))"
    " AND e.enabled),"
    " picked AS (SELECT s.id, s.n, s.free AND row_number() OVER"
    " (PARTITION BY s.free ORDER BY s.n) <= %(limit)s AS leased FROM subscriber s),"
    " locked AS MATERIALIZED (SELECT e.id FROM {schema}.endpoints e"
    " WHERE e.id IN (SELECT p.id FROM picked p WHERE p.leased) AND e.enabled"
    " FOR KEY SHARE OF e),"
    " numbered AS (SELECT p.id, p.n, p.leased AND p.id IN (SELECT id FROM locked) AS leased,"
    f" {_delivery_id(_IDS, '%(base)s', 'p.n')} AS delivery_id FROM picked p"
    " WHERE EXISTS (SELECT 1 FROM event)),"
    f" delivery AS (INSERT INTO {{schema}}.deliveries ({_DELIVERY_COLUMNS}, lease)"
    " SELECT n.delivery_id, %(event_id)s, n.id, 'pending', 0, %(lease_until)s, NULL,"
    " %(at)s, %(at)s, %(tenant)s, %(type)s, %(lease)s FROM numbered n WHERE n.leased"
    f"{_ON_CONFLICT} RETURNING id, endpoint_id, lease),"
    " fan AS (INSERT INTO {schema}.fanout (event_id, at, tenant, event_type, endpoints, ids, base)"
    " SELECT %(event_id)s, %(at)s, %(tenant)s, %(type)s, array_agg(n.id ORDER BY n.n),"
    " array_agg(n.delivery_id ORDER BY n.n), %(base)s FROM numbered n WHERE NOT n.leased"
    " HAVING count(*) > 0 RETURNING 1)"
    " SELECT s.stored, s.fanned, d.id,"
    f" {', '.join('e.' + c for c in _ENDPOINT_COLUMNS.split(', '))}"
    " FROM (SELECT (SELECT count(*) FROM event) AS stored, (SELECT count(*) FROM fan) AS fanned)"
    " s LEFT JOIN (delivery d"
    " JOIN {schema}.endpoints e ON e.id = d.endpoint_id) ON d.lease IS NOT NULL"
)
"""Delivery ids made for each dispatch(): most events go to a few endpoints."""

# A batch of events (dispatch_many): one statement. The deliveries go in for the
# events that did (new ids) only.
_INSERT_EVENTS = (
    "WITH event AS ("
    " INSERT INTO {schema}.events (id, type, created_at, body, tenant)"
    " SELECT * FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::bytea[], %s::text[])"
    " ON CONFLICT (id) DO NOTHING RETURNING id),"
    f" delivery AS (INSERT INTO {{schema}}.deliveries ({_DELIVERY_COLUMNS})"
    " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::integer[],"
    " %s::timestamptz[], %s::text[], %s::timestamptz[], %s::timestamptz[], %s::text[],"
    f" %s::text[]) AS d({_DELIVERY_COLUMNS})"
    " WHERE d.event_id IN (SELECT id FROM event)"
    f"{_ON_CONFLICT})"
    " SELECT id FROM event"
)
# The same for a batch as dispatch_many() makes it: every event of one tenant at one
# time, every delivery new and made at one time (pending, due then, of its event's
# tenant and type; events keep whole seconds, deliveries the microseconds), so
# the rows are built from a few arrays of ids: a third of the values to encode.
_INSERT_NEW_EVENTS = (
    "WITH event AS ("
    " INSERT INTO {schema}.events (id, type, created_at, body, tenant)"
    " SELECT id, type, %(event_at)s, body, %(tenant)s"
    " FROM unnest(%(ids)s::text[], %(types)s::text[], %(bodies)s::bytea[]) AS e(id, type, body)"
    " ON CONFLICT (id) DO NOTHING RETURNING id, type),"
    f" delivery AS (INSERT INTO {{schema}}.deliveries ({_DELIVERY_COLUMNS})"
    " SELECT d.id, d.event_id, d.endpoint_id, 'pending', 0, %(at)s, NULL, %(at)s, %(at)s,"
    " %(tenant)s, event.type"
    " FROM unnest(%(delivery_ids)s::text[], %(event_ids)s::text[], %(endpoint_ids)s::text[])"
    " AS d(id, event_id, endpoint_id) JOIN event ON event.id = d.event_id"
    f"{_ON_CONFLICT})"
    " SELECT id FROM event"
)
_BATCH_ROWS = 5000
"""Events per statement of ``add_events``: large enough that the round trip is
amortised, small enough that one statement's arrays stay a few MB."""

# A batch of new events (dispatch_many), the fast way: COPY, in binary, the events
# then their deliveries. Measured (10,000 events of 200 bytes, one delivery each):
# 36 us per event against 55 to 72 for _INSERT_NEW_EVENTS, which pays for ON
# CONFLICT's speculative insertion, the join and an executor row per row where COPY
# inserts a page of rows at a time. COPY knows no ON CONFLICT: an id stored already
# fails it, and add_events falls back to the statements above.
_COPY_EVENTS = (
    "COPY {schema}.events (id, type, created_at, body, tenant) FROM STDIN (FORMAT BINARY)"
)
_EVENT_TYPES = ("text", "text", "timestamptz", "bytea", "text")
_COPY_DELIVERIES = f"COPY {{schema}}.deliveries ({_DELIVERY_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_DELIVERY_TYPES = (
    "text", "text", "text", "text", "int4", "timestamptz", "text", "timestamptz",
    "timestamptz", "text", "text",
)  # fmt: skip


# Fan-out, on every dispatch(): one statement. The subscriptions primary key finds
# the endpoints of the patterns matching the type (%s: subscription_keys), the
# endpoints' primary key their rows. A semi-join, so an endpoint that two patterns
# match comes once. (While the endpoints table is small, the planner hashes a
# sequential scan of it instead, which is cheaper at that size.)
_ENDPOINTS_FOR = (
    f"SELECT {_ENDPOINT_COLUMNS} FROM {{schema}}.endpoints"
    " WHERE id IN (SELECT endpoint_id FROM {schema}.subscriptions"
    " WHERE tenant = %s AND pattern = ANY(%s))"
    " AND enabled ORDER BY created_at, seq"
)


def _qualified(columns: str, alias: str) -> str:
    return ", ".join(f"{alias}.{column.strip()}" for column in columns.split(","))


def _utc(moment: datetime) -> datetime:
    # psycopg returns timestamptz in the session's time zone; the contract says UTC.
    return moment.astimezone(UTC)


def _endpoint(row: Sequence[Any]) -> Endpoint:
    return Endpoint(
        id=row[0],
        url=row[1],
        secret=row[2],
        events=tuple(row[3]),
        enabled=row[4],
        created_at=_utc(row[5]),
        consecutive_failures=row[6],
        tenant=row[7],
        previous_secret=row[8],
        previous_secret_expires_at=None if row[9] is None else _utc(row[9]),
        description=row[10],
        headers=json_object(row[11], column="headers", endpoint_id=row[0]),
        metadata=json_object(row[12], column="metadata", endpoint_id=row[0]),
    )


def _columns(deliveries: Sequence[Delivery]) -> tuple[list[Any], ...]:
    """The deliveries as one list per column, for ``_INSERT_DELIVERIES``."""
    return (
        [d.id for d in deliveries],
        [d.event_id for d in deliveries],
        [d.endpoint_id for d in deliveries],
        [d.status.value for d in deliveries],
        [d.attempt_count for d in deliveries],
        [d.next_attempt_at for d in deliveries],
        [d.last_error for d in deliveries],
        [d.created_at for d in deliveries],
        [d.updated_at for d in deliveries],
        [d.tenant for d in deliveries],
        [d.event_type for d in deliveries],
    )


def _delivery_rows(
    deliveries: Sequence[Delivery], event_ids: Collection[str]
) -> Iterator[tuple[Any, ...]]:
    """The deliveries of the events ``event_ids`` as rows of ``_DELIVERY_COLUMNS``,
    for ``_COPY_DELIVERIES``."""
    for d in deliveries:
        if d.event_id in event_ids:
            status = "pending" if d.status is DeliveryStatus.PENDING else d.status.value
            yield (
                d.id, d.event_id, d.endpoint_id, status, d.attempt_count, d.next_attempt_at,
                d.last_error, d.created_at, d.updated_at, d.tenant, d.event_type,
            )  # fmt: skip


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Raise psycopg's errors (pool errors included) as StorageError, chained."""
    try:
        yield
    except psycopg.Error as exc:
        raise StorageError(f"PostgreSQL failed: {type(exc).__name__}: {exc}") from exc


Statement = tuple[bytes, Sequence[Any] | Mapping[str, Any]]


def _has_rows(cursor: psycopg.Cursor[Any]) -> bool:
    """Whether ``cursor``'s statement returned rows (zero or more): what
    ``cursor.description`` tells, without building its column objects."""
    result = cursor.pgresult
    return result is not None and result.status == psycopg.pq.ExecStatus.TUPLES_OK


def _without_nul(value: Any) -> Any:
    """Statement parameters with each NUL character of a str replaced by U+FFFD."""
    if isinstance(value, str):
        return value.replace("\0", "\ufffd")
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_without_nul(item) for item in value)
    if isinstance(value, dict):
        return {key: _without_nul(item) for key, item in value.items()}
    return value


_DELETE_LOCK_TIMEOUT = b"SELECT set_config('lock_timeout', '100ms', true)"
_DELETE_PAUSES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
"""``delete_endpoint``'s pauses between tries that gave up waiting for a lock (after
``_DELETE_LOCK_TIMEOUT``); the try after the last one waits as long as it takes."""
_DEADLOCK_TRIES = 3
"""How many times a transaction is run when PostgreSQL keeps choosing it to break a
deadlock: it rolls the whole transaction back, so running it again is safe. The
statements take their locks so that none should arise (see ``delete_endpoint``);
where one still does, it costs ``deadlock_timeout`` (1 s by default) and a second
run, not an error."""

# Pipeline mode needs libpq 14 or later (psycopg's binary package bundles one).
_PIPELINE = psycopg.Pipeline.is_supported()


class _JsonbAsText(Loader):
    """A jsonb value as its text, not decoded: the claims' endpoint columns, so that
    a row is hashable and its Endpoint built once (``PostgresStorage._endpoint_of``)."""

    def load(self, data: Buffer) -> str:
        return bytes(data).decode()


class _JsonbBinaryAsText(Loader):
    """The same in binary results, whose jsonb is a version byte (1), then the text."""

    format = Format.BINARY

    def load(self, data: Buffer) -> str:
        raw = bytes(data)
        if raw[:1] != b"\x01":
            raise psycopg.DataError(f"unknown jsonb binary format version {raw[:1]!r}")
        return raw[1:].decode()


_CursorKind = tuple[bool, bool, int]
"""A kept cursor's ``binary``, ``json_as_text``, and place in its transaction."""
_BEGIN, _COMMIT = -1, -2
"""The places of a pipelined transaction's own BEGIN and COMMIT."""


class _CursorKeeping(psycopg.Connection[Any]):
    """Our own pool's connections: each keeps the cursors it made, one per kind, for
    the next call to use again (see :meth:`cursor_for`).

    A kept cursor refers to its connection, so the two make a cycle: :meth:`close`
    and :meth:`forget_cursors` break it, so that a connection closed or found
    broken is freed at once (its socket with it), not at the next garbage
    collection. A cursor's result is freed once read (:func:`_free_results`)."""

    def cursor_for(self, binary: bool, json_as_text: bool, place: int) -> psycopg.Cursor[Any]:
        """A cursor of this connection, made once per ``binary``, ``json_as_text`` and
        ``place`` (the statement's position in its transaction: the statements of
        one pipeline need a cursor each), then reused: making a cursor and its
        adapters (the jsonb-as-text loaders of claims) cost a third of a short
        statement's CPU. Only the thread that holds the connection uses them, as
        it does the connection."""
        kept: dict[_CursorKind, psycopg.Cursor[Any]] = self.__dict__.setdefault(
            "_hookdispatch_cursors", {}
        )
        kind = (binary, json_as_text, place)
        cursor = kept.get(kind)
        if cursor is None or cursor.closed:
            cursor = kept[kind] = _new_cursor(self, binary, json_as_text)
        return cursor

    def forget_cursors(self) -> None:
        """Drop the kept cursors (made anew if the connection is used again)."""
        self.__dict__.pop("_hookdispatch_cursors", None)

    def close(self) -> None:
        self.forget_cursors()
        super().close()


def _close_pool(kept: KeptConnections | None, pool: ConnectionPool[Any]) -> None:
    """Close our own pool, the connections kept out of it first."""
    if kept is not None:
        kept.close()
    pool.close()


def _new_cursor(
    conn: psycopg.Connection[Any], binary: bool, json_as_text: bool
) -> psycopg.Cursor[Any]:
    cursor = conn.cursor(binary=binary)
    if json_as_text:  # (this cursor's own adapters: the connection's are untouched)
        cursor.adapters.register_loader("jsonb", _JsonbAsText)
        cursor.adapters.register_loader("jsonb", _JsonbBinaryAsText)
    return cursor


def _result_of(cursor: psycopg.Cursor[Any]) -> _Result:
    """What a statement's cursor returned: its row count, and its rows, if any."""
    return _Result(cursor.rowcount, cursor.fetchall() if _has_rows(cursor) else [])


def _free_results(cursors: Iterable[psycopg.Cursor[Any]]) -> None:
    """Free the results ``cursors`` hold (libpq's memory, up to the size of every row
    a claim read, bodies included), read or not: a kept cursor would otherwise hold
    its last one until its next statement, which an idle connection may not run
    for a long time."""
    for cursor in cursors:
        result = cursor.pgresult
        if result is not None:
            result.clear()


def _cursor(
    conn: psycopg.Connection[Any], binary: bool, json_as_text: bool, place: int
) -> psycopg.Cursor[Any]:
    """A cursor for the statement at ``place`` of a transaction: a kept one on our own
    pool's connections (:class:`_CursorKeeping`), a new one on those of yours."""
    if isinstance(conn, _CursorKeeping):
        return conn.cursor_for(binary, json_as_text, place)
    return _new_cursor(conn, binary, json_as_text)


@frozen
class _Result:
    rowcount: int
    rows: list[tuple[Any, ...]]


@frozen
class _Taking:
    """What reading a claim statement's rows needs: its lease, the tenants whose
    turn it was (none: no turns taken), and its limit."""

    lease: str
    tenants: list[str]
    limit: int


class PostgresStorage(Storage):
    """A :class:`Storage` in PostgreSQL, for many worker processes on many machines.

    ``dsn_or_pool`` is a libpq connection string (``"postgresql://user@host/db"``),
    or a :class:`psycopg_pool.ConnectionPool` you configured yourself (PgBouncer in
    transaction mode, say, needs ``kwargs={"prepare_threshold": None}``). A pool this
    storage opened from a DSN holds up to ``max_connections`` connections and is
    closed by :meth:`close`; a pool you pass in stays yours to close.

    Tables live in their own PostgreSQL schema, ``schema`` (``"hookdispatch"``), so
    they never meet the application's own tables. The schema is created and migrated
    on open (``schema_version`` table, migrations serialised by an advisory lock, so
    processes starting together are safe); a schema written by a newer hookdispatch is
    refused.

    Claims are one ``UPDATE`` over rows picked ``FOR NO KEY UPDATE SKIP LOCKED``:
    concurrent workers skip each other's rows instead of queueing on them, and a claimed
    delivery's ``next_attempt_at`` moves to its lease's end. Fan-out
    (``endpoints_for``) looks up a ``subscriptions`` table keyed by (tenant, pattern),
    which a trigger derives from each endpoints row as it is written. Every call is one
    transaction and one round trip: most are one statement on the pool's autocommit
    connections; a call of several statements (a claim under its settings, a group
    commit, ``list_attempts``) sends them together, in pipeline mode. A call that finds
    its connection broken (the server restarted) replaces the pool's dead connections
    and is tried once more; writes are idempotent so that this is safe
    (``add_endpoint`` is not retried). Every timestamp is a ``timestamptz``.
    Durability is PostgreSQL's: a call returns after its transaction committed.
    Errors from psycopg are raised as :class:`StorageError`.
    """

    def __init__(
        self,
        dsn_or_pool: str | ConnectionPool[Any],
        *,
        schema: str = "hookdispatch",
        max_connections: int = 10,
        connect_timeout: float = 10.0,
    ) -> None:
        if (
            not isinstance(schema, str)
            or not schema
            or len(schema.encode()) > _NAME_BYTES
            or "\0" in schema
            or "$$" in schema
        ):
            # PostgreSQL cuts longer names short (two would share one schema), and
            # "$$" would end the functions' bodies, which are written in $$ quotes.
            raise InvalidInputError(
                f"schema must be a name of 1 to {_NAME_BYTES} bytes, without NUL or '$$',"
                " such as 'hookdispatch'"
            )
        if max_connections < 1:
            raise InvalidInputError("max_connections must be at least 1")
        self.schema = schema
        self._closed = False
        self._sql: dict[str, bytes] = {}
        self._rotation = Rotation()  # whose turn it is: see claim()
        self._fanned_out = False  # stored a fanout row since a claim last wrote them out
        self._settle_at = 0.0  # time.monotonic() when a claim writes them out anyway
        self._settled_since_vacuum = 0  # fanout rows deleted since the last VACUUM
        self._endpoints = EndpointCache()  # of claims' rows (see _endpoint_of)
        self._kept: KeptConnections | None = None  # our own pool's (see _connected)
        if isinstance(dsn_or_pool, ConnectionPool):
            self._owns_pool = False
            self._pool = dsn_or_pool
            with _translated(), self._pool.connection(timeout=connect_timeout) as conn:
                self._migrate(conn)
        elif isinstance(dsn_or_pool, str):
            self._owns_pool = True
            with _translated():
                conn = psycopg.connect(dsn_or_pool, connect_timeout=max(1, round(connect_timeout)))
                with conn:
                    self._migrate(conn)
                self._pool = ConnectionPool(
                    dsn_or_pool,
                    min_size=1,
                    max_size=max_connections,
                    timeout=connect_timeout,
                    name=f"hookdispatch-{schema}",
                    connection_class=_CursorKeeping,
                    kwargs={"autocommit": True},
                    open=True,
                )
                self._kept = KeptConnections(self._pool)
            # Dropped without close(), the storage still closes its pool: its
            # connections and their kept cursors refer to each other, and would
            # otherwise stay open until a garbage collection.
            self._finalizer = weakref.finalize(self, _close_pool, self._kept, self._pool)
        else:
            raise InvalidInputError(
                "PostgresStorage needs a connection string (e.g. 'postgresql://localhost/app')"
                f" or a psycopg_pool.ConnectionPool, not {type(dsn_or_pool).__name__}"
            )

    def __repr__(self) -> str:
        return f"PostgresStorage(schema={self.schema!r})"

    # Plumbing -----------------------------------------------------------------------

    def _q(self, template: str) -> bytes:
        """``template`` with ``{schema}`` filled in, rendered once and then reused.

        Bytes, not ``sql.Composed``: psycopg would render a Composed on every execute.
        """
        query = self._sql.get(template)
        if query is None:
            composed = sql.SQL(template).format(schema=sql.Identifier(self.schema))
            query = self._sql[template] = composed.as_bytes(None)
        return query

    def _run(
        self,
        *statements: Statement,
        retry: bool = True,
        binary: bool = False,
        json_as_text: bool = False,
    ) -> list[_Result]:
        """Run ``statements`` in one transaction and return their results.

        One statement on an autocommit connection (our pool's) is its own transaction:
        one round trip, no BEGIN and COMMIT. Several are one round trip too: BEGIN,
        they and COMMIT in one pipeline. ``retry``: see :meth:`_connected`.
        ``binary``: parameters and results in PostgreSQL's binary format (arrays of
        thousands: several times cheaper to encode than text). ``json_as_text``:
        jsonb values come back as their text, not decoded (a claim's rows).
        """

        def once(conn: psycopg.Connection[Any]) -> list[_Result]:
            used: list[psycopg.Cursor[Any]] = []

            def execute(statement: Statement, place: int = 0) -> psycopg.Cursor[Any]:
                cursor = _cursor(conn, binary, json_as_text, place)
                used.append(cursor)
                return cursor.execute(*statement)

            try:
                return [_result_of(cursor) for cursor in run_statements(conn, execute)]
            finally:
                _free_results(used)

        def run_statements(
            conn: psycopg.Connection[Any],
            execute: Callable[[Statement, int], psycopg.Cursor[Any]],
        ) -> list[psycopg.Cursor[Any]]:
            """The statements sent, in one transaction; their cursors, results in."""
            if len(statements) == 1 and conn.autocommit:
                cursors = [execute(statements[0], 0)]
            elif _PIPELINE and conn.autocommit:
                # BEGIN, the statements and COMMIT as one pipeline, one Sync at its
                # end: one round trip. (psycopg's transaction() within a pipeline
                # waits for the server at BEGIN and again at COMMIT: three, measured.)
                # An error, the server's or one raised here while the statements are
                # queued (a parameter psycopg refuses, an interrupt), leaves the
                # transaction open or failed, and nothing committed: it is rolled
                # back before the connection serves anything else.
                try:
                    with conn.pipeline():
                        _cursor(conn, False, False, _BEGIN).execute(b"BEGIN")
                        cursors = [
                            execute(statement, place) for place, statement in enumerate(statements)
                        ]
                        commit = _cursor(conn, False, False, _COMMIT).execute(b"COMMIT")
                except BaseException as exc:
                    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                        with contextlib.suppress(psycopg.Error):  # broken: replaced
                            conn.rollback()
                    if isinstance(exc, psycopg.Error) and isinstance(
                        exc.__context__, KeyboardInterrupt | SystemExit
                    ):
                        # An interrupt while psycopg read the results: it then fails
                        # to leave the pipeline, and says so instead.
                        raise exc.__context__ from None
                    raise
                if commit.statusmessage != "COMMIT":  # PostgreSQL's answer to a failed one
                    raise StorageError(
                        f"PostgreSQL rolled the transaction back ({commit.statusmessage})"
                    )
            else:
                # A connection of your pool outside autocommit, or a libpq without
                # pipelines: BEGIN and COMMIT, the statements between them pipelined
                # where they can be.
                pipeline = conn.pipeline() if _PIPELINE else contextlib.nullcontext()
                with pipeline, conn.transaction():
                    cursors = [
                        execute(statement, place) for place, statement in enumerate(statements)
                    ]
            return cursors

        def run(conn: psycopg.Connection[Any]) -> list[_Result]:
            nonlocal statements
            runs = 1  # of the transaction, as PostgreSQL rolls it back for deadlocks
            while True:
                try:
                    return once(conn)
                except psycopg.DataError as exc:
                    # psycopg refuses a NUL in a text parameter before sending it.
                    # No stored text holds one (ids, types and tenants are checked
                    # when made), so a lookup with one finds nothing: run it so (a
                    # write, of text not checked, stores U+FFFD in its place). Once:
                    # the statements then hold none.
                    if exc.sqlstate is not None or not holds_nul(statements):
                        raise  # the server's, or not about a NUL
                    statements = tuple((query, _without_nul(p)) for query, p in statements)
                except DeadlockDetected:
                    # PostgreSQL rolled this transaction back, whole, to let the
                    # other one through: running it again is safe.
                    if runs == _DEADLOCK_TRIES:
                        raise
                    runs += 1
                    logger.info(
                        "PostgreSQL broke a deadlock by rolling this transaction back;"
                        " running it again (%d of %d)",
                        runs,
                        _DEADLOCK_TRIES,
                    )

        return self._connected(run, retry=retry)

    def _connected(
        self, work: Callable[[psycopg.Connection[Any]], _T], *, retry: bool = True
    ) -> _T:
        """``work`` on a connection of the pool, psycopg's errors raised as
        StorageError. When the connection turns out broken (the server restarted),
        the pool's idle connections are checked and replaced, and ``work`` is tried
        once more if ``retry``: only for work whose repetition is harmless, since the
        first try may have committed.

        Our own pool's connections are kept between calls, the last one used taken
        first (:class:`~._kept.KeptConnections`); every call's work is one
        transaction, committed or rolled back by the time it returns. A pool you
        pass in hands out its connections as you configured it."""
        if self._closed:
            raise StorageError("this PostgresStorage is closed; open a new one")
        tries = 2 if retry else 1
        kept = self._kept
        for try_number in range(1, tries + 1):
            conn: psycopg.Connection[Any] | None = None
            try:
                if kept is None:
                    with self._pool.connection() as conn:
                        return work(conn)
                try:
                    conn = kept.take()
                    return work(conn)
                finally:
                    if conn is not None:
                        kept.give_back(conn)
            except psycopg.Error as exc:
                if conn is not None and conn.broken:
                    if isinstance(conn, _CursorKeeping):
                        conn.forget_cursors()  # (the pool drops it without close())
                    # A server restart breaks every idle connection: replace them all,
                    # for the next call if not for this one.
                    logger.info("PostgreSQL connection broken (%s); reconnecting", exc)
                    with _translated():
                        if kept is not None:
                            kept.release()  # (to be checked with the pool's own)
                        self._pool.check()
                    if try_number < tries:
                        continue
                raise StorageError(f"PostgreSQL failed: {type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_NAMESPACE, self.schema)
            )
            if not conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)
            ).fetchone():
                conn.execute(self._q("CREATE SCHEMA {schema}"))
            if not conn.execute(
                "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = 'schema_version'",
                (self.schema,),
            ).fetchone():
                conn.execute(self._q("CREATE TABLE {schema}.schema_version (version integer)"))
                conn.execute(self._q("INSERT INTO {schema}.schema_version VALUES (0)"))
            row = conn.execute(self._q("SELECT version FROM {schema}.schema_version")).fetchone()
            version = 0 if row is None else int(row[0])
            if version > len(MIGRATIONS):
                raise StorageError(
                    f"schema {self.schema!r} has version {version}, newer than this hookdispatch"
                    f" understands ({len(MIGRATIONS)}); upgrade hookdispatch to open it"
                )
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    conn.execute(self._q(statement))
            if version < len(MIGRATIONS):
                conn.execute(
                    self._q("UPDATE {schema}.schema_version SET version = %s"), (len(MIGRATIONS),)
                )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns_pool:
            with _translated():
                self._finalizer()

    # Endpoints ----------------------------------------------------------------------

    def add_endpoint(self, endpoint: Endpoint) -> None:
        insert = self._q(
            f"INSERT INTO {{schema}}.endpoints ({_ENDPOINT_COLUMNS})"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb)"
        )
        try:
            # Not retried: a repeat after a commit would report the id as taken.
            self._run((insert, _endpoint_params(endpoint)), retry=False)
        except StorageError as exc:
            if isinstance(exc.__cause__, UniqueViolation):
                raise InvalidInputError(
                    f"an endpoint with id {endpoint.id!r} already exists"
                ) from None
            raise

    def update_endpoint(self, endpoint: Endpoint) -> None:
        self._endpoints.clear()
        update = self._q(
            "UPDATE {schema}.endpoints SET url = %s, secret = %s, events = %s,"
            " enabled = %s, created_at = %s, consecutive_failures = %s, tenant = %s,"
            " previous_secret = %s, previous_secret_expires_at = %s, description = %s,"
            " headers = %s::jsonb, metadata = %s::jsonb WHERE id = %s"
        )
        [result] = self._run(
            (update + b" AND deleted_at IS NULL", (*_endpoint_params(endpoint)[1:], endpoint.id))
        )
        if result.rowcount == 0:
            raise UnknownEndpointError(f"no endpoint with id {endpoint.id!r}")

    def get_endpoint(self, endpoint_id: str) -> Endpoint:
        select = self._q(
            f"SELECT {_ENDPOINT_COLUMNS} FROM {{schema}}.endpoints"
            " WHERE id = %s AND deleted_at IS NULL"
        )
        [result] = self._run((select, (endpoint_id,)))
        if not result.rows:
            raise UnknownEndpointError(f"no endpoint with id {endpoint_id!r}")
        return _endpoint(result.rows[0])

    def find_endpoints(self, query: EndpointQuery) -> list[Endpoint]:
        """One range scan of endpoints_tenant (see :func:`~._rows.endpoint_query`)."""
        clauses, params = endpoint_query(query, mark="%s", moment=lambda moment: moment)
        select = self._q(f"SELECT {_ENDPOINT_COLUMNS} FROM {{schema}}.endpoints{clauses}")
        [result] = self._run((select, params))
        return [_endpoint(row) for row in result.rows]

    def list_endpoints(self) -> list[Endpoint]:
        select = self._q(
            f"SELECT {_ENDPOINT_COLUMNS} FROM {{schema}}.endpoints WHERE deleted_at IS NULL"
            " ORDER BY created_at, seq"
        )
        [result] = self._run((select, ()))
        return [_endpoint(row) for row in result.rows]

    def delete_endpoint(self, endpoint_id: str, *, now: datetime) -> int:
        """One statement: the row hidden, its secrets erased and its events emptied
        (the trigger drops its subscriptions), its pending deliveries cancelled."""
        self._endpoints.clear()
        query = self._q(
            "WITH endpoint AS (UPDATE {schema}.endpoints SET deleted_at = %(now)s,"
            " enabled = false, secret = '', previous_secret = NULL,"
            " previous_secret_expires_at = NULL, events = '{{}}'"
            " WHERE id = %(id)s AND deleted_at IS NULL RETURNING id),"
            " cancelled AS (UPDATE {schema}.deliveries SET status = 'cancelled',"
            " next_attempt_at = NULL, last_error = %(error)s, updated_at = %(now)s,"
            " lease = NULL WHERE endpoint_id IN (SELECT id FROM endpoint)"
            " AND status = 'pending' RETURNING 1)"
            " SELECT (SELECT count(*) FROM endpoint), (SELECT count(*) FROM cancelled)"
        )
        # The row locked first, then what waits in fanout written out (a write-out
        # elsewhere that meets this endpoint waits for the lock, then writes its
        # deliveries cancelled; one past it already is waited for by the lock),
        # then the deliveries cancelled. SKIP LOCKED: never wait for a write-out
        # that may be waiting for this lock.
        self._settle_backlog()
        lock = self._q(
            "SELECT 1 FROM {schema}.endpoints WHERE id = %s AND deleted_at IS NULL FOR UPDATE"
        )
        deleting = (
            (lock, (endpoint_id,)),
            self._settling(claim=True),
            (query, {"now": now, "id": endpoint_id, "error": ENDPOINT_DELETED}),
        )
        # A worker recording the outcome of one of its deliveries holds the delivery,
        # then wants this row (to count a failure, or reset the count): waiting for
        # the delivery while holding the row would deadlock with it. So the delete
        # waits briefly, and if the lock does not come, lets go of everything and
        # tries again a little later; the last try waits as long as it takes.
        for pause in (*_DELETE_PAUSES, None):
            impatient = () if pause is None else ((_DELETE_LOCK_TIMEOUT, ()),)
            try:
                *_, settle, result = self._run(*impatient, *deleting, retry=False)
                break
            except StorageError as exc:
                if pause is None or not isinstance(exc.__cause__, LockNotAvailable):
                    raise
                time.sleep(pause)
        self._settled(settle)
        found, cancelled = result.rows[0]
        if not found:
            raise UnknownEndpointError(f"no endpoint with id {endpoint_id!r}")
        return int(cancelled)

    def endpoints_for(self, tenant: str, event_type: str) -> list[Endpoint]:
        params = (tenant, list(subscription_keys(event_type)))
        [result] = self._run((self._q(_ENDPOINTS_FOR), params))
        return [_endpoint(row) for row in result.rows]

    # Events and deliveries ----------------------------------------------------------

    def add_event(self, event: Event, deliveries: Sequence[Delivery]) -> bool:
        insert = self._q(_INSERT_EVENT)
        params = _event_params(event, deliveries)
        try:
            [result] = self._run((insert, params))
        except StorageError as exc:
            _raise_missing_reference(exc, deliveries)
            raise
        return bool(result.rows[0][0])

    def add_event_to_subscribers(self, event: Event, *, now: datetime) -> bool:
        """One statement (``_INSERT_EVENT_TO_FANOUT``): the fan-out is looked up where
        the event is stored, so a dispatch costs one round trip, not two, and its
        deliveries are written out in bulk, by the next claim or read (``_SETTLE``)."""
        params = _fan_out_params(event, now)
        [result] = self._run((self._q(_INSERT_EVENT_TO_FANOUT), params))
        self._fanned_out = True
        return bool(result.rows[0][0])

    def _settling(self, *, claim: bool = False) -> Statement:
        """``_SETTLE``, to run first in a transaction that claims (``claim``: the
        oldest rows nobody else is writing out) or reads or changes deliveries (the
        oldest rows, waiting for those another transaction is writing out). Hand
        its result to :meth:`_settled`."""
        query = _SETTLE_FOR_CLAIM if claim else _SETTLE_FOR_READ
        params = {
            "rows": _SETTLE_ROWS,
            "deliveries": _SETTLE_DELIVERIES,
            "deleted": ENDPOINT_DELETED,
        }
        return self._q(query), params

    def _settled(self, result: _Result) -> bool:
        """After a ``_SETTLE``: rows dropped for want of their event are logged, and
        the table is vacuumed every :data:`_VACUUM_EVERY` rows. Whether rows may be
        left (a full chunk taken, or some of it left for the next)."""
        locked, written, dropped = result.rows[0]
        if dropped:
            logger.warning(
                "%d dispatched events were deleted before their deliveries were written"
                " out (pruned by a process of an older hookdispatch?): their deliveries"
                " are dropped",
                dropped,
            )
        if written:
            self._settled_since_vacuum += written
            if self._settled_since_vacuum >= _VACUUM_EVERY:
                self._settled_since_vacuum = 0
                self._vacuum_fanout()
        return bool(locked >= _SETTLE_ROWS or written < locked)

    def _vacuum_fanout(self) -> None:
        """``VACUUM`` fanout, whose rows come and go, so that the dead ones do not slow
        every write-out while autovacuum is off or behind. Skipped on a connection
        outside autocommit (a pool of yours), and when another process is vacuuming
        it; a failure (a role that does not own the table) is logged, never raised."""

        def vacuum(conn: psycopg.Connection[Any]) -> None:
            if conn.autocommit:
                conn.execute(self._q("VACUUM (ANALYZE, SKIP_LOCKED) {schema}.fanout"))

        try:
            self._connected(vacuum, retry=False)
        except StorageError as exc:
            logger.info("VACUUM of the fanout table failed: %s", exc.__cause__ or exc)

    def _settle_backlog(self) -> None:
        """Write out every dispatch waiting, a chunk per transaction (a backlog left by
        stopped workers can be large)."""
        while self._settled(self._run(self._settling())[0]):
            pass

    def _read_settled(self, *statements: Statement, retry: bool = True) -> list[_Result]:
        """``statements`` (reads: they may run twice) in one transaction, after a
        ``_SETTLE`` in it: they see the deliveries of every dispatch that has
        returned. One round trip, unless a backlog is waiting: then it is written
        out, a chunk per transaction, and the statements run again."""
        while True:
            settle, *results = self._run(self._settling(), *statements, retry=retry)
            if not self._settled(settle):
                return results
            self._settle_backlog()

    def _claim_settling(self) -> list[Statement]:
        """What a claim runs first: ``_settling(claim=True)`` after this object stored
        a dispatch, and every :data:`_SETTLE_INTERVAL` seconds (other processes'
        dispatches: they wait that long at most, beside a poll_interval's wait for
        the pump to look); otherwise nothing. (Threads racing here may write out
        once more, or leave a row to the next interval: never lose one.)"""
        now = time.monotonic()
        if not self._fanned_out and now < self._settle_at:
            return []
        self._fanned_out = False
        self._settle_at = now + _SETTLE_INTERVAL
        return [self._settling(claim=True)]

    def add_event_and_claim(
        self,
        event: Event,
        *,
        now: datetime,
        lease_until: datetime,
        limit: int,
        exclude_endpoints: Collection[str] = (),
    ) -> tuple[bool, list[Claim]]:
        """One statement, as ``add_event_to_subscribers``'s (one round trip): the
        deliveries it leases go in leased already, and come back with their
        endpoints; the others go in one ``fanout`` row, as that method's do."""
        if limit <= 0:
            return self.add_event_to_subscribers(event, now=now), []
        lease = new_id("lse")
        params = {
            **_fan_out_params(event, now),
            "lease_until": lease_until,
            "lease": lease,
            "limit": limit,
            # Held back from this claim only (a worker slot each): an id with a comma,
            # which only an endpoint built around the checks can have, is left out
            # rather than made to fail every dispatch.
            "excluded": _names([e for e in exclude_endpoints if "," not in e]),
        }
        [result] = self._run((self._q(_INSERT_EVENT_AND_CLAIM), params), json_as_text=True)
        if not result.rows or not result.rows[0][0]:
            return False, []
        if result.rows[0][1]:  # some deliveries went into fanout: see _claim_settling
            self._fanned_out = True
        claims = []
        for row in result.rows:
            if row[2] is None:
                continue  # the event's row, when it leased nothing
            endpoint = self._endpoint_of(row[3:])
            delivery = Delivery(
                id=row[2],
                event_id=event.id,
                endpoint_id=endpoint.id,
                status=DeliveryStatus.PENDING,
                attempt_count=0,
                next_attempt_at=lease_until,
                last_error=None,
                created_at=now,
                updated_at=now,
                tenant=event.tenant,
                event_type=event.type,
            )
            claims.append(Claim(delivery, endpoint, event.type, event.body, lease))
        return True, claims

    def add_events(self, batch: Sequence[tuple[Event, Sequence[Delivery]]]) -> list[bool]:
        """The batch in one transaction. First by COPY (``_copy_events``), which
        stores every event or none; when an id turns out stored already, in
        statements of up to :data:`_BATCH_ROWS` events: the events from one array per
        column, and the deliveries of those that went in (a new id) from another. An
        id given twice in the batch is stored once, with the first item's deliveries."""
        first: dict[str, int] = {}
        for position, (event, _) in enumerate(batch):
            first.setdefault(event.id, position)
        unique = [item for position, item in enumerate(batch) if first[item[0].id] == position]
        events = [event for event, _ in unique]
        deliveries = [d for _, ds in unique for d in ds]
        try:
            if self._copy_events(events, deliveries):
                return [first[event.id] == position for position, (event, _) in enumerate(batch)]
            statements = []
            for start in range(0, len(unique), _BATCH_ROWS):
                chunk = unique[start : start + _BATCH_ROWS]
                query, params = _insert_events_statement(
                    [event for event, _ in chunk], [d for _, ds in chunk for d in ds]
                )
                statements.append((self._q(query), params))
            results = self._run(*statements, binary=True)
        except StorageError as exc:
            _raise_missing_reference(exc, deliveries)
            raise
        inserted = {row[0] for result in results for row in result.rows}
        return [
            event.id in inserted and first[event.id] == position
            for position, (event, _) in enumerate(batch)
        ]

    def _copy_events(self, events: Sequence[Event], deliveries: Sequence[Delivery]) -> bool:
        """Store new ``events`` and their ``deliveries`` by COPY, in one transaction:
        ``True`` once committed; ``False``, nothing stored, when an id is taken (a
        unique violation). A broken connection is replaced and the COPY tried once
        more (:meth:`_connected`); a retry after a commit finds the ids taken.

        Only deliveries of ``events`` go in, as ``_INSERT_EVENTS`` stores them.
        """
        if not events:
            return True
        ids = {event.id for event in events}

        def copy_rows(conn: psycopg.Connection[Any]) -> bool:
            try:
                with conn.transaction():
                    cursor = conn.cursor()
                    # psycopg's bytea dumper, which it runs in C; the one registered by
                    # default (dbapi20's, which takes Binary() too) is Python: a third
                    # of write_row's time.
                    cursor.adapters.register_dumper(bytes, BytesBinaryDumper)
                    with cursor.copy(self._q(_COPY_EVENTS)) as copy:
                        copy.set_types(_EVENT_TYPES)
                        for e in events:
                            copy.write_row((e.id, e.type, e.created_at, e.body, e.tenant))
                    with cursor.copy(self._q(_COPY_DELIVERIES)) as copy:
                        copy.set_types(_DELIVERY_TYPES)
                        for row in _delivery_rows(deliveries, ids):
                            copy.write_row(row)
            except UniqueViolation:
                return False
            return True

        return self._connected(copy_rows)

    def add_event_in_transaction(
        self, connection: object, event: Event, deliveries: Sequence[Delivery]
    ) -> bool:
        """Write the event through the caller's psycopg connection, uncommitted.

        The connection must reach this storage's database; the rows are visible to
        workers once the caller commits. A connection in autocommit mode must be
        inside ``with conn.transaction():``, or the rows would commit at once.
        """
        if not isinstance(connection, psycopg.Connection):
            raise InvalidInputError(
                "PostgresStorage joins a psycopg Connection's transaction; got"
                f" {type(connection).__name__}"
            )
        status = connection.info.transaction_status
        if connection.autocommit and status == psycopg.pq.TransactionStatus.IDLE:
            raise InvalidStateError(
                "the connection is in autocommit mode with no open transaction; dispatch"
                " inside `with conn.transaction():` so your rows and the event commit together"
            )
        insert = self._q(_INSERT_EVENT)
        params = _event_params(event, deliveries)
        try:
            row = connection.execute(insert, params).fetchone()
        except psycopg.errors.UndefinedTable as exc:
            raise InvalidInputError(
                "the connection's database has no hookdispatch tables; connect it to the"
                " database this PostgresStorage uses"
            ) from exc
        except psycopg.Error as exc:
            raise StorageError(f"PostgreSQL failed: {type(exc).__name__}: {exc}") from exc
        return bool(row and row[0])

    def add_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        try:
            self._run((self._q(_INSERT_DELIVERIES + _ON_CONFLICT), _columns(deliveries)))
        except StorageError as exc:
            _raise_missing_reference(exc, deliveries)
            raise

    def get_event(self, event_id: str) -> Event:
        select = self._q("SELECT body, tenant FROM {schema}.events WHERE id = %s")
        [result] = self._run((select, (event_id,)))
        if not result.rows:
            raise UnknownEventError(f"no event with id {event_id!r}")
        body, tenant = result.rows[0]
        return Event.from_body(bytes(body), tenant=tenant)

    def get_delivery(self, delivery_id: str) -> Delivery:
        select = self._q(f"SELECT {_DELIVERY_COLUMNS} FROM {{schema}}.deliveries WHERE id = %s")
        [result] = self._read_settled((select, (delivery_id,)))
        if not result.rows:
            raise UnknownDeliveryError(f"no delivery with id {delivery_id!r}")
        return delivery_from_row(result.rows[0], _utc)

    def list_deliveries(
        self,
        *,
        event_id: str | None = None,
        endpoint_id: str | None = None,
        status: DeliveryStatus | None = None,
        limit: int | None = None,
    ) -> list[Delivery]:
        where, params = delivery_filter(
            event_id=event_id, endpoint_id=endpoint_id, status=status, mark="%s"
        )
        query = f"SELECT {_DELIVERY_COLUMNS} FROM {{schema}}.deliveries{where}"
        query += " ORDER BY created_at, seq"
        if limit is not None:
            query += " LIMIT %s"
            params.append(limit)
        [result] = self._read_settled((self._q(query), params))
        return [delivery_from_row(row, _utc) for row in result.rows]

    def find_deliveries(self, query: DeliveryQuery) -> list[Delivery]:
        """One indexed range scan: see :func:`~._rows.delivery_query`."""
        where, order, params = delivery_query(query, mark="%s", moment=lambda moment: moment)
        select = self._q(f"SELECT {_DELIVERY_COLUMNS} FROM {{schema}}.deliveries{where}{order}")
        [result] = self._read_settled((select, params))
        return [delivery_from_row(row, _utc) for row in result.rows]

    # Work ---------------------------------------------------------------------------

    def claim(
        self,
        *,
        now: datetime,
        lease_until: datetime,
        limit: int,
        event_id: str | None = None,
        exclude_endpoints: Collection[str] = (),
    ) -> list[Claim]:
        """One round trip. While one tenant at most has due work (as far as this
        object knows), ``claim_due_v7``'s query as a prepared statement of its own
        (:data:`_CLAIM_DUE`, under :data:`_CLAIM_SETTINGS`): the earliest due rows,
        as ever. Otherwise
        ``claim_due_v8`` with the tenants whose turn it is (see
        :meth:`Storage.claim`), each tenant's rows found through
        ``deliveries_tenant_due``. Concurrent claims skip each other's rows (``SKIP
        LOCKED``), so two workers never get the same delivery; each process keeps its
        own rotation, so the turns are shared out fairly by each, not in one order.
        Which tenants have due work is learned from ``pending_tenants()`` (a walk of
        the index, one step per tenant) every 0.1 to 1 second (see
        :mod:`~hookdispatch.storage._rotation`), and from the claims in between: a
        tenant whose first due work they have not met (just dispatched, a lease run
        out, an endpoint enabled) gets its turns from the next walk."""
        if limit <= 0:
            return []
        statement, taking = self._claim_statement(
            now=now,
            lease_until=lease_until,
            limit=limit,
            event_id=event_id,
            exclude_endpoints=exclude_endpoints,
        )
        if event_id is None:
            settle = self._claim_settling()
            results = self._run(*settle, (_CLAIM_SETTINGS, ()), statement, json_as_text=True)
            if settle:
                self._settled(results[0])
            return self._claimed(results[-1].rows, taking)
        # Inline mode's claim of the event it stored, after a write-out of what
        # waits (its own may be the newest). When a backlog waits and the claim found
        # nothing, the backlog is written out and the claim made again (it leased
        # nothing to lose); when it found some, the inline loop claims the rest
        # after next_due_at(), which writes everything out.
        written, result = self._run(self._settling(), statement, json_as_text=True)
        if self._settled(written) and not result.rows:
            self._settle_backlog()
            written, result = self._run(self._settling(), statement, json_as_text=True)
            self._settled(written)
        return self._claimed(result.rows, taking)

    def _claim_statement(
        self,
        *,
        now: datetime,
        lease_until: datetime,
        limit: int,
        event_id: str | None = None,
        exclude_endpoints: Collection[str] = (),
    ) -> tuple[Statement, _Taking]:
        """The statement of a claim of ``limit`` (at least 1), and what reading its
        rows needs (see :meth:`_claimed`)."""
        lease = new_id("lse")  # unique, like every id; a lease guards against stale
        # workers, not attackers, so it needs no system call for randomness
        excluded = _array_literal(list(exclude_endpoints))
        tenants: list[str] = []
        if event_id is None:
            self._walk_if_due(now)
            rotation = self._rotation
            if rotation.contended(now):
                # One more than can be served: one without due work (a stale
                # picture) leaves its turn to the next rather than to the earliest due.
                tenants = rotation.turn(now, limit + 1)
            # However the rounds fall, a tenant gets at most this many: each of the
            # others served has due work, and gets one first.
            cap = limit - min(len(tenants), limit) + 1
            if tenants:
                query = self._q(
                    "SELECT * FROM {schema}.claim_due_v8(%s, %s, %s, %s, %s::text[],"
                    " %s::text[], %s)"
                )
                params: Sequence[Any] | Mapping[str, Any]
                params = (now, lease_until, lease, limit, excluded, _array_literal(tenants), cap)
            else:
                query = self._q(_CLAIM_DUE)
                params = {
                    "now": now,
                    "lease_until": lease_until,
                    "lease": lease,
                    "limit": limit,
                    "excluded": excluded,
                }
        else:
            # One event's deliveries are few: found through deliveries_event, as in
            # claim_due otherwise.
            query = self._q(
                "WITH due AS MATERIALIZED ("
                " SELECT d.id FROM {schema}.deliveries d"
                " JOIN {schema}.endpoints e ON e.id = d.endpoint_id"
                " WHERE d.event_id = %s AND d.status = 'pending' AND d.next_attempt_at <= %s"
                " AND e.enabled AND d.endpoint_id <> ALL(%s::text[])"
                " ORDER BY d.next_attempt_at LIMIT %s"
                " FOR NO KEY UPDATE OF d SKIP LOCKED)"
                " UPDATE {schema}.deliveries d SET next_attempt_at = %s, lease = %s"
                " FROM due, {schema}.events ev, {schema}.endpoints e"
                " WHERE d.id = due.id AND ev.id = d.event_id AND e.id = d.endpoint_id"
                f" RETURNING {_qualified(_DELIVERY_COLUMNS, 'd')}, ev.type, ev.body,"
                f" {_qualified(_ENDPOINT_COLUMNS, 'e')}"
            )
            params = (event_id, now, excluded, limit, lease_until, lease)
        return (query, params), _Taking(lease, tenants, limit)

    def _claimed(self, rows: list[tuple[Any, ...]], taking: _Taking) -> list[Claim]:
        """The claims of a claim statement's rows, oldest first (the rotation told)."""
        lease = taking.lease
        if taking.tenants:
            rows = self._took_turns(rows, taking.tenants, taking.limit)
        claims = [
            Claim(
                delivery=delivery_from_row(row, _utc),
                endpoint=self._endpoint_of(row[DELIVERY_WIDTH + 2 :]),
                event_type=row[DELIVERY_WIDTH],
                body=bytes(row[DELIVERY_WIDTH + 1]),
                lease=lease,
            )
            for row in rows
        ]
        claims.sort(key=lambda claim: claim.delivery.created_at)
        return claims

    def _endpoint_of(self, row: tuple[Any, ...]) -> Endpoint:
        """The Endpoint of a claim's row, its jsonb as text (``json_as_text``): the
        row is the key (its events made a tuple; see :class:`EndpointCache`). The
        jsonb is decoded once here, then read as any other read of endpoints
        reads it (a JSON null is the empty object, as psycopg's None is)."""

        def build() -> Endpoint:
            headers, metadata = (None if text is None else json.loads(text) for text in row[11:13])
            return _endpoint((*row[:11], headers, metadata))

        return self._endpoints.get((*row[:3], tuple(row[3]), *row[4:_ENDPOINT_WIDTH]), build)

    def _took_turns(
        self, rows: list[tuple[Any, ...]], tenants: list[str], limit: int
    ) -> list[tuple[Any, ...]]:
        """The claimed rows of ``claim_due_v8``; its rows on tenants that ran short
        (``id`` NULL) update the rotation: each waits for its next due time."""
        rotation = self._rotation
        claimed = [row for row in rows if row[0] is not None]
        short = [row for row in rows if row[0] is None]
        for row in short:  # (tenant, when its next delivery is due)
            rotation.rest(row[9], None if row[5] is None else _utc(row[5]))
        if len(claimed) < limit:
            rotation.served(tenants[-1])  # every tenant in turn gave what it had
        else:
            rotation.served_in_rounds(tenants, Counter(row[9] for row in claimed))
        return claimed

    def _walk_if_due(self, now: datetime) -> None:
        """Refresh the rotation from ``pending_tenants()`` when it is time."""
        rotation = self._rotation
        if not rotation.walk_due():
            return
        began = time.perf_counter()
        try:
            [result] = self._run((self._q("SELECT * FROM {schema}.pending_tenants()"), ()))
        except BaseException:
            rotation.walk_failed()
            raise
        earliest = [(tenant, _utc(due)) for tenant, due in result.rows]
        rotation.walked(earliest, now, time.perf_counter() - began)

    def release(self, claims: Sequence[Claim], *, due: datetime) -> None:
        if not claims:
            return
        self._run(
            (
                self._q(_RELEASE),
                (
                    due,
                    _array_literal([c.delivery.id for c in claims]),
                    _array_literal([c.lease for c in claims]),
                ),
            )
        )

    def complete(self, claim: Claim, attempt: Attempt, delivery: Delivery) -> bool:
        # One statement: the attempt always (unless prune() removed the delivery, a
        # stale worker's, meanwhile: then nothing); the delivery only under the
        # caller's lease; and, when that made it final, the endpoint's run of failures.
        query = self._q(
            f"WITH attempt AS (INSERT INTO {{schema}}.attempts ({_ATTEMPT_COLUMNS})"
            " SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s"
            " WHERE EXISTS (SELECT 1 FROM {schema}.deliveries WHERE id = %s)"
            " ON CONFLICT (id) DO NOTHING),"
            " delivery AS (UPDATE {schema}.deliveries SET status = %s, attempt_count = %s,"
            " next_attempt_at = %s, last_error = %s, updated_at = %s, lease = NULL"
            " WHERE id = %s AND lease = %s RETURNING endpoint_id),"
            " endpoint AS (UPDATE {schema}.endpoints e SET consecutive_failures ="
            " CASE WHEN %s THEN e.consecutive_failures + 1 ELSE 0 END"
            " FROM delivery WHERE e.id = delivery.endpoint_id AND %s"
            # A success on an endpoint with no failures to reset writes nothing: no
            # new row version, and no row lock that every worker would queue on.
            " AND (%s OR e.consecutive_failures <> 0))"
            " SELECT count(*) FROM delivery"
        )
        [result] = self._run(
            (
                query,
                (
                    *_attempt_values(attempt),
                    attempt.delivery_id,
                    *_outcome_values(delivery),
                    delivery.id,
                    claim.lease,
                    delivery.status is DeliveryStatus.FAILED,
                    delivery.status.is_final,
                    delivery.status is DeliveryStatus.FAILED,
                ),
            ),
        )
        return bool(result.rows[0][0])

    def complete_many(
        self,
        completions: Sequence[tuple[Claim, Attempt, Delivery]],
        *,
        now: datetime,
        lease_until: datetime,
        limit: int = 0,
        exclude_endpoints: Collection[str] = (),
    ) -> tuple[list[bool], list[Claim]]:
        """One statement (one round trip, one transaction), ``complete_and_claim_v1``:
        the write-out a claim makes now and then (see :meth:`_claim_settling`), every
        completion from one array per column, and the claim. A claim of tenants in
        turn (several with due work) runs ``claim_due_v8`` instead, in a transaction
        of statements sent together (:meth:`_complete_and_claim_in_turn`)."""
        taking = None
        claiming: Mapping[str, Any] = _NO_CLAIM
        settle = False
        if limit > 0:
            statement, taking = self._claim_statement(
                now=now, lease_until=lease_until, limit=limit, exclude_endpoints=exclude_endpoints
            )
            if taking.tenants:
                return self._complete_and_claim_in_turn(completions, statement, taking)
            assert isinstance(statement[1], Mapping)
            claiming, settle = statement[1], bool(self._claim_settling())
        elif not completions:
            return [], []
        params = (
            *_completion_columns(completions),
            *(claiming[name] for name in _CLAIM_PARAMETERS),
            _SETTLE_ROWS if settle else 0,
            _SETTLE_DELIVERIES,
            ENDPOINT_DELETED,
        )
        [result] = self._run((self._q(_COMPLETE_AND_CLAIM), params), binary=True, json_as_text=True)
        summary, *rows = result.rows
        numbers, settled = summary[-4], summary[-3:]
        if settle:
            self._settled(_Result(1, [settled]))
        held = [False] * len(completions)
        for number in numbers or ():
            held[number - 1] = True
        return held, [] if taking is None else self._claimed(rows, taking)

    def _complete_and_claim_in_turn(
        self,
        completions: Sequence[tuple[Claim, Attempt, Delivery]],
        claim: Statement,
        taking: _Taking,
    ) -> tuple[list[bool], list[Claim]]:
        """``complete_many`` with a claim of tenants in turn: one transaction, its
        statements sent together (pipeline mode: one round trip), every completion
        (under :data:`_COMPLETION_SETTINGS`), a write-out when one is due, then the
        claim (under :data:`_CLAIM_SETTINGS`)."""
        statements: list[Statement] = []
        if completions:
            statements.append((_COMPLETION_SETTINGS, ()))
            statements.append((self._q(_COMPLETE_MANY), _completion_columns(completions)))
        settle = self._claim_settling()
        statements += [*settle, (_CLAIM_SETTINGS, ()), claim]
        results = self._run(*statements, binary=True, json_as_text=True)
        if settle:
            self._settled(results[-3])
        held = [False] * len(completions)
        if completions:
            for (number,) in results[1].rows:
                held[number - 1] = True
        return held, self._claimed(results[-1].rows, taking)

    def pending_by_endpoint(self, *, limit: int) -> list[tuple[str, int]]:
        """One query over the pending deliveries (the partial index deliveries_due)."""
        select = self._q(
            "SELECT endpoint_id, count(*) AS n FROM {schema}.deliveries"
            " WHERE status = 'pending' GROUP BY endpoint_id ORDER BY n DESC, endpoint_id"
            " LIMIT %s"
        )
        [result] = self._read_settled((select, (limit,)))
        return [(endpoint_id, int(count)) for endpoint_id, count in result.rows]

    def next_due_at(self, *, event_id: str | None = None) -> datetime | None:
        if event_id is None:
            [result] = self._read_settled((self._q("SELECT {schema}.next_due()"), ()))
        else:
            select = self._q(
                "SELECT d.next_attempt_at FROM {schema}.deliveries d"
                " JOIN {schema}.endpoints e ON e.id = d.endpoint_id"
                " WHERE d.event_id = %s AND d.status = 'pending' AND e.enabled"
                " AND d.next_attempt_at IS NOT NULL ORDER BY d.next_attempt_at LIMIT 1"
            )
            [result] = self._read_settled((select, (event_id,)))
        due = result.rows[0][0] if result.rows else None
        return None if due is None else _utc(due)

    def list_attempts(self, delivery_id: str) -> list[Attempt]:
        known, attempts = self._read_settled(
            (self._q("SELECT 1 FROM {schema}.deliveries WHERE id = %s"), (delivery_id,)),
            (
                self._q(
                    f"SELECT {_ATTEMPT_COLUMNS} FROM {{schema}}.attempts WHERE delivery_id = %s"
                    " ORDER BY number, started_at, seq"
                ),
                (delivery_id,),
            ),
        )
        if not known.rows:
            raise UnknownDeliveryError(f"no delivery with id {delivery_id!r}")
        return [attempt_from_row(row, _utc) for row in attempts.rows]

    # Retention ----------------------------------------------------------------------

    def prune(self, *, older_than: datetime, limit: int) -> int:
        """One statement (see ``_PRUNE``): concurrent pruners and workers skip the
        rows the others hold locked instead of waiting for them. Retried once when
        an event it took for an orphan gained a delivery meanwhile (a redelivery
        that committed between the statement's start and its lock on the event)."""
        check_prune_limit(limit)
        params = {"before": older_than, "limit": limit}
        for try_number in (1, 2):
            try:
                # No event is pruned before its deliveries are written out (nor
                # while it has a fanout row: see _PRUNE).
                self._settle_backlog()
                settle, result = self._run(self._settling(), (self._q(_PRUNE), params))
                self._settled(settle)
            except StorageError as exc:
                if try_number == 1 and isinstance(exc.__cause__, ForeignKeyViolation):
                    continue
                raise
            return int(result.rows[0][0])
        raise AssertionError("unreachable")  # pragma: no cover


# prune(): one batch, one statement. All its parts see one snapshot, in which the
# deliveries it deletes (doomed) are still there: an event has no delivery left when
# it has as many as are doomed (candidates counts them). Foreign keys are checked at
# the statement's end, when the attempts, deliveries and events are all gone. The
# events that never had a delivery are looked for only once no old finished
# delivery is left (a short doomed), so a long run does not walk the old events on
# every call. The counts are correlated subqueries, which PostgreSQL runs as a
# lookup in deliveries_event per event (an anti-join would read every delivery).
# FOR UPDATE SKIP LOCKED: a row another pruner holds is left to it, and so is an
# event that a redelivery is adding a delivery to (its foreign key check locks it).
# An event with a fanout row (a dispatch that committed after this transaction's
# write-out) has deliveries to come: it stays (fanout is short: one hashed scan).
_PRUNE = """
WITH doomed AS MATERIALIZED (
    SELECT id, event_id FROM {schema}.deliveries
    WHERE status <> 'pending' AND updated_at < %(before)s
    ORDER BY updated_at LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
gone_attempts AS (
    DELETE FROM {schema}.attempts WHERE delivery_id IN (SELECT id FROM doomed)
),
gone_deliveries AS (
    DELETE FROM {schema}.deliveries WHERE id IN (SELECT id FROM doomed)
),
candidates AS MATERIALIZED (
    SELECT event_id AS id, count(*) AS doomed FROM doomed GROUP BY event_id
    UNION ALL
    (
        SELECT e.id, 0 FROM {schema}.events e
        WHERE e.created_at < %(before)s AND (SELECT count(*) FROM doomed) < %(limit)s
            AND NOT (SELECT EXISTS (
                SELECT 1 FROM {schema}.deliveries d WHERE d.event_id = e.id
            ))
        ORDER BY e.created_at LIMIT %(limit)s
    )
),
orphans AS MATERIALIZED (
    SELECT e.id FROM candidates c JOIN {schema}.events e ON e.id = c.id
    WHERE e.created_at < %(before)s
        AND (SELECT count(*) FROM {schema}.deliveries d WHERE d.event_id = c.id) = c.doomed
        AND e.id NOT IN (SELECT event_id FROM {schema}.fanout)
    LIMIT %(limit)s
    FOR UPDATE OF e SKIP LOCKED
),
gone_events AS (
    DELETE FROM {schema}.events WHERE id IN (SELECT id FROM orphans)
)
SELECT (SELECT count(*) FROM doomed) + (SELECT count(*) FROM orphans)
"""


def _endpoint_params(endpoint: Endpoint) -> tuple[Any, ...]:
    return (
        endpoint.id,
        endpoint.url,
        endpoint.secret,
        list(endpoint.events),
        endpoint.enabled,
        endpoint.created_at,
        endpoint.consecutive_failures,
        endpoint.tenant,
        endpoint.previous_secret,
        endpoint.previous_secret_expires_at,
        endpoint.description,
        json_text(endpoint.headers),
        json_text(endpoint.metadata),
    )


def _event_params(event: Event, deliveries: Sequence[Delivery]) -> tuple[Any, ...]:
    """The parameters of ``_INSERT_EVENT``."""
    return (event.id, event.type, event.created_at, event.body, event.tenant, *_columns(deliveries))


def _names(names: Collection[str]) -> str:
    """Ids, event types or patterns as one parameter, split on the server with
    ``string_to_array(…, ',')``: psycopg dumps a list of strings for several times
    the CPU of one string (about 15 us a list: a dispatch() sends two or three).
    None holds a comma (their characters are checked when they are made); one
    made otherwise is refused rather than split."""
    joined = ",".join(names)
    if joined.count(",") != max(len(names) - 1, 0):
        raise InvalidInputError(f"a name containing ',' cannot be stored: {sorted(names)!r}")
    return joined


def _fan_out_params(event: Event, now: datetime) -> dict[str, Any]:
    """The parameters of ``_INSERT_EVENT_TO_FANOUT`` (and of
    ``_INSERT_EVENT_AND_CLAIM``, which takes a few more). The delivery ids, guessed
    and base, made as one batch (:func:`new_ids`: half the cost of one by one)."""
    ids = list(itertools.islice(new_ids("dlv"), _GUESSED_FAN_OUT + 1))
    return {
        "event_id": event.id,
        "type": event.type,
        "event_at": event.created_at,
        "body": event.body,
        "tenant": event.tenant,
        "patterns": _names(subscription_keys(event.type)),
        "ids": _names(ids[:_GUESSED_FAN_OUT]),
        "base": ids[_GUESSED_FAN_OUT],
        "at": now,
    }


def _insert_events_statement(
    events: Sequence[Event], deliveries: Sequence[Delivery]
) -> tuple[str, Sequence[Any] | Mapping[str, Any]]:
    """``add_events``' statement for one chunk: ``_INSERT_NEW_EVENTS`` when the chunk is
    as dispatch_many() makes it, else the general ``_INSERT_EVENTS``."""
    event_at, tenant = events[0].created_at, events[0].tenant
    at = deliveries[0].created_at if deliveries else event_at
    of = {event.id: event for event in events}
    fresh = all(e.created_at == event_at and e.tenant == tenant for e in events) and all(
        d.status is DeliveryStatus.PENDING
        and d.attempt_count == 0
        and d.last_error is None
        and d.created_at == d.updated_at == d.next_attempt_at == at
        and d.event_id in of
        and d.tenant == tenant
        and d.event_type == of[d.event_id].type
        for d in deliveries
    )
    if fresh:
        return _INSERT_NEW_EVENTS, {
            "event_at": event_at,
            "at": at,
            "tenant": tenant,
            "ids": [e.id for e in events],
            "types": [e.type for e in events],
            "bodies": [e.body for e in events],
            "delivery_ids": [d.id for d in deliveries],
            "event_ids": [d.event_id for d in deliveries],
            "endpoint_ids": [d.endpoint_id for d in deliveries],
        }
    return _INSERT_EVENTS, (
        [e.id for e in events],
        [e.type for e in events],
        [e.created_at for e in events],
        [e.body for e in events],
        [e.tenant for e in events],
        *_columns(deliveries),
    )


def _raise_missing_reference(exc: StorageError, deliveries: Sequence[Delivery]) -> None:
    """Turn a foreign-key violation on insert into the matching NotFoundError."""
    cause = exc.__cause__
    if not isinstance(cause, ForeignKeyViolation):
        return
    constraint = cause.diag.constraint_name
    if constraint == "deliveries_event_fk":
        raise UnknownEventError(
            f"no event with id {_first_mention(cause, deliveries, 'event_id')!r}"
        ) from None
    if constraint == "deliveries_endpoint_fk":
        raise UnknownEndpointError(
            f"no endpoint with id {_first_mention(cause, deliveries, 'endpoint_id')!r}"
        ) from None


def _first_mention(cause: ForeignKeyViolation, deliveries: Sequence[Delivery], field: str) -> str:
    # PostgreSQL's detail reads: Key (endpoint_id)=(ep_1) is not present in table "endpoints".
    detail = cause.diag.message_detail or ""
    for delivery in deliveries:
        value = str(getattr(delivery, field))
        if f"=({value})" in detail:
            return value
    return "?"
