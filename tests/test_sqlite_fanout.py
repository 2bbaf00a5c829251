"""SQLiteStorage writes a dispatch's deliveries out in bulk, later, and no read can tell.

``add_event_to_subscribers`` stores the event and one ``fanout`` row naming its
subscribers; the deliveries rows are written by the next claim (a chunk of the
oldest rows) or before any read or change of deliveries (all of them). These tests
look at the file itself to see which of the two states it is in, then check that
every reader and writer behaves as if the deliveries had been written at once.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import hookdispatch as hd
from downgrade import sqlite_back_to
from hookdispatch.storage import _sqlite

NOW = datetime(2024, 6, 30, 15, 41, 23, tzinfo=UTC)
LATER = NOW + timedelta(seconds=5)
LEASE = timedelta(seconds=60)


def rows(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


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


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "hooks.db"


@pytest.fixture
def storage(path: Path) -> hd.SQLiteStorage:
    storage = hd.SQLiteStorage(path)
    yield storage
    storage.close()


def test_a_dispatch_writes_two_short_rows_and_a_read_sees_its_deliveries(
    storage: hd.SQLiteStorage, path: Path
) -> None:
    endpoints = subscribe(storage, 3)
    event = dispatch(storage)
    assert (rows(path, "fanout"), rows(path, "deliveries")) == (1, 0)

    deliveries = storage.list_deliveries(event_id=event.id)
    assert (rows(path, "fanout"), rows(path, "deliveries")) == (0, 3)
    assert [d.endpoint_id for d in deliveries] == [e.id for e in endpoints]
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


def test_an_event_nobody_subscribes_to_leaves_no_fanout_row(
    storage: hd.SQLiteStorage, path: Path
) -> None:
    subscribe(storage, 1, tenant="acme")
    dispatch(storage, tenant="globex")
    assert rows(path, "fanout") == 0
    assert rows(path, "events") == 1


def test_an_event_id_stored_twice_fans_out_once(storage: hd.SQLiteStorage, path: Path) -> None:
    subscribe(storage, 2)
    event = dispatch(storage)
    assert not storage.add_event_to_subscribers(event, now=LATER)
    assert rows(path, "fanout") == 1
    assert len(storage.list_deliveries(event_id=event.id)) == 2


@pytest.mark.parametrize(
    "read",
    [
        lambda s, e: s.list_deliveries(event_id=e.id),
        lambda s, e: s.find_deliveries(hd.DeliveryQuery(tenant="default")),
        lambda s, e: s.pending_by_endpoint(limit=10),
        lambda s, e: s.next_due_at(event_id=e.id),
        lambda s, e: s.next_due_at(),
    ],
    ids=[
        "list_deliveries",
        "find_deliveries",
        "pending_by_endpoint",
        "next_due_at(event)",
        "next_due_at",
    ],
)
def test_every_read_of_deliveries_sees_what_another_storage_object_dispatched(
    storage: hd.SQLiteStorage, path: Path, read: object
) -> None:
    subscribe(storage, 2)
    event = dispatch(storage)
    other = hd.SQLiteStorage(path)  # another process's, as far as the file can tell
    try:
        assert read(other, event)  # type: ignore[operator]
        assert [d.event_id for d in other.list_deliveries()] == [event.id, event.id]
    finally:
        other.close()
    assert rows(path, "fanout") == 0


def test_a_claim_writes_out_the_oldest_chunk_and_claims_from_it(
    storage: hd.SQLiteStorage, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sqlite, "_SETTLE_CHUNK", 4)
    subscribe(storage, 1)
    events = [dispatch(storage, n=n) for n in range(10)]
    claims = storage.claim(now=LATER, lease_until=LATER + LEASE, limit=2)
    assert (rows(path, "fanout"), rows(path, "deliveries")) == (6, 4)
    assert [c.delivery.event_id for c in claims] == [e.id for e in events[:2]]
    assert [c.body for c in claims] == [e.body for e in events[:2]]
    # A read writes out the rest, a chunk per transaction.
    assert len(storage.list_deliveries()) == 10
    assert rows(path, "fanout") == 0


def test_an_events_own_claim_finds_it_behind_a_backlog(
    storage: hd.SQLiteStorage, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inline mode claims the deliveries of the event it just stored, by its id."""
    monkeypatch.setattr(_sqlite, "_SETTLE_CHUNK", 2)
    subscribe(storage, 1)
    events = [dispatch(storage, n=n) for n in range(5)]
    claims = storage.claim(now=LATER, lease_until=LATER + LEASE, limit=5, event_id=events[-1].id)
    assert [c.delivery.event_id for c in claims] == [events[-1].id]


