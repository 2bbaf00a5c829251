"""Retention: Storage.prune() through a Dispatcher's data, the `hookdispatch prune`
command, and pruning while workers deliver. (The rules themselves, backend by backend,
are in the conformance suite: hookdispatch.testing.)"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import hookdispatch as hd
from hookdispatch.cli._app import cli

from stubs import recording

FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)


class Receivers:
    """Answers 200, except 503 at the URLs in ``failing`` and to the first attempt of
    each event at the URLs in ``flaky``; records the events each URL accepted."""

    def __init__(self, *, failing: tuple[str, ...] = (), flaky: tuple[str, ...] = ()) -> None:
        self.failing = failing
        self.flaky = flaky
        self.accepted: dict[str, Counter[str]] = {}
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def send(self, request: hd.Request) -> hd.Response:
        event_id = hd.Event.from_body(request.body).id
        with self._lock:
            first = (request.url, event_id) not in self._seen
            self._seen.add((request.url, event_id))
            if request.url in self.failing or (first and request.url in self.flaky):
                return hd.Response(status_code=503, headers={}, body=b"busy")
            self.accepted.setdefault(request.url, Counter())[event_id] += 1
        return hd.Response(status_code=200, headers={}, body=b"ok")

    def close(self) -> None:
        pass


def prune_all(storage: hd.Storage, older_than: datetime, limit: int = 1000) -> int:
    """What a caller does: prune until nothing is left; the total deleted."""
    total = 0
    while deleted := storage.prune(older_than=older_than, limit=limit):
        total += deleted
    return total


# Through a Dispatcher ---------------------------------------------------------------------


def test_prune_deletes_finished_work_and_keeps_pending_retries(storage: hd.Storage) -> None:
    ok, down = "https://ok.example/hooks", "https://down.example/hooks"
    retry = hd.RetryPolicy(initial_wait=3600, jitter=0)  # the retries wait, pending
    transport = Receivers(failing=(down,))
    with hd.Dispatcher(storage=storage, transport=transport, workers=2, retry=retry) as hooks:
        hooks.add_endpoint(ok, events=["user.*"])
        hooks.add_endpoint(down, events=["user.*"])
        events = [hooks.dispatch("user.created", {"n": n}) for n in range(5)]
        lonely = [hooks.dispatch("invoice.paid", {"n": n}) for n in range(2)]  # no endpoint
        assert hooks.drain(timeout=10)
        start = datetime.now(UTC)
        pending = hooks.deliveries(status="pending")
        assert len(pending) == 5
        assert len(hooks.deliveries(status="succeeded")) == 5
        attempts = {d.id: hooks.attempts(d.id) for d in pending}

        # Nothing is older than an hour ago.
        assert storage.prune(older_than=start - timedelta(hours=1), limit=1000) == 0
        # Everything is older than the far future: the 5 succeeded deliveries (with
        # their attempts) and the 2 events that had none; the pending retries stay.
        assert prune_all(storage, FAR_FUTURE, limit=2) == 5 + 2

        assert hooks.deliveries() == pending
        for delivery in pending:
            assert hooks.attempts(delivery.id) == attempts[delivery.id]
        for event in events:
            assert hooks.get_event(event.id) == event
        for event in lonely:
            with pytest.raises(hd.UnknownEventError):
                hooks.get_event(event.id)
        # New work after a prune is delivered as usual.
        hooks.dispatch("user.deleted", {"n": 9})
        assert hooks.drain(timeout=10)
        assert len(hooks.deliveries(status="succeeded")) == 1
    assert sum(transport.accepted[ok].values()) == 6


# The command ------------------------------------------------------------------------------


def test_the_prune_command(tmp_path: Path) -> None:
    db = tmp_path / "hooks.db"
    storage = hd.SQLiteStorage(db)
    with hd.Dispatcher(storage=storage, transport=Receivers(), workers=2) as hooks:
        hooks.add_endpoint("https://ok.example/hooks")
        for n in range(3):
            hooks.dispatch("user.created", {"n": n})
        assert hooks.drain(timeout=10)
    storage.close()

    kept = CliRunner().invoke(cli, ["--db", str(db), "prune", "--older-than", "30d"])
    assert kept.exit_code == 0, kept.output
    assert kept.stdout.startswith("Deleted 0 finished deliveries and events from before ")

    result = CliRunner().invoke(
        cli, ["--db", str(db), "prune", "--older-than", "2100-01-01T00:00:00Z", "--batch-size", "2"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "Deleted 6 finished deliveries and events from before 2100-01-01 00:00:00Z"
        " (attempts went with their deliveries).\n"
    )
    storage = hd.SQLiteStorage(db)
    assert storage.list_deliveries() == []
    assert len(storage.list_endpoints()) == 1  # endpoints are never pruned
    storage.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "Missing option '--older-than'"),
        (("--older-than", "soon"), "is neither a duration"),
        (("--older-than", "30d", "--batch-size", "0"), "--batch-size"),
    ],
)
def test_the_prune_command_refuses_bad_options(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    db = tmp_path / "hooks.db"
    hd.SQLiteStorage(db).close()
    result = CliRunner().invoke(cli, ["--db", str(db), "prune", *args])
    assert result.exit_code == 2
    assert message in result.stderr


def test_the_prune_command_needs_an_existing_database(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--db", str(tmp_path / "nope.db"), "prune", "--older-than", "1d"]
    )
    assert result.exit_code == 2
    assert "no database at" in result.stderr
    assert not (tmp_path / "nope.db").exists()


# Pruning while workers deliver ------------------------------------------------------------


def test_pruning_while_workers_deliver_never_loses_pending_work(
    storage: hd.Storage, caplog: pytest.LogCaptureFixture
) -> None:
    """A pruner deletes everything finished, as soon as it is finished, while two
    workers deliver and retry: every event still reaches every endpoint."""
    first, second = "https://one.example/hooks", "https://two.example/hooks"
    transport = Receivers(flaky=(second,))  # every event's first attempt there fails
    retry = hd.RetryPolicy(initial_wait=0.01, jitter=0, max_attempts=5)
    stop = threading.Event()
    pruned: list[int] = []
    errors: list[BaseException] = []

    def pruner() -> None:
        try:
            while not stop.is_set():
                pruned.append(storage.prune(older_than=FAR_FUTURE, limit=7))
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    caplog.set_level(logging.WARNING, logger="hookdispatch")
    thread = threading.Thread(target=pruner)
    with hd.Dispatcher(
        storage=storage, transport=transport, workers=2, retry=retry, poll_interval=0.01
    ) as hooks:
        hooks.add_endpoint(first)
        hooks.add_endpoint(second)
        thread.start()
        try:
            ids = [hooks.dispatch("user.created", {"n": n}).id for n in range(100)]
            give_up = time.monotonic() + 30
            while storage.list_deliveries(status=hd.DeliveryStatus.PENDING):
                assert time.monotonic() < give_up, "deliveries still pending after 30 s"
                hooks.drain(timeout=1)
                time.sleep(0.01)
        finally:
            stop.set()
            thread.join()
    assert errors == []
    assert sum(pruned) > 0
    assert prune_all(storage, FAR_FUTURE) >= 0
    for url in (first, second):
        assert set(transport.accepted[url]) == set(ids), url
    assert storage.list_deliveries() == []
    errors_logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors_logged == []


def test_the_dispatchers_prune_finished_work_by_age(
    storage: hd.Storage, make_dispatcher: Any, driver: str, fake_time: Any
) -> None:
    """Dispatcher.prune and AsyncDispatcher.prune: an age or a time, in batches."""
    hooks = make_dispatcher(
        storage=storage,
        workers=0,
        transport=recording(driver),
        clock=fake_time.clock,
        sleep=fake_time.sleep,
    )
    hooks.add_endpoint("https://example.com/hooks")
    old = [hooks.dispatch("user.created", {"n": n}) for n in range(5)]
    fake_time.now += timedelta(days=40)
    new = hooks.dispatch("user.created", {})
    assert hooks.prune(older_than=timedelta(days=30), batch_size=2) == 10  # 5 + their events
    assert hooks.deliveries(event_id=old[0].id) == []
    with pytest.raises(hd.UnknownEventError):
        hooks.get_event(old[0].id)
    assert len(hooks.deliveries(event_id=new.id)) == 1
    later = fake_time.now + timedelta(seconds=1)
    assert hooks.prune(older_than=later) == 2  # a time: everything finished before it
    for wrong in (timedelta(0), timedelta(days=-1), datetime(2024, 1, 1), "30d"):
        with pytest.raises(hd.InvalidInputError, match="older_than"):
            hooks.prune(older_than=wrong)
