"""PostgresStorage: schema and migrations, errors, pools, and 4 worker processes sharing work.

The storage contract itself is checked by the conformance suite (test_conformance.py).
"""

from __future__ import annotations

import gc
import json
import secrets
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest
from attrs import evolve
from psycopg import _pipeline_base
from psycopg_pool import ConnectionPool

import hookdispatch as hd
from downgrade import postgres_back_to, result_columns
from hookdispatch.storage._postgres import MIGRATIONS
from hookdispatch.testing._samples import outcome
from pg_fixtures import new_schema, postgres_admin_dsn, postgres_dsn  # noqa: F401 - fixtures

NOW = datetime(2024, 6, 30, 15, 41, 23, 123456, tzinfo=UTC)
LEASE = timedelta(seconds=60)


@pytest.fixture
def schema() -> str:
    return new_schema()


@pytest.fixture
def storage(postgres_dsn: str, schema: str) -> Iterator[hd.PostgresStorage]:  # noqa: F811
    store = hd.PostgresStorage(postgres_dsn, schema=schema)
    yield store
    store.close()


def fill(storage: hd.Storage, events: int, *, url: str = "https://example.com/hooks") -> None:
    endpoint = hd.Endpoint.create(url, now=NOW)
    storage.add_endpoint(endpoint)
    for n in range(events):
        event = hd.Event.create("user.created", {"n": n}, now=NOW)
        storage.add_event(event, [hd.Delivery.create(event, endpoint, now=NOW)])


def test_a_type_holding_a_comma_is_refused_not_split(storage: hd.PostgresStorage) -> None:
    """dispatch()'s statements send the patterns and ids as one comma-separated
    parameter. Types are checked when made, so only an Event built around the
    checks can hold a comma; it must not be split into other types' patterns."""
    endpoint = hd.Endpoint.create("https://example.com/hooks", now=NOW, events=["user"])
    storage.add_endpoint(endpoint)
    event = evolve(hd.Event.create("user.created", {}, now=NOW), type="user,created")
    with pytest.raises(hd.InvalidInputError, match="','"):
        storage.add_event_to_subscribers(event, now=NOW)
    with pytest.raises(hd.InvalidInputError, match="','"):
        storage.add_event_and_claim(event, now=NOW, lease_until=NOW + LEASE, limit=1)
    with pytest.raises(hd.UnknownEventError):
        storage.get_event(event.id)


def test_an_endpoint_id_holding_a_comma_held_back_does_not_fail_dispatches(
    storage: hd.PostgresStorage,
) -> None:
    """Ids are checked when made; one built around the checks, held back from a
    claim, is left out of the exclusion rather than failing every dispatch."""
    odd = evolve(hd.Endpoint.create("https://example.com/odd", now=NOW), id="ep_a,b")
    storage.add_endpoint(odd)
    event = hd.Event.create("user.created", {}, now=NOW)
    stored, claims = storage.add_event_and_claim(
        event, now=NOW, lease_until=NOW + LEASE, limit=1, exclude_endpoints={"ep_a,b"}
    )
    assert stored
    assert len(claims) == 1  # not excluded after all: one slot over its share, at worst


def test_a_group_commit_holding_a_nul_stores_it_as_the_replacement_character(
    storage: hd.PostgresStorage,
) -> None:
    """A group's columns go as arrays in text form; a NUL in one of its texts (which
    PostgreSQL's text cannot hold) is stored as U+FFFD, as in every other write,
    and the group, an excluded endpoint id with it, is recorded whole."""
    fill(storage, 2)
    claims = storage.claim(now=NOW, lease_until=NOW + LEASE, limit=2)
    completions = []
    for claim in claims:
        attempt, state = outcome(claim, "retry", now=NOW, retry_at=NOW + LEASE)
        attempt = evolve(attempt, error="HTTP 503 \0 busy")
        completions.append((claim, attempt, evolve(state, last_error="\0")))
    held, _ = storage.complete_many(
        completions, now=NOW, lease_until=NOW + LEASE, limit=1, exclude_endpoints={"ep_\0"}
    )
    assert held == [True, True]
    for claim, _, _ in completions:
        [attempt] = storage.list_attempts(claim.delivery.id)
        assert attempt.error == "HTTP 503 \ufffd busy"
        assert storage.get_delivery(claim.delivery.id).last_error == "\ufffd"