def test_deleting_an_endpoint_cancels_deliveries_not_written_out_yet(
    storage: hd.SQLiteStorage, path: Path
) -> None:
    kept, deleted = subscribe(storage, 2)
    event = dispatch(storage)
    assert storage.delete_endpoint(deleted.id, now=LATER) == 1
    by_endpoint = {d.endpoint_id: d for d in storage.list_deliveries(event_id=event.id)}
    assert by_endpoint[deleted.id].status is hd.DeliveryStatus.CANCELLED
    assert by_endpoint[kept.id].status is hd.DeliveryStatus.PENDING


def test_an_endpoint_an_older_process_deleted_gets_its_deliveries_cancelled(
    storage: hd.SQLiteStorage, path: Path
) -> None:
    """A process of the version before ``fanout`` deletes without writing it out."""
    kept, deleted = subscribe(storage, 2)
    event = dispatch(storage)
    with sqlite3.connect(path) as conn:  # what that version's delete_endpoint wrote
        conn.execute(
            "UPDATE endpoints SET deleted_at = ?, enabled = 0, secret = '' WHERE id = ?",
            (LATER.timestamp(), deleted.id),
        )
        conn.execute("DELETE FROM subscriptions WHERE endpoint_id = ?", (deleted.id,))
    by_endpoint = {d.endpoint_id: d for d in storage.list_deliveries(event_id=event.id)}
    cancelled = by_endpoint[deleted.id]
    assert cancelled.status is hd.DeliveryStatus.CANCELLED
    assert (cancelled.next_attempt_at, cancelled.updated_at) == (None, LATER)
    assert cancelled.last_error == "cancelled: its endpoint was deleted"
    assert by_endpoint[kept.id].status is hd.DeliveryStatus.PENDING
    claims = storage.claim(now=LATER, lease_until=LATER + LEASE, limit=8)
    assert [c.delivery.endpoint_id for c in claims] == [kept.id]


def test_deferring_an_endpoint_defers_deliveries_not_written_out_yet(
    storage: hd.SQLiteStorage,
) -> None:
    [endpoint] = subscribe(storage, 1)
    dispatch(storage)
    assert storage.defer_endpoint(endpoint.id, until=LATER) == 1
    assert storage.next_due_at() == LATER


def test_prune_never_takes_an_event_whose_deliveries_are_not_written_out(
    storage: hd.SQLiteStorage, path: Path
) -> None:
    subscribe(storage, 1)
    event = dispatch(storage)
    assert storage.prune(older_than=LATER + timedelta(days=1), limit=100) == 0
    assert storage.get_event(event.id) == event
    assert [d.status for d in storage.list_deliveries()] == [hd.DeliveryStatus.PENDING]


def test_what_a_crash_leaves_in_fanout_is_delivered_after_a_restart(path: Path) -> None:
    first = hd.SQLiteStorage(path)
    subscribe(first, 2)
    event = dispatch(first)
    first.close()  # nothing read or claimed: the deliveries exist only as the row
    assert rows(path, "fanout") == 1
    again = hd.SQLiteStorage(path)
    try:
        claims = again.claim(now=LATER, lease_until=LATER + LEASE, limit=8)
        assert sorted(c.delivery.event_id for c in claims) == [event.id, event.id]
    finally:
        again.close()


def test_a_version_9_file_with_pending_deliveries_opens_and_fans_out_in_bulk(
    path: Path,
) -> None:
    storage = hd.SQLiteStorage(path)
    subscribe(storage, 1)
    old = dispatch(storage, n=1)
    assert len(storage.list_deliveries()) == 1  # written out, as version 9 wrote them
    storage.close()
    with sqlite3.connect(path) as conn:
        sqlite_back_to(conn, 9)
    storage = hd.SQLiteStorage(path)
    try:
        new = dispatch(storage, n=2)
        assert rows(path, "fanout") == 1
        claims = storage.claim(now=LATER, lease_until=LATER + LEASE, limit=8)
        assert [c.delivery.event_id for c in claims] == [old.id, new.id]
    finally:
        storage.close()
