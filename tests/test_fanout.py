"""SQLite and PostgreSQL write a dispatch's deliveries out in bulk, later, and no
read can tell.

``add_event_to_subscribers`` stores the event and one ``fanout`` row naming its
subscribers; the deliveries rows are written by a claim (a chunk of the oldest
rows) or before any read or change of deliveries (all of them). These tests look
at the database itself to see which of the two states it is in, then check that
every reader and writer behaves as if the deliveries had been written at once.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import hookdispatch as hd
from downgrade import postgres_back_to, sqlite_back_to
from hookdispatch.storage import _postgres, _sqlite
from pg_fixtures import new_schema, postgres_admin_dsn, postgres_dsn  # noqa: F401 - fixtures

NOW = datetime(2024, 6, 30, 15, 41, 23, tzinfo=UTC)
LATER = NOW + timedelta(seconds=5)
LEASE = timedelta(seconds=60)


class Store:
    """A backend's storage, and a look at its tables from outside the library."""

    def __init__(
        self,
        open_storage: Callable[[], hd.Storage],
        count: Callable[[str], int],
        execute: Callable[[str, tuple[object, ...]], None],
        back_to_previous: Callable[[], None],
        module: object,
    ) -> None:
        self.open = open_storage
        self.count = count
        self.execute = execute
        self.back_to_previous = back_to_previous
        self.module = module
        self.storage = open_storage()