# Schema ---------------------------------------------------------------------------------


def test_schema_version_tables_and_indexes(
    storage: hd.PostgresStorage,
    postgres_dsn: str,  # noqa: F811
    schema: str,
) -> None:
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute(f'SELECT version FROM "{schema}".schema_version').fetchall() == [
            (len(MIGRATIONS),)
        ]
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
            )
        }
        assert tables == {
            "schema_version",
            "endpoints",
            "events",
            "deliveries",
            "attempts",
            "subscriptions",
            "fanout",
        }
        indexes = dict(
            conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s", (schema,)
            ).fetchall()
        )
        assert "WHERE (status = 'pending'::text)" in indexes["deliveries_due"]
        assert {"deliveries_event", "deliveries_endpoint", "attempts_delivery"} <= set(indexes)
        assert "WHERE (status <> 'pending'::text)" in indexes["deliveries_finished"]
        assert "(created_at)" in indexes["events_created"]
        types = {
            row[0]
            for row in conn.execute(
                "SELECT DISTINCT data_type FROM information_schema.columns"
                " WHERE table_schema = %s AND column_name LIKE '%%_at'",
                (schema,),
            )
        }
        assert types == {"timestamp with time zone"}


def test_the_due_query_uses_the_partial_index(
    storage: hd.PostgresStorage,
    postgres_dsn: str,  # noqa: F811
    schema: str,
) -> None:
    fill(storage, 300)
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute(f'ANALYZE "{schema}".deliveries')
        conn.execute("SET enable_seqscan = off")  # a table this small would be scanned
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                f'EXPLAIN SELECT id FROM "{schema}".deliveries'
                " WHERE status = 'pending' AND next_attempt_at <= now()"
                " ORDER BY next_attempt_at LIMIT 5"
            )
        )
    assert "deliveries_due" in plan, plan


def test_reopening_migrates_nothing_and_keeps_the_data(
    storage: hd.PostgresStorage,
    postgres_dsn: str,  # noqa: F811
    schema: str,
) -> None:
    fill(storage, 3)
    again = hd.PostgresStorage(postgres_dsn, schema=schema)
    assert len(again.list_deliveries()) == 3
    again.close()


def test_a_version_2_schema_is_migrated_and_claims_carry_the_failure_count(
    storage: hd.PostgresStorage,
    postgres_dsn: str,  # noqa: F811
    schema: str,
) -> None:
    fill(storage, 1)
    storage.close()
    # Back to schema version 2, whose only claim_due left consecutive_failures out.
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        postgres_back_to(conn, schema, 2)
        conn.execute(f'UPDATE "{schema}".endpoints SET consecutive_failures = 3')
    migrated = hd.PostgresStorage(postgres_dsn, schema=schema)
    try:
        [claim] = migrated.claim(now=NOW, lease_until=NOW + LEASE, limit=1)
        assert claim.endpoint.consecutive_failures == 3
        assert claim.endpoint == migrated.get_endpoint(claim.endpoint.id)
    finally:
        migrated.close()
    with psycopg.connect(postgres_dsn) as conn:
        [(version,)] = conn.execute(f'SELECT version FROM "{schema}".schema_version').fetchall()
        # An older hookdispatch still running calls claim_due: unchanged, still there.
        columns = result_columns(conn, schema, "claim_due")
    assert version == len(MIGRATIONS)
    assert columns == 17


def test_processes_opening_a_new_schema_together_migrate_it_once(
    postgres_dsn: str,  # noqa: F811
    schema: str,
) -> None:
    opened: list[hd.PostgresStorage] = []
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def open_it() -> None:
        start.wait()
        try:
            opened.append(hd.PostgresStorage(postgres_dsn, schema=schema, max_connections=1))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(opened) == 6
    for store in opened:
        store.close()


def test_a_schema_from_a_newer_version_is_refused(
    storage: hd.PostgresStorage,
    postgres_dsn: str,  # noqa: F811
    schema: str,
) -> None:
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute(f'UPDATE "{schema}".schema_version SET version = 99')
    with pytest.raises(hd.StorageError, match="newer"):
        hd.PostgresStorage(postgres_dsn, schema=schema)


