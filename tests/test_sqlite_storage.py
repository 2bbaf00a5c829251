"""SQLiteStorage under concurrency: threads and processes sharing one file."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlite_utils
from attrs import evolve

import hookdispatch as hd
from hookdispatch._core import conclude
from hookdispatch.storage._sqlite import MIGRATIONS, _migrate_1

NOW = datetime(2024, 6, 30, 15, 41, 23, tzinfo=UTC)
LEASE = timedelta(seconds=60)


def fill(storage: hd.Storage, events: int) -> list[str]:
    """Store ``events`` events for one endpoint; returns the delivery ids."""
    endpoint = hd.Endpoint.create("https://example.com/hooks", now=NOW)
    storage.add_endpoint(endpoint)
    ids = []
    for n in range(events):
        event = hd.Event.create("user.created", {"n": n}, now=NOW)
        delivery = hd.Delivery.create(event, endpoint, now=NOW)
        storage.add_event(event, [delivery])
        ids.append(delivery.id)
    return ids


def test_a_new_file_gets_2_kib_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    hd.SQLiteStorage(tmp_path / "new.db").close()
    with sqlite3.connect(tmp_path / "new.db") as conn:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == 2048
    with sqlite3.connect(tmp_path / "old.db") as conn:  # made by an older hookdispatch
        conn.execute("PRAGMA page_size = 4096")
        conn.execute("CREATE TABLE t (x)")
    storage = hd.SQLiteStorage(tmp_path / "old.db")
    storage.add_endpoint(hd.Endpoint.create("https://example.com/hooks", now=NOW))
    assert len(storage.list_endpoints()) == 1
    storage.close()
    with sqlite3.connect(tmp_path / "old.db") as conn:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == 4096


def test_wal_mode_and_schema_version(tmp_path: Path) -> None:
    hd.SQLiteStorage(tmp_path / "hooks.db").close()
    conn = sqlite3.connect(tmp_path / "hooks.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"deliveries_due", "deliveries_event", "attempts_delivery"} <= indexes
    plan = " ".join(
        str(row)
        for row in conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM deliveries WHERE status = 'pending'"
            " AND next_attempt_at <= 0 ORDER BY next_attempt_at LIMIT 5"
        )
    )
    assert "deliveries_due" in plan
    conn.close()
    # Reopening an up-to-date file migrates nothing and keeps the data.
    storage = hd.SQLiteStorage(tmp_path / "hooks.db")
    assert storage.list_endpoints() == []
    storage.close()


def test_threads_never_claim_the_same_delivery(tmp_path: Path) -> None:
    storage = hd.SQLiteStorage(tmp_path / "hooks.db")
    ids = fill(storage, 400)
    claimed: list[list[str]] = [[] for _ in range(8)]
    start = threading.Barrier(8)

    def worker(mine: list[str]) -> None:
        start.wait()
        while batch := storage.claim(now=NOW, lease_until=NOW + LEASE, limit=3):
            mine.extend(claim.delivery.id for claim in batch)

    threads = [threading.Thread(target=worker, args=(mine,)) for mine in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [delivery_id for mine in claimed for delivery_id in mine]
    assert len(everything) == len(set(everything)) == len(ids)
    assert set(everything) == set(ids)
    assert sum(1 for mine in claimed if mine) > 1  # the work really was shared
    storage.close()


CLAIMER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime, timedelta
    import hookdispatch as hd

    now = datetime(2024, 6, 30, 15, 41, 23, tzinfo=UTC)
    storage = hd.SQLiteStorage(sys.argv[1])
    sys.stdin.readline()  # start together
    while batch := storage.claim(now=now, lease_until=now + timedelta(seconds=60), limit=2):
        for claim in batch:
            print(claim.delivery.id, flush=True)
    """
)


def test_processes_never_claim_the_same_delivery(tmp_path: Path) -> None:
    path = tmp_path / "hooks.db"
    storage = hd.SQLiteStorage(path)
    ids = fill(storage, 400)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    outputs = [child.communicate(timeout=60)[0].split() for child in children]
    assert all(child.returncode == 0 for child in children)
    everything = [delivery_id for output in outputs for delivery_id in output]
    assert len(everything) == len(set(everything)) == len(ids)
    assert set(everything) == set(ids)
    storage.close()