@pytest.fixture(params=["SQLite", "PostgreSQL"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    opened: list[hd.Storage] = []

    def track(make: Callable[[], hd.Storage]) -> Callable[[], hd.Storage]:
        def open_storage() -> hd.Storage:
            opened.append(make())
            return opened[-1]

        return open_storage

    if request.param == "SQLite":
        path = tmp_path / "hooks.db"

        def execute(statement: str, params: tuple[object, ...] = ()) -> None:
            with sqlite3.connect(path) as conn:
                conn.execute(statement, params)

        def count(table: str) -> int:
            with sqlite3.connect(path) as conn:
                return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

        def back() -> None:
            with sqlite3.connect(path) as conn:
                sqlite_back_to(conn, len(_sqlite.MIGRATIONS) - 1)

        made = Store(track(lambda: hd.SQLiteStorage(path)), count, execute, back, _sqlite)
    else:
        import psycopg  # noqa: PLC0415 - only with PostgreSQL

        dsn = request.getfixturevalue("postgres_dsn")
        schema = new_schema()

        def execute(statement: str, params: tuple[object, ...] = ()) -> None:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(statement.replace("{s}", f'"{schema}"'), params)  # type: ignore[arg-type]

        def count(table: str) -> int:
            with psycopg.connect(dsn, autocommit=True) as conn:
                row = conn.execute(f'SELECT count(*) FROM "{schema}".{table}').fetchone()  # type: ignore[arg-type]
                return int(row[0])  # type: ignore[index]

        def back() -> None:
            with psycopg.connect(dsn, autocommit=True) as conn:
                postgres_back_to(conn, schema, 10)  # version 11 made fanout

        made = Store(
            track(lambda: hd.PostgresStorage(dsn, schema=schema)), count, execute, back, _postgres
        )
    yield made
    for storage in opened:
        storage.close()


def subscribe(storage: hd.Storage, count: int, *, tenant: str = "default") -> list[hd.Endpoint]:
    endpoints = []
    for n in range(count):
        endpoint = hd.Endpoint.create(
            f"https://example.com/{n}", now=NOW + timedelta(seconds=n), tenant=tenant
        )
        storage.add_endpoint(endpoint)
        endpoints.append(endpoint)
    return endpoints


def dispatch(storage: hd.Storage, *, tenant: str = "default", n: int = 0) -> hd.Event:
    event = hd.Event.create("user.created", {"n": n}, now=NOW, tenant=tenant)
    assert storage.add_event_to_subscribers(event, now=NOW)
    return event


def test_a_dispatch_writes_two_short_rows_and_a_read_sees_its_deliveries(store: Store) -> None:
    storage = store.storage
    endpoints = subscribe(storage, 3)
    event = dispatch(storage)
    assert (store.count("fanout"), store.count("deliveries")) == (1, 0)

    deliveries = storage.list_deliveries(event_id=event.id)
    assert (store.count("fanout"), store.count("deliveries")) == (0, 3)
    assert [d.endpoint_id for d in deliveries] == [e.id for e in endpoints]
    assert len({d.id for d in deliveries}) == 3
    for delivery in deliveries:
        assert delivery.id.startswith("dlv_")
        assert delivery == hd.Delivery(
            id=delivery.id,
            event_id=event.id,
            endpoint_id=delivery.endpoint_id,
            status=hd.DeliveryStatus.PENDING,
            attempt_count=0,
            next_attempt_at=NOW,
            last_error=None,
            created_at=NOW,
            updated_at=NOW,
            tenant="default",
            event_type="user.created",
        )
    assert storage.get_delivery(deliveries[0].id) == deliveries[0]


def test_a_wide_fan_out_gets_an_id_for_every_delivery(store: Store) -> None:
    """PostgreSQL makes a few ids per dispatch and derives the rest (as before)."""
    subscribe(store.storage, 9)
    event = dispatch(store.storage)
    deliveries = store.storage.list_deliveries(event_id=event.id)
    assert len({d.id for d in deliveries}) == 9


def test_an_event_nobody_subscribes_to_leaves_no_fanout_row(store: Store) -> None:
    subscribe(store.storage, 1, tenant="acme")
    dispatch(store.storage, tenant="globex")
    assert store.count("fanout") == 0
    assert store.count("events") == 1


def test_an_event_id_stored_twice_fans_out_once(store: Store) -> None:
    storage = store.storage
    subscribe(storage, 2)
    event = dispatch(storage)
    assert not storage.add_event_to_subscribers(event, now=LATER)
    assert store.count("fanout") == 1
    assert len(storage.list_deliveries(event_id=event.id)) == 2


@pytest.mark.parametrize(
    "read",
    [
        lambda s, e: s.list_deliveries(event_id=e.id),
        lambda s, e: s.find_deliveries(hd.DeliveryQuery(tenant="default")),
        lambda s, e: s.pending_by_endpoint(limit=10),
        lambda s, e: s.next_due_at(event_id=e.id),
        lambda s, e: s.next_due_at(),
        lambda s, e: s.list_attempts(s.list_deliveries()[0].id) == [],
    ],
    ids=["list", "find", "pending_by_endpoint", "next_due_at(event)", "next_due_at", "attempts"],
)
def test_every_read_of_deliveries_sees_what_another_storage_object_dispatched(
    store: Store, read: Callable[[hd.Storage, hd.Event], object]
) -> None:
    subscribe(store.storage, 2)
    event = dispatch(store.storage)
    other = store.open()  # another process's, as far as the database can tell
    assert read(other, event)
    assert [d.event_id for d in other.list_deliveries()] == [event.id, event.id]
    assert store.count("fanout") == 0


def test_a_claim_writes_out_the_oldest_chunk_and_claims_from_it(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store.module, "_SETTLE_ROWS", 4)
    storage = store.storage
    subscribe(storage, 1)
    events = [dispatch(storage, n=n) for n in range(10)]
    claims = storage.claim(now=LATER, lease_until=LATER + LEASE, limit=2)
    assert (store.count("fanout"), store.count("deliveries")) == (6, 4)
    assert sorted(c.delivery.event_id for c in claims) == sorted(e.id for e in events[:2])
    assert {c.body for c in claims} == {e.body for e in events[:2]}
    # A read writes out the rest.
    assert len(storage.list_deliveries()) == 10
    assert store.count("fanout") == 0


def test_another_process_dispatches_are_claimed_without_a_read(store: Store) -> None:
    """A worker process that only claims still gets what a web process dispatched
    (PostgreSQL: at a claim at most _SETTLE_INTERVAL after the last)."""
    subscribe(store.storage, 1)
    worker = store.open()
    assert worker.claim(now=LATER, lease_until=LATER + LEASE, limit=8) == []
    event = dispatch(store.storage)
    claims: list[hd.Claim] = []
    for _ in range(100):
        claims = worker.claim(now=LATER, lease_until=LATER + LEASE, limit=8)
        if claims:
            break
        time.sleep(0.01)
    assert [c.delivery.event_id for c in claims] == [event.id]


def test_an_events_own_claim_finds_it_behind_a_backlog(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inline mode claims the deliveries of the event it just stored, by its id."""
    monkeypatch.setattr(store.module, "_SETTLE_ROWS", 2)
    storage = store.storage
    subscribe(storage, 1)
    events = [dispatch(storage, n=n) for n in range(5)]
    claims = storage.claim(now=LATER, lease_until=LATER + LEASE, limit=5, event_id=events[-1].id)
    assert [c.delivery.event_id for c in claims] == [events[-1].id]


def test_an_events_own_claim_behind_a_backlog_keeps_what_it_leased(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim is not a read: made again after the backlog is written out, its first
    leases would be lost (to wait out the lease) and the event seem to have nothing."""
    monkeypatch.setattr(store.module, "_SETTLE_ROWS", 2)
    storage = store.storage
    subscribe(storage, 1)
    events = [dispatch(storage, n=n) for n in range(3)]
    claims = storage.claim(now=LATER, lease_until=LATER + LEASE, limit=5, event_id=events[0].id)
    assert [c.delivery.event_id for c in claims] == [events[0].id]


def test_deleting_an_endpoint_cancels_deliveries_not_written_out_yet(store: Store) -> None:
    storage = store.storage
    kept, deleted = subscribe(storage, 2)
    event = dispatch(storage)
    assert storage.delete_endpoint(deleted.id, now=LATER) == 1
    by_endpoint = {d.endpoint_id: d for d in storage.list_deliveries(event_id=event.id)}
    assert by_endpoint[deleted.id].status is hd.DeliveryStatus.CANCELLED
    assert by_endpoint[kept.id].status is hd.DeliveryStatus.PENDING


def test_an_endpoint_an_older_process_deleted_gets_its_deliveries_cancelled(
    store: Store,
) -> None:
    """A process of the version before ``fanout`` deletes without writing it out."""
    storage = store.storage
    kept, deleted = subscribe(storage, 2)
    event = dispatch(storage)
    if store.module is _sqlite:  # what that version's delete_endpoint wrote
        store.execute(
            "UPDATE endpoints SET deleted_at = ?, enabled = 0, secret = '' WHERE id = ?",
            (LATER.timestamp(), deleted.id),
        )
        store.execute("DELETE FROM subscriptions WHERE endpoint_id = ?", (deleted.id,))
    else:
        store.execute(
            "UPDATE {s}.endpoints SET deleted_at = %s, enabled = false, secret = '',"
            " events = '{}' WHERE id = %s",
            (LATER, deleted.id),
        )
    by_endpoint = {d.endpoint_id: d for d in storage.list_deliveries(event_id=event.id)}
    cancelled = by_endpoint[deleted.id]
    assert cancelled.status is hd.DeliveryStatus.CANCELLED
    assert (cancelled.next_attempt_at, cancelled.updated_at) == (None, LATER)
    assert cancelled.last_error == "cancelled: its endpoint was deleted"
    assert by_endpoint[kept.id].status is hd.DeliveryStatus.PENDING
    claims = storage.claim(now=LATER, lease_until=LATER + LEASE, limit=8)
    assert [c.delivery.endpoint_id for c in claims] == [kept.id]


def test_deferring_an_endpoint_defers_deliveries_not_written_out_yet(store: Store) -> None:
    [endpoint] = subscribe(store.storage, 1)
    dispatch(store.storage)
    if store.storage.defer_endpoint(endpoint.id, until=LATER):  # optional: SQLite has it
        assert store.storage.next_due_at() == LATER


def test_prune_never_takes_an_event_whose_deliveries_are_not_written_out(store: Store) -> None:
    storage = store.storage
    subscribe(storage, 1)
    event = dispatch(storage)
    assert storage.prune(older_than=LATER + timedelta(days=1), limit=100) == 0
    assert storage.get_event(event.id) == event
    assert [d.status for d in storage.list_deliveries()] == [hd.DeliveryStatus.PENDING]


def test_what_a_crash_leaves_in_fanout_is_delivered_after_a_restart(store: Store) -> None:
    subscribe(store.storage, 2)
    event = dispatch(store.storage)
    store.storage.close()  # nothing read or claimed: the deliveries exist only as the row
    assert store.count("fanout") == 1
    again = store.open()
    claims = again.claim(now=LATER, lease_until=LATER + LEASE, limit=8)
    assert sorted(c.delivery.event_id for c in claims) == [event.id, event.id]


def test_a_store_of_the_version_before_opens_and_fans_out_in_bulk(store: Store) -> None:
    storage = store.storage
    subscribe(storage, 1)
    old = dispatch(storage, n=1)
    assert len(storage.list_deliveries()) == 1  # written out, as the version before wrote it
    storage.close()
    store.back_to_previous()
    storage = store.open()
    new = dispatch(storage, n=2)
    assert store.count("fanout") == 1
    claims = storage.claim(now=LATER, lease_until=LATER + LEASE, limit=8)
    assert [c.delivery.event_id for c in claims] == [old.id, new.id]


@pytest.mark.parametrize("excluded", [0, 1, 5], ids=["none held back", "one", "all"])
def test_a_dispatch_to_free_workers_leases_some_and_leaves_the_rest_in_fanout(
    store: Store, excluded: int
) -> None:
    """``add_event_and_claim``: at most ``limit`` leased, to endpoints not held back;
    the others wait in one fanout row. Every delivery once, each with its own id."""
    storage = store.storage
    endpoints = subscribe(storage, 5)
    held_back = {e.id for e in endpoints[:excluded]}
    event = hd.Event.create("user.created", {"n": 1}, now=NOW)
    stored, claims = storage.add_event_and_claim(
        event, now=NOW, lease_until=NOW + LEASE, limit=2, exclude_endpoints=held_back
    )
    assert stored
    leasable = [e.id for e in endpoints if e.id not in held_back]
    assert [c.endpoint.id for c in claims] == leasable[:2]
    assert [c.delivery.next_attempt_at for c in claims] == [NOW + LEASE] * len(claims)
    assert (store.count("fanout"), store.count("deliveries")) == (1, len(claims))

    deliveries = storage.list_deliveries(event_id=event.id)
    assert len({d.id for d in deliveries}) == 5, "no delivery lost, no id given twice"
    assert sorted(d.endpoint_id for d in deliveries) == sorted(e.id for e in endpoints)
    by_id = {d.id: d for d in deliveries}
    for claim in claims:
        assert by_id[claim.delivery.id] == claim.delivery
    later = storage.claim(now=LATER, lease_until=LATER + LEASE, limit=8)
    assert sorted(c.endpoint.id for c in later) == sorted(
        e.id for e in endpoints if e.id not in {c.endpoint.id for c in claims}
    )


def pg_store(store: Store) -> hd.PostgresStorage:
    if store.module is not _postgres:
        pytest.skip("PostgreSQL only: SQLite's writes never overlap")
    assert isinstance(store.storage, hd.PostgresStorage)
    return store.storage


def test_deleting_an_endpoint_while_other_processes_write_out_leaves_nothing_pending(
    store: Store,
    postgres_dsn: str,  # noqa: F811 - the fixture
) -> None:
    """The interleaving a hostile review found: another process's write-out holds an
    old row (G) while the delete starts; a dispatch (E) commits; a third process
    writes E's row out, its delivery pending, before the delete commits. Every
    delivery to the deleted endpoint must come out cancelled."""
    import psycopg  # noqa: PLC0415 - PostgreSQL only

    storage = pg_store(store)
    [endpoint] = subscribe(storage, 1)
    settle = storage._settling(claim=True)
    g = dispatch(storage, n=1)
    first = psycopg.connect(postgres_dsn)
    second = psycopg.connect(postgres_dsn)
    committing: threading.Timer | None = None
    try:
        first.execute(settle[0], {**settle[1], "rows": 1})  # holds G's row, uncommitted
        done: dict[str, int] = {}
        deleting = threading.Thread(
            target=lambda: done.update(n=storage.delete_endpoint(endpoint.id, now=LATER))
        )
        deleting.start()
        time.sleep(0.3)  # the delete now waits for G
        e = dispatch(storage, n=2)
        second.execute(settle[0], settle[1])  # writes E's row out, before the delete commits
        first.commit()
        committing = threading.Timer(0.3, second.commit)
        committing.start()
        deleting.join(timeout=30)
        assert not deleting.is_alive()
    finally:
        if committing is not None:
            committing.join()  # (a commit and a close at once on one connection crash)
        first.close()
        second.close()
    statuses = {
        event.id: [d.status for d in storage.list_deliveries(event_id=event.id)] for event in (g, e)
    }
    assert statuses == {
        g.id: [hd.DeliveryStatus.CANCELLED],
        e.id: [hd.DeliveryStatus.CANCELLED],
    }
    assert storage.pending_by_endpoint(limit=5) == []


def test_a_read_writes_out_a_backlog_a_chunk_per_transaction(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store.module, "_SETTLE_ROWS", 3)
    storage = store.storage
    subscribe(storage, 2)
    events = [dispatch(storage, n=n) for n in range(10)]
    assert len(storage.list_deliveries()) == 20
    assert store.count("fanout") == 0
    assert {d.event_id for d in storage.list_deliveries()} == {e.id for e in events}


def test_a_claim_writes_out_no_more_deliveries_than_its_cap_past_one_row(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Wide fan-outs: a chunk is capped by deliveries too (but takes one row, however
    wide, so that it always moves on)."""
    monkeypatch.setattr(store.module, "_SETTLE_DELIVERIES", 5)
    monkeypatch.setattr(store.module, "_SETTLE_INTERVAL", 0.0, raising=False)  # PostgreSQL
    storage = store.storage
    subscribe(storage, 3)
    for n in range(4):
        dispatch(storage, n=n)
    storage.claim(now=LATER, lease_until=LATER + LEASE, limit=1)
    assert (store.count("fanout"), store.count("deliveries")) == (2, 6)
    monkeypatch.setattr(store.module, "_SETTLE_DELIVERIES", 1)
    storage.claim(now=LATER, lease_until=LATER + LEASE, limit=1)
    assert (store.count("fanout"), store.count("deliveries")) == (1, 9)


def test_an_event_an_older_process_pruned_drops_its_row_with_a_warning(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL (SQLite's foreign key refuses that prune instead)."""
    storage = pg_store(store)
    subscribe(storage, 1)
    event = dispatch(storage)
    store.execute("DELETE FROM {s}.events WHERE id = %s", (event.id,))
    with caplog.at_level("WARNING", logger="hookdispatch"):
        assert storage.list_deliveries() == []
    assert store.count("fanout") == 0
    assert "1 dispatched events were deleted before their deliveries" in caplog.text


def test_prune_keeps_an_event_that_still_has_a_fanout_row(store: Store) -> None:
    """A dispatch that commits between the prune's write-out and its delete."""
    storage = pg_store(store)
    subscribe(storage, 1)
    event = dispatch(storage)
    # As if the row had come in after the write-out: prune's own statement alone.
    [result] = storage._run(
        (storage._q(_postgres._PRUNE), {"before": LATER + timedelta(days=1), "limit": 100})
    )
    assert result.rows[0][0] == 0
    assert storage.get_event(event.id) == event
    assert [d.event_id for d in storage.list_deliveries()] == [event.id]


def test_the_fanout_table_is_vacuumed_as_its_rows_come_and_go(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Dead rows would slow every write-out while autovacuum is off or behind."""
    storage = pg_store(store)
    monkeypatch.setattr(_postgres, "_VACUUM_EVERY", 5)
    vacuums: list[None] = []
    vacuum = storage._vacuum_fanout
    monkeypatch.setattr(storage, "_vacuum_fanout", lambda: vacuums.append(vacuum()))
    subscribe(storage, 1)
    for n in range(6):
        dispatch(storage, n=n)
    with caplog.at_level("INFO", logger="hookdispatch"):
        storage.list_deliveries()
    assert len(vacuums) == 1
    assert "VACUUM of the fanout table failed" not in caplog.text


def test_a_vacuum_that_fails_is_logged_and_never_raised(
    postgres_dsn: str,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    import psycopg  # noqa: PLC0415 - only with PostgreSQL

    schema = new_schema()
    storage = hd.PostgresStorage(postgres_dsn, schema=schema)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'ALTER TABLE "{schema}".fanout RENAME TO fanout_away')  # type: ignore[arg-type]
    try:
        with caplog.at_level("INFO", logger="hookdispatch"):
            storage._vacuum_fanout()
        assert "VACUUM of the fanout table failed" in caplog.text
        assert "does not exist" in caplog.text
        assert storage.list_endpoints() == []  # its connection still serves
    finally:
        storage.close()