def test_tables_stay_in_their_own_schema(
    postgres_dsn: str,  # noqa: F811
) -> None:
    one = hd.PostgresStorage(postgres_dsn, schema=new_schema())
    two = hd.PostgresStorage(postgres_dsn, schema=new_schema())
    fill(one, 2)
    assert two.list_deliveries() == []
    one.close()
    two.close()


def wait_for_a_lock_wait(dsn: str, statement_part: str) -> None:
    """Return once another session's statement holding ``statement_part`` waits
    for a lock (within 10 s)."""
    with psycopg.connect(dsn, autocommit=True) as watch:
        deadline = time.monotonic() + 10
        while not watch.execute(
            "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND position(%s in query) > 0 AND pid <> pg_backend_pid()",
            (statement_part,),
        ).fetchall():
            assert time.monotonic() < deadline, f"no statement with {statement_part} waited"
            time.sleep(0.002)


def test_deleting_an_endpoint_while_a_worker_records_its_outcome_never_deadlocks(
    storage: hd.PostgresStorage,
    postgres_dsn: str,  # noqa: F811
    schema: str,
) -> None:
    """A worker recording a final outcome holds its delivery, then wants the endpoint's
    row (its run of failures); the delete holds that row, then wants the endpoint's
    deliveries. The worker's side is played by a connection of ours taking the same
    locks in the same order, the delete's by delete_endpoint() itself, waiting for
    the delivery when the worker asks for the row: PostgreSQL used to break that
    deadlock after a second by failing one of them."""
    fill(storage, 1)
    [delivery] = storage.list_deliveries()
    quoted = f'"{schema}"'
    with psycopg.connect(postgres_dsn) as worker:
        worker.execute(
            f"UPDATE {quoted}.deliveries SET updated_at = updated_at WHERE id = %s",
            (delivery.id,),
        )
        deleted: list[int] = []
        deleting = threading.Thread(
            target=lambda: deleted.append(
                storage.delete_endpoint(delivery.endpoint_id, now=NOW + LEASE)
            )
        )
        deleting.start()
        wait_for_a_lock_wait(postgres_dsn, "cancelled")  # the delete's, on the delivery
        started = time.monotonic()
        worker.execute(
            f"UPDATE {quoted}.endpoints SET consecutive_failures = consecutive_failures + 1"
            " WHERE id = %s",
            (delivery.endpoint_id,),
        )
        waited = time.monotonic() - started
        worker.commit()
    deleting.join(timeout=10)
    assert deleted == [1]  # its one pending delivery cancelled
    assert waited < 0.9  # let through by the delete, not by deadlock detection (1 s)
    [cancelled] = storage.list_deliveries()
    assert cancelled.status is hd.DeliveryStatus.CANCELLED


def test_a_transaction_postgresql_rolls_back_to_break_a_deadlock_is_run_again(
    postgres_dsn: str,  # noqa: F811
    schema: str,
) -> None:
    """Should a deadlock arise all the same, the storage's side, when PostgreSQL
    picks it, is run again: the worker's outcome is recorded, not lost to an error.
    Another connection holds the endpoint's row, and asks for the delivery once the
    storage's complete() holds it and waits for the row."""
    # PostgreSQL looks for a deadlock once per wait, deadlock_timeout into it: the
    # storage's session looks after the other one has closed the cycle (a few ms
    # after the storage starts waiting), and the other never looks first.
    quick = psycopg.conninfo.make_conninfo(postgres_dsn, options="-c deadlock_timeout=500ms")
    patient = psycopg.conninfo.make_conninfo(postgres_dsn, options="-c deadlock_timeout=20s")
    storage = hd.PostgresStorage(quick, schema=schema)
    fill(storage, 1)
    [claim] = storage.claim(now=NOW, lease_until=NOW + LEASE, limit=1)
    quoted = f'"{schema}"'
    with psycopg.connect(patient) as other:
        other.execute(
            f"UPDATE {quoted}.endpoints SET description = description WHERE id = %s",
            (claim.endpoint.id,),
        )
        held: list[bool] = []
        completing = threading.Thread(
            target=lambda: held.append(
                storage.complete(claim, *outcome(claim, "failed", now=NOW + LEASE / 2))
            )
        )
        completing.start()
        wait_for_a_lock_wait(postgres_dsn, "consecutive_failures")  # on the endpoint
        other.execute(
            f"UPDATE {quoted}.deliveries SET updated_at = updated_at WHERE id = %s",
            (claim.delivery.id,),
        )
        other.commit()
    completing.join(timeout=10)
    assert held == [True]
    [delivery] = storage.list_deliveries()
    assert delivery.status is hd.DeliveryStatus.FAILED
    assert len(storage.list_attempts(delivery.id)) == 1
    assert storage.get_endpoint(claim.endpoint.id).consecutive_failures == 1
    storage.close()