def test_lease_expiry_hands_the_delivery_to_a_new_holder(storage: hd.Storage) -> None:
    fill(storage, 1)
    [first] = storage.claim(now=NOW, lease_until=NOW + LEASE, limit=5)
    assert storage.claim(now=NOW + LEASE / 2, lease_until=NOW + 2 * LEASE, limit=5) == []
    assert storage.next_due_at() == NOW + LEASE

    later = NOW + LEASE + timedelta(seconds=1)
    [second] = storage.claim(now=later, lease_until=later + LEASE, limit=5)
    assert second.delivery.id == first.delivery.id
    assert second.lease != first.lease

    # The first holder finishes late: its attempt is recorded, the state is not.
    ok = hd.Response(status_code=200, headers={}, body=b"")
    policy = hd.RetryPolicy()
    attempt, done = conclude(first, ok, started_at=NOW, duration=0.1, now=later, policy=policy)
    assert storage.complete(first, attempt, done) is False
    assert storage.get_delivery(first.delivery.id).status is hd.DeliveryStatus.PENDING
    attempt2, done2 = conclude(second, ok, started_at=later, duration=0.1, now=later, policy=policy)
    assert storage.complete(second, attempt2, done2) is True
    assert storage.get_delivery(first.delivery.id).status is hd.DeliveryStatus.SUCCEEDED
    assert len(storage.list_attempts(first.delivery.id)) == 2
    # Final deliveries are never claimed again.
    assert storage.claim(now=later + 10 * LEASE, lease_until=later + 11 * LEASE, limit=5) == []
    assert storage.next_due_at() is None


def test_disabled_endpoint_deliveries_wait_and_resume(storage: hd.Storage) -> None:
    fill(storage, 3)
    [endpoint] = storage.list_endpoints()
    storage.update_endpoint(evolve(endpoint, enabled=False))
    assert storage.claim(now=NOW, lease_until=NOW + LEASE, limit=5) == []
    assert storage.next_due_at() is None
    storage.update_endpoint(evolve(endpoint, enabled=True))
    assert len(storage.claim(now=NOW, lease_until=NOW + LEASE, limit=5)) == 3


def test_claim_skips_excluded_endpoints(storage: hd.Storage) -> None:
    fill(storage, 2)
    [endpoint] = storage.list_endpoints()
    assert (
        storage.claim(now=NOW, lease_until=NOW + LEASE, limit=5, exclude_endpoints={endpoint.id})
        == []
    )
    assert len(storage.claim(now=NOW, lease_until=NOW + LEASE, limit=5)) == 2


def test_add_event_is_idempotent_on_event_id(storage: hd.Storage) -> None:
    endpoint = hd.Endpoint.create("https://example.com/hooks", now=NOW)
    storage.add_endpoint(endpoint)
    event = hd.Event.create("user.created", {}, now=NOW, id="evt_fixed")
    assert storage.add_event(event, [hd.Delivery.create(event, endpoint, now=NOW)]) is True
    assert storage.add_event(event, [hd.Delivery.create(event, endpoint, now=NOW)]) is False
    assert len(storage.list_deliveries()) == 1
    assert storage.get_event("evt_fixed") == event


@pytest.mark.parametrize("limit", [1, 7])
def test_claims_come_earliest_due_first(storage: hd.Storage, limit: int) -> None:
    endpoint = hd.Endpoint.create("https://example.com/hooks", now=NOW)
    storage.add_endpoint(endpoint)
    for n in reversed(range(10)):
        event = hd.Event.create("user.created", {"n": n}, now=NOW)
        delivery = evolve(
            hd.Delivery.create(event, endpoint, now=NOW), next_attempt_at=NOW + timedelta(n)
        )
        storage.add_event(event, [delivery])
    far = NOW + timedelta(days=100)
    claims = storage.claim(now=far, lease_until=far + LEASE, limit=limit)
    assert len(claims) == limit
    numbers = {hd.Event.from_body(c.body).data["n"] for c in claims}
    assert numbers == set(range(limit))


def test_a_version_1_file_is_migrated_in_place(tmp_path: Path) -> None:
    """A file written by the first schema opens, gains the new column, keeps its data."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    _migrate_1(sqlite_utils.Database(conn))
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO endpoints (id, url, secret, events, enabled, created_at)"
        " VALUES ('ep_old', 'https://example.com/hooks', ?, '[\"*\"]', 1, 0)",
        (hd.generate_secret(),),
    )
    conn.close()

    storage = hd.SQLiteStorage(path)
    [endpoint] = storage.list_endpoints()
    assert (endpoint.id, endpoint.consecutive_failures) == ("ep_old", 0)
    storage.close()


def test_a_failed_commit_leaves_the_writer_usable(tmp_path: Path) -> None:
    storage = hd.SQLiteStorage(tmp_path / "hooks.db")

    # Foreign keys checked at COMMIT make the COMMIT itself fail, which leaves
    # SQLite's transaction open unless the storage rolls it back.
    def insert_an_orphan() -> None:
        with storage._write() as conn:
            conn.execute("PRAGMA defer_foreign_keys = ON")
            conn.execute(
                "INSERT INTO deliveries (id, event_id, endpoint_id, status, attempt_count,"
                " created_at, updated_at) VALUES ('dlv_x', 'evt_missing', 'ep_missing',"
                " 'pending', 0, 0, 0)"
            )

    with pytest.raises(hd.StorageError, match="FOREIGN KEY"):
        insert_an_orphan()
    storage.add_endpoint(hd.Endpoint.create("https://example.com/hooks", now=NOW))
    assert len(storage.list_endpoints()) == 1
    assert storage.list_deliveries() == []
    storage.close()