# Connections and errors -----------------------------------------------------------------


def test_driver_errors_are_storage_errors_chained(
    storage: hd.PostgresStorage,
    postgres_dsn: str,  # noqa: F811
    schema: str,
) -> None:
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute(f'DROP TABLE "{schema}".attempts')
    fill(storage, 1)
    [claim] = storage.claim(now=NOW, lease_until=NOW + LEASE, limit=1)
    ok = hd.Response(status_code=200, headers={}, body=b"")
    attempt, done = hd._core.conclude(
        claim, ok, started_at=NOW, duration=0.1, now=NOW, policy=hd.RetryPolicy()
    )
    with pytest.raises(hd.StorageError) as caught:
        storage.complete(claim, attempt, done)
    assert not isinstance(caught.value, psycopg.Error)
    assert isinstance(caught.value.__cause__, psycopg.Error)


def test_a_connection_the_server_dropped_is_replaced(
    storage: hd.PostgresStorage,
    postgres_dsn: str,  # noqa: F811
) -> None:
    fill(storage, 2)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        # What a server restart does to the pool's idle connections.
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    assert len(storage.list_deliveries()) == 2
    assert len(storage.claim(now=NOW, lease_until=NOW + LEASE, limit=5)) == 2


def test_an_unreachable_server_is_a_storage_error() -> None:
    with pytest.raises(hd.StorageError) as caught:
        hd.PostgresStorage("host=127.0.0.1 port=1 user=nobody dbname=none", connect_timeout=2)
    assert isinstance(caught.value.__cause__, psycopg.Error)


def test_a_closed_storage_refuses_work(storage: hd.PostgresStorage) -> None:
    storage.close()
    storage.close()
    with pytest.raises(hd.StorageError, match="closed"):
        storage.list_endpoints()


def test_bad_arguments_are_invalid_input(postgres_dsn: str) -> None:  # noqa: F811
    with pytest.raises(hd.InvalidInputError, match="connection string"):
        hd.PostgresStorage(42)  # type: ignore[arg-type]
    for schema in ("", "x" * 64, "é" * 32, "a$$b", "a\x00b"):
        with pytest.raises(hd.InvalidInputError, match="schema must be a name"):
            hd.PostgresStorage(postgres_dsn, schema=schema)
    longest = "s" + secrets.token_hex(31)  # 63 bytes: kept whole, and with a $ is fine
    longest = longest[:40] + "$" + longest[41:]
    hd.PostgresStorage(postgres_dsn, schema=longest).close()


def test_a_pool_of_yours_is_used_and_left_open(
    postgres_dsn: str,  # noqa: F811
    schema: str,
) -> None:
    # A session time zone far from UTC: datetimes must still come back in UTC.
    with ConnectionPool(
        postgres_dsn,
        min_size=1,
        max_size=2,
        open=True,
        kwargs={"options": "-c TimeZone=Asia/Tokyo"},
    ) as pool:
        storage = hd.PostgresStorage(pool, schema=schema)
        fill(storage, 1)
        [delivery] = storage.list_deliveries()
        assert delivery.created_at == NOW
        assert delivery.created_at.utcoffset() == timedelta(0)
        storage.close()
        assert not pool.closed
        with pool.connection() as conn:
            assert conn.execute(f'SELECT count(*) FROM "{schema}".deliveries').fetchone() == (1,)


def test_import_without_psycopg_names_the_extra() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["psycopg"] = None  # as if it were not installed
        import hookdispatch as hd
        import hookdispatch.testing
        assert "pytest" not in sys.modules and "hypothesis" not in sys.modules
        hd.MemoryStorage()
        try:
            hd.PostgresStorage
        except ImportError as exc:
            print(exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "pip install 'hookdispatch[postgres]'" in result.stdout


def test_dispatcher_delivers_through_postgres(
    storage: hd.PostgresStorage, make_dispatcher: Any, httpserver: Any
) -> None:
    httpserver.expect_request("/hooks").respond_with_data("ok")
    hooks = make_dispatcher(storage=storage, workers=4, poll_interval=0.05)
    hooks.add_endpoint(httpserver.url_for("/hooks"))
    events = [hooks.dispatch("user.created", {"n": n}) for n in range(20)]
    assert hooks.drain(timeout=30)
    for event in events:
        [delivery] = hooks.deliveries(event_id=event.id)
        assert delivery.status is hd.DeliveryStatus.SUCCEEDED
    assert len(httpserver.log) == 20


# Four worker processes, one database ------------------------------------------------------


class Receiver(ThreadingHTTPServer):
    """A fast local webhook receiver (HTTP/1.1 keep-alive) that records each webhook-id."""

    daemon_threads = True
    # socketserver's default backlog of 5 overflows when 32 workers connect at once,
    # and the kernel then resets some of those connections: a receiver artefact
    # (real servers listen with a large backlog) that this test is not about.
    request_queue_size = 512

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.ids: list[str] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks"

    def received(self) -> list[str]:
        with self.lock:
            return list(self.ids)

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Receiver

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.server.lock:
            self.server.ids.append(self.headers["webhook-id"])
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


WORKER = textwrap.dedent(
    """
    import itertools, json, sys
    import hookdispatch as hd

    dsn, schema, workers, lease = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])

    class CountingTransport(hd.HttpxTransport):
        sent = itertools.count()

        def send(self, request):
            next(self.sent)
            return super().send(request)

    class GroupCountingStorage(hd.PostgresStorage):
        groups = []  # how many completions each group commit stored

        def complete_many(self, completions, **options):
            self.groups.append(len(completions))
            return super().complete_many(completions, **options)

    storage = GroupCountingStorage(dsn, schema=schema, max_connections=workers + 2)
    transport = CountingTransport(max_connections=workers)
    hooks = hd.Dispatcher(
        storage=storage,
        transport=transport,
        workers=workers,
        lease=lease,
        poll_interval=0.1,
        targets=hd.TargetPolicy.local(),
    )
    print("ready", flush=True)
    sys.stdin.readline()  # the parent says when every delivery is done
    hooks.close(timeout=10)
    transport.close()
    storage.close()
    groups = GroupCountingStorage.groups
    print(json.dumps({"sent": next(CountingTransport.sent), "largest": max(groups, default=0),
                      "grouped": sum(n for n in groups if n > 1)}), flush=True)
    """
)


def store_events(
    storage: hd.Storage, endpoint: hd.Endpoint, count: int, *, threads: int
) -> set[str]:
    """Store ``count`` events for ``endpoint`` from ``threads`` threads; their ids.

    Half as ``dispatch()`` stores them (a fanout row, whose delivery a claim or a
    read writes out), half with their delivery written at once.
    """
    ids: list[str] = []

    def store(part: int) -> None:
        for n in range(part, count, threads):
            now = datetime.now(UTC)
            event = hd.Event.create("order.paid", {"n": n}, now=now)
            if n % 2:
                storage.add_event(event, [hd.Delivery.create(event, endpoint, now=now)])
            else:
                assert storage.add_event_to_subscribers(event, now=now)
            ids.append(event.id)

    workers = [threading.Thread(target=store, args=(part,)) for part in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(ids) == count
    return set(ids)


@pytest.mark.slow
@pytest.mark.timeout(300)  # about 50 s on an idle 2-core machine; more when it is shared
def test_four_processes_share_10000_deliveries(
    postgres_dsn: str,  # noqa: F811
    schema: str,
) -> None:
    events, processes, workers = 10_000, 4, 8
    lease = 600.0  # longer than the run: any duplicate would be a bug, not a lease expiry
    receiver = Receiver()
    storage = hd.PostgresStorage(postgres_dsn, schema=schema)
    endpoint = hd.Endpoint.create(receiver.url, now=datetime.now(UTC))
    storage.add_endpoint(endpoint)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, postgres_dsn, schema, str(workers), str(lease)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        started = time.monotonic()
        # The application (4 request threads) stores events while the workers deliver.
        event_ids = store_events(storage, endpoint, events, threads=4)
        stored = time.monotonic() - started
        deadline = started + 240
        while time.monotonic() < deadline:
            if not storage.list_deliveries(status=hd.DeliveryStatus.PENDING, limit=1):
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        outputs = []
        for child in children:
            out, _ = child.communicate("stop\n", timeout=60)
            assert child.returncode == 0
            outputs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        receiver.stop()

    received = receiver.received()
    counts = Counter(received)
    duplicates = len(received) - len(counts)
    sent = [output["sent"] for output in outputs]
    grouped = sum(output["grouped"] for output in outputs)
    print(
        f"\n{events} events, {processes} processes x {workers} workers: stored in {stored:.1f} s,"
        f" all delivered in {elapsed:.1f} s; requests per process {sent};"
        f" duplicates: {duplicates}; {grouped} successes recorded in groups of 2 or more"
        f" (largest {max(output['largest'] for output in outputs)})"
    )
    assert grouped > 0, "the workers' group commit stored several successes at once"
    assert set(counts) == event_ids, "every event arrives, and nothing else"
    succeeded = storage.list_deliveries(status=hd.DeliveryStatus.SUCCEEDED)
    assert len(succeeded) == events
    assert storage.list_deliveries(status=hd.DeliveryStatus.FAILED) == []
    assert duplicates == 0, f"{duplicates} deliveries sent twice with no lease expired"
    assert sum(sent) == len(received)
    assert all(n > 0 for n in sent), "every process took a share of the work"
    storage.close()


def test_a_transaction_of_several_statements_is_all_or_nothing(
    storage: hd.PostgresStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """_run sends BEGIN, the statements and COMMIT as one pipeline (one round trip).
    Whatever fails part way, the server (an error in a later statement) or the
    client while it queues them (a parameter psycopg refuses, an interrupt), nothing
    is committed, the NUL retry runs the transaction once, and the connection is
    fit for the next call. A transaction-local setting holds within it only."""

    def insert(event_id: str) -> tuple[bytes, tuple[str]]:  # a second run appends "+"
        query = (
            "INSERT INTO {schema}.events (id, type, created_at, body) VALUES (%s, 't', now(), '')"
            " ON CONFLICT (id) DO UPDATE SET type = events.type || '+'"
        )
        return storage._q(query), (event_id,)

    def stored(event_id: str) -> str | None:
        select = storage._q("SELECT type FROM {schema}.events WHERE id = %s")
        [result] = storage._run((select, (event_id,)))
        return result.rows[0][0] if result.rows else None

    class Unadaptable:
        pass

    with pytest.raises(hd.StorageError, match="division by zero"):
        storage._run(insert("evt_server"), (b"SELECT 1/0", ()))
    with pytest.raises(hd.StorageError, match="cannot adapt"):
        storage._run(insert("evt_client"), (b"SELECT %s", (Unadaptable(),)))
    storage._run(insert("evt_nul"), (b"SELECT %s::text", ("a\x00b",)))  # (run again, once)

    queued = psycopg.Cursor.execute

    def interrupted(cursor: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        if query == b"SELECT 'interrupt'":
            raise KeyboardInterrupt
        return queued(cursor, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", interrupted)
    with pytest.raises(KeyboardInterrupt):
        storage._run(insert("evt_interrupted"), (b"SELECT 'interrupt'", ()))
    monkeypatch.undo()

    assert [stored(e) for e in ("evt_server", "evt_client", "evt_interrupted")] == [None] * 3
    assert stored("evt_nul") == "t"

    txids = (b"SELECT txid_current()", ())
    first, second = storage._run(txids, txids)
    assert first.rows == second.rows

    # A lock timeout set for the transaction (delete_endpoint's) holds within it only.
    timeout = (b"SELECT set_config('lock_timeout', '100ms', true)", ())
    show = (b"SHOW lock_timeout", ())
    _, within = storage._run(timeout, show)
    [after] = storage._run(show)
    assert within.rows == [("100ms",)]
    assert after.rows != within.rows


def test_a_dispatch_that_leases_waits_for_a_delete_under_way_and_leaves_its_endpoint_out(
    storage: hd.PostgresStorage,
    postgres_dsn: str,  # noqa: F811
) -> None:
    """add_event_and_claim reads the endpoints it leases to FOR KEY SHARE: one that
    delete_endpoint holds (FOR UPDATE, then disabled) is waited for, and its delivery
    goes to the fanout row, written out cancelled: not leased with its erased secret
    and sent to."""
    endpoint = hd.Endpoint.create("https://example.com/hooks", now=NOW)
    storage.add_endpoint(endpoint)
    event = hd.Event.create("user.created", {"n": 1}, now=NOW)
    found: list[tuple[bool, list[hd.Claim]]] = []
    with psycopg.connect(postgres_dsn) as deleting:  # as delete_endpoint's transaction
        deleting.execute(
            storage._q("SELECT 1 FROM {schema}.endpoints WHERE id = %s FOR UPDATE"), (endpoint.id,)
        )
        deleting.execute(
            storage._q(
                "UPDATE {schema}.endpoints SET enabled = false, deleted_at = now(), secret = ''"
                " WHERE id = %s"
            ),
            (endpoint.id,),
        )
        dispatching = threading.Thread(
            target=lambda: found.append(
                storage.add_event_and_claim(event, now=NOW, lease_until=NOW + LEASE, limit=1)
            )
        )
        dispatching.start()
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        deadline = time.monotonic() + 10
        with psycopg.connect(postgres_dsn, autocommit=True) as watching:
            while not watching.execute(waiting).fetchone()[0]:  # type: ignore[index]
                assert time.monotonic() < deadline, "the dispatch never waited for the row"
                time.sleep(0.01)
        assert dispatching.is_alive()  # waiting for the delete, which now commits
        deleting.commit()
        dispatching.join(timeout=10)
    assert found == [(True, [])]
    # Its delivery went to the fanout row instead, written out cancelled.
    [delivery] = storage.list_deliveries(event_id=event.id)
    assert delivery.status is hd.DeliveryStatus.CANCELLED


def test_an_interrupt_while_results_are_read_is_raised_as_itself(
    storage: hd.PostgresStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while psycopg reads a pipeline's results makes it fail to leave pipeline
    mode, and it says so (OperationalError): the caller gets the KeyboardInterrupt,
    not a StorageError, and the connection serves the next call."""
    read = _pipeline_base.BasePipeline._process_results

    def interrupted(*args: Any) -> Any:
        monkeypatch.setattr(_pipeline_base.BasePipeline, "_process_results", read)
        raise KeyboardInterrupt

    monkeypatch.setattr(_pipeline_base.BasePipeline, "_process_results", interrupted)
    with pytest.raises(KeyboardInterrupt):
        storage._run((b"SELECT 1", ()), (b"SELECT 2", ()))
    first, second = storage._run((b"SELECT 1", ()), (b"SELECT 2", ()))
    assert (first.rows, second.rows) == ([(1,)], [(2,)])


def test_a_commit_that_postgresql_answers_with_rollback_raises(
    storage: hd.PostgresStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL answers COMMIT in a failed transaction with ROLLBACK, and no error:
    _run checks the answer rather than report the transaction stored."""
    monkeypatch.setattr(psycopg.Cursor, "statusmessage", property(lambda cursor: "ROLLBACK"))
    with pytest.raises(hd.StorageError, match="rolled the transaction back"):
        storage._run((b"SELECT 1", ()), (b"SELECT 2", ()))


def test_our_pools_connections_keep_their_cursors_and_each_kind_stays_apart(
    storage: hd.PostgresStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cursor made anew costs a third of a short statement's CPU, so our own pool's
    connections keep theirs: calls after the first make none. Each kind stays
    apart: a claim's jsonb read as text never reaches a read that decodes it, and
    back; a pipeline's statements each get their own; a failed statement leaves its
    cursor fit for the next."""
    endpoint = hd.Endpoint.create(
        "https://example.com/hooks", now=NOW, headers={"X-Team": "a"}, metadata={"k": [1]}
    )
    storage.add_endpoint(endpoint)
    for n in range(3):
        event = hd.Event.create("user.created", {"n": n}, now=NOW)
        storage.add_event(event, [hd.Delivery.create(event, endpoint, now=NOW)])

    made: list[bool] = []
    cursor = psycopg.Connection.cursor

    def counted(conn: psycopg.Connection[Any], *args: Any, **kwargs: Any) -> Any:
        made.append(True)
        return cursor(conn, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "cursor", counted)

    def rounds() -> None:
        [claim] = storage.claim(now=NOW, lease_until=NOW + LEASE, limit=1)
        assert (claim.endpoint.headers, claim.endpoint.metadata) == ({"X-Team": "a"}, {"k": [1]})
        stored = storage.get_endpoint(endpoint.id)  # decoded, after the claim's text
        assert (stored.headers, stored.metadata) == ({"X-Team": "a"}, {"k": [1]})
        first, second = storage._run((b"SELECT 1", ()), (b"SELECT 2", ()))
        assert (first.rows, second.rows) == ([(1,)], [(2,)])
        with pytest.raises(hd.StorageError, match="division by zero"):
            storage._run((b"SELECT 1/0", ()))
        [one] = storage._run((b"SELECT 3", ()))
        assert one.rows == [(3,)]

    rounds()  # makes the cursors
    made.clear()
    rounds()
    rounds()
    assert made == []  # every one kept


def _kept_cursors(storage: hd.PostgresStorage) -> list[psycopg.Cursor[Any]]:
    assert storage._kept is not None
    with storage._kept._lock:
        connections = list(storage._kept._kept)
    return [c for conn in connections for c in vars(conn).get("_hookdispatch_cursors", {}).values()]


def test_a_kept_cursor_holds_no_result_once_a_call_returns_or_fails(
    storage: hd.PostgresStorage,
) -> None:
    """A kept cursor would hold its last result (a claim's rows, bodies included)
    until its next statement, which an idle connection may never run: every
    result is freed when the call returns, and when it fails."""
    endpoint = hd.Endpoint.create("https://example.com/hooks", now=NOW)
    storage.add_endpoint(endpoint)
    for n in range(3):
        event = hd.Event.create("user.created", {"pad": "x" * 100_000, "n": n}, now=NOW)
        storage.add_event(event, [hd.Delivery.create(event, endpoint, now=NOW)])
    claims = storage.claim(now=NOW, lease_until=NOW + LEASE, limit=3)
    assert len(claims) == 3
    assert all(len(c.body) > 100_000 for c in claims)
    kept = _kept_cursors(storage)
    assert kept
    assert all(c.pgresult is None or c.pgresult.ntuples == 0 for c in kept)

    big = (b"SELECT repeat('x', 1000) FROM generate_series(1, 1000)", ())
    with pytest.raises(hd.StorageError, match="division by zero"):
        storage._run(big, (b"SELECT 1/0", ()))
    kept = _kept_cursors(storage)
    assert all(c.pgresult is None or c.pgresult.ntuples == 0 for c in kept)
    [one] = storage._run((b"SELECT 1", ()))  # and the cursors serve the next call
    assert one.rows == [(1,)]


def test_a_storage_dropped_without_close_closes_its_connections_at_once(
    postgres_dsn: str,  # noqa: F811
    schema: str,
) -> None:
    """Its connections and their kept cursors refer to each other: without the
    storage's finalizer they would stay open until a garbage collection."""
    store = hd.PostgresStorage(postgres_dsn, schema=schema)
    [pid] = store._run((b"SELECT pg_backend_pid()", ()))[0].rows[0]
    alive = "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
    with psycopg.connect(postgres_dsn, autocommit=True) as watching:
        assert watching.execute(alive, (pid,)).fetchone() == (1,)
        collecting = gc.isenabled()
        gc.disable()
        try:
            del store
            deadline = time.monotonic() + 10
            while watching.execute(alive, (pid,)).fetchone() != (0,):
                assert time.monotonic() < deadline, "the server connection stayed open"
                time.sleep(0.01)
        finally:
            if collecting:
                gc.enable()
