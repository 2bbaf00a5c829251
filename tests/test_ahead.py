"""A worker thread whose attempts are fast leases deliveries ahead, and sends them
while the tickets it handed in are stored (``AHEAD``, ``Driver._wanted``)."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs

import hookdispatch as hd
from hookdispatch._dispatching import AHEAD, _hand_out
from hookdispatch._group_commit import RECENT, Ticket
from test_group_commit import _tickets

from receivers import wait_for
from stubs import Recording, recording


class _Timed(hd.SQLiteStorage):
    """SQLite whose group calls take ``pause`` seconds more, as PostgreSQL's round
    trips do, and that notes each call's successes and the leases it was asked for."""

    def __init__(self, path: Path, *, pause: float = 0.002) -> None:
        super().__init__(path)
        self.pause = pause
        self.lock = threading.Lock()
        self.calls: list[tuple[int, int]] = []  # (successes, limit)

    def complete_many(self, completions: Any, **options: Any) -> tuple[list[bool], list[hd.Claim]]:
        time.sleep(self.pause)
        with self.lock:
            self.calls.append((len(completions), options["limit"]))
        return super().complete_many(completions, **options)


class _Slow(Recording):
    """Answers 200 after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def send(self, request: hd.Request) -> hd.Response:
        time.sleep(self.delay)
        return super().send(request)


def _store(storage: hd.Storage, count: int) -> list[str]:
    """``count`` events of one endpoint, each with one delivery due now: their ids."""
    now = datetime.now(UTC)
    endpoint = hd.Endpoint.create("http://127.0.0.1:9/hook", now=now)
    storage.add_endpoint(endpoint)
    events = [hd.Event.create("user.created", {"n": n}, now=now) for n in range(count)]
    storage.add_events([(e, [hd.Delivery.create(e, endpoint, now=now)]) for e in events])
    return [e.id for e in events]


def _sent_event_ids(transport: Recording) -> list[str]:
    return [json.loads(request.body)["id"] for request in transport.requests]


def _leased_ahead(storage: _Timed, workers: int) -> int:
    """The group calls that only workers holding more than one delivery can make:
    more leases asked for, or more successes recorded, than there are workers (a
    worker that waits for each ticket before its next attempt has one in a group,
    wanting one delivery)."""
    return sum(1 for successes, limit in storage.calls if max(successes, limit) > workers)


def test_fast_attempts_lease_ahead_and_send_every_delivery_once(tmp_path: Path) -> None:
    storage = _Timed(tmp_path / "hooks.db")
    ids = _store(storage, 300)
    transport = Recording()
    with hd.Dispatcher(storage=storage, workers=4, transport=transport) as hooks:
        assert hooks.drain(timeout=30)
        assert hooks._slots.idle
        assert hooks._slots.free == 4
    assert sorted(_sent_event_ids(transport)) == sorted(ids)  # each once
    assert _leased_ahead(storage, 4) > 0
    found = storage.list_deliveries(limit=1000)
    assert {d.status for d in found} == {hd.DeliveryStatus.SUCCEEDED}
    storage.close()


def _drain_leasing_nothing_ahead(
    path: Path, count: int, transport: Recording, **options: Any
) -> None:
    """``count`` deliveries drained by ``Dispatcher(workers=4, **options)``: each
    sent once, and no group call that only workers leasing ahead make."""
    storage = _Timed(path)
    ids = _store(storage, count)
    with hd.Dispatcher(storage=storage, workers=4, transport=transport, **options) as hooks:
        assert hooks.drain(timeout=30)
    assert sorted(_sent_event_ids(transport)) == sorted(ids)
    assert storage.calls
    assert _leased_ahead(storage, 4) == 0
    storage.close()


def test_slow_attempts_lease_only_the_next_delivery(tmp_path: Path) -> None:
    _drain_leasing_nothing_ahead(tmp_path / "hooks.db", 24, _Slow(RECENT * 1.5))


def test_a_lease_too_short_to_wait_in_keeps_workers_from_leasing_ahead(tmp_path: Path) -> None:
    # A delivery leased ahead may wait for AHEAD attempts before its own: a lease of
    # 20 s against a timeout of 5 s would not cover that twice over.
    _drain_leasing_nothing_ahead(tmp_path / "hooks.db", 200, Recording(), lease=20, timeout=5)


def test_closing_sends_what_the_workers_leased_ahead(tmp_path: Path) -> None:
    storage = _Timed(tmp_path / "hooks.db", pause=0.003)
    _store(storage, 2000)
    transport = Recording()
    hooks = hd.Dispatcher(storage=storage, workers=4, transport=transport)
    assert wait_for(lambda: _leased_ahead(storage, 4) > 3 and len(transport.requests) > 100)
    hooks.close(timeout=0)
    # Nothing is left leased: every delivery is recorded as sent, or due now.
    later = datetime.now(UTC) + timedelta(seconds=1)
    found = storage.list_deliveries(limit=5000)
    sent = set(_sent_event_ids(transport))
    assert len(sent) == len(transport.requests)  # none twice
    for delivery in found:
        if delivery.status is hd.DeliveryStatus.SUCCEEDED:
            assert delivery.event_id in sent
        else:
            assert delivery.status is hd.DeliveryStatus.PENDING
            assert delivery.event_id not in sent
            assert delivery.next_attempt_at is not None
            assert delivery.next_attempt_at < later
    storage.close()


def test_a_worker_wants_ahead_only_when_fast_busy_durable_and_leased_long_enough(
    tmp_path: Path,
) -> None:
    durable = hd.SQLiteStorage(tmp_path / "hooks.db")
    memory = hd.MemoryStorage()
    short = hd.Dispatcher(storage=durable, workers=4, lease=20, timeout=5)
    hooks = hd.Dispatcher(storage=durable, workers=4)
    in_memory = hd.Dispatcher(storage=memory, workers=4)
    fast, slow = RECENT / 10, RECENT
    try:
        for dispatcher in (hooks, short, in_memory):
            with dispatcher._cond:
                dispatcher._slots.reserve(3)  # three workers busy, this one's slot back
        with hooks._cond:
            assert hooks._wanted(0, succeeded=True, took=fast) == 1 + AHEAD
            assert hooks._wanted(1, succeeded=True, took=fast) == AHEAD
            assert hooks._wanted(5, succeeded=True, took=fast) == 0  # holds enough
            assert hooks._wanted(0, succeeded=True, took=slow) == 1
            assert hooks._wanted(1, succeeded=True, took=slow) == 0
            assert hooks._wanted(0, succeeded=False, took=fast) == 1
            hooks._slots.release()  # a second slot free: a worker is idle
            assert hooks._wanted(0, succeeded=True, took=fast) == 1
            hooks._slots.reserve()
            hooks._stopping = True
            assert hooks._wanted(0, succeeded=True, took=fast) == 0
            hooks._stopping = False
        with short._cond:
            assert short._wanted(0, succeeded=True, took=fast) == 1
        with in_memory._cond:  # no group commit: nothing to overlap with
            assert in_memory._wanted(0, succeeded=True, took=fast) == 1
    finally:
        for dispatcher in (hooks, short, in_memory):
            with dispatcher._cond:
                dispatcher._slots.release(3)
            dispatcher.close(timeout=0)
        durable.close()


def test_a_groups_claims_start_every_worker_before_any_is_fed_ahead() -> None:
    first, second, third = _tickets(3)
    first.want, second.want, third.want = 3, 1, 3
    claims = [ticket.claim for ticket in _tickets(5)]
    _hand_out(claims, [first, second, third])
    assert first.claims == [claims[0], claims[3]]
    assert second.claims == [claims[1]]
    assert third.claims == [claims[2], claims[4]]


def test_claims_past_the_limit_go_to_the_first_ticket_and_none_is_dropped() -> None:
    first, second = _tickets(2)
    claims = [ticket.claim for ticket in _tickets(4)]
    _hand_out(claims, [first, second])
    assert first.claims == [claims[0], claims[2], claims[3]]
    assert second.claims == [claims[1]]
    lone: list[Ticket] = []
    _hand_out(claims, lone)  # nobody asked: nothing to hand them to


class _Greedy(hd.SQLiteStorage):
    """Leases one delivery more than each group call asks for."""

    def complete_many(
        self, completions: Any, *, limit: int = 0, **options: Any
    ) -> tuple[list[bool], list[hd.Claim]]:
        return super().complete_many(completions, limit=limit + 1 if limit else 0, **options)


def test_a_storage_that_leases_more_than_asked_has_every_delivery_sent_once(
    driver: str, tmp_path: Path, make_dispatcher: Any
) -> None:
    storage = _Greedy(tmp_path / "hooks.db")
    ids = _store(storage, 40)
    transport = recording(driver)
    hooks = make_dispatcher(storage=storage, workers=2, transport=transport)
    assert hooks.drain(timeout=10)
    assert wait_for(lambda: hooks._slots.idle)  # (a pump's claim may be under way)
    assert sorted(_sent_event_ids(transport)) == sorted(ids)
    hooks.close()
    storage.close()


class _Threads(Recording):
    """Answers 200 after ``delay`` seconds, noting which threads sent."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.lock = threading.Lock()
        self.threads: set[str] = set()

    def send(self, request: hd.Request) -> hd.Response:
        with self.lock:
            self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        return super().send(request)


def test_deliveries_leased_ahead_take_no_slot_from_idle_workers(tmp_path: Path) -> None:
    """Three workers leasing ahead must not hold the slots the pump starts the other
    five with: a worker holds one slot, whatever it holds ahead."""
    storage = _Timed(tmp_path / "hooks.db")
    transport = _Threads(0.004)
    hooks = hd.Dispatcher(storage=storage, workers=8, transport=transport)
    try:
        with hooks._cond:  # five slots held, as by a dispatch() leasing its own
            hooks._slots.reserve(5, dispatch=True)
        _store(storage, 3000)
        hooks._notify()
        assert wait_for(lambda: _leased_ahead(storage, 3) > 0)  # the three lease ahead
        with hooks._cond:
            hooks._slots.release(5, dispatch=True)
            hooks._wake = True
            hooks._cond.notify_all()
        time.sleep(0.2)
        with transport.lock:
            transport.threads.clear()
        time.sleep(0.5)
        assert len(transport.threads) == 8
    finally:
        hooks.close(timeout=0)
        storage.close()


class _NoPump(hd.SQLiteStorage):
    """The pump's claims find nothing: the test claims for itself."""

    def claim(self, **options: Any) -> list[hd.Claim]:
        return []


def test_a_worker_sends_what_it_holds_only_while_fit_and_releases_the_rest(
    tmp_path: Path,
) -> None:
    """Held since before its last attempt, a delivery goes out only while its
    endpoint is not failing, is within its share if not yet seen to succeed, and
    its lease outlasts two attempts. The rest are released: due now, or, for an
    endpoint whose failure was endpoint-wide, when that failure's retry is; counted
    held until then. A fresh ticket's first claim goes out at once, as ever."""
    storage = _NoPump(tmp_path / "hooks.db")
    now = datetime.now(UTC)
    later = now + timedelta(hours=1)
    proven, new = (hd.Endpoint.create(f"http://127.0.0.1:9/{n}", now=now) for n in "ab")
    for endpoint in (new, proven):
        storage.add_endpoint(endpoint)
        events = [hd.Event.create("user.created", {"n": n}, now=now) for n in range(3)]
        storage.add_events([(e, [hd.Delivery.create(e, endpoint, now=later)]) for e in events])
    hooks = hd.Dispatcher(storage=storage, workers=2, poll_interval=60)  # unproven share: 1
    slots = hooks._slots
    try:
        claims = hd.SQLiteStorage.claim(
            storage, now=later, lease_until=later + timedelta(seconds=60), limit=6
        )
        claims.sort(key=lambda c: c.endpoint.id != new.id)  # the new endpoint's first
        ahead: deque[hd.Claim] = deque()
        with hooks._cond:
            slots._proven.add(proven.id)  # (as after a success)
            for claim in claims:
                slots.lease_ahead(claim)  # (as the group's call does: _claims_handed_out)
            slots.reserve()  # the slot the worker holds while it waits
            slots.handed_in()
            first, dropped = hooks._take_claims(claims, ahead, waiting=False, fresh=False)
        assert first is not None
        assert first.endpoint.id == proven.id
        assert [c.endpoint.id for c in dropped] == [new.id] * 3  # 3 held, past its share
        assert [c.endpoint.id for c in ahead] == [proven.id, proven.id]
        # One held is left with too short a lease; then the endpoint fails.
        short = ahead[0]
        ahead[0] = attrs.evolve(
            short, delivery=attrs.evolve(short.delivery, next_attempt_at=datetime.now(UTC))
        )
        with hooks._cond:
            passed: list[hd.Claim] = []
            kept = hooks._take_ahead(ahead, passed)
        assert kept is not None
        assert [c.delivery.id for c in passed] == [short.delivery.id]
        retry_at = datetime.now(UTC) + timedelta(seconds=30)
        with hooks._cond:
            slots.finished(first, succeeded=False)  # the endpoint fails...
            hooks._backoff[proven.id] = retry_at  # ... endpoint-wide, retried then
            slots.finished(kept, succeeded=None)
            assert not slots.idle  # what is to be released still counts
        hooks._release(dropped + passed)
        due = {d.id: d.next_attempt_at for d in storage.list_deliveries(limit=10)}
        assert due[short.delivery.id] == retry_at
        for released in dropped:
            assert due[released.delivery.id] <= datetime.now(UTC)
        with hooks._cond:
            assert slots.idle
            # A fresh ticket's first claim goes out whatever its endpoint.
            again = hd.SQLiteStorage.claim(
                storage, now=later, lease_until=later + timedelta(seconds=60), limit=1
            )
            slots.lease_ahead(again[0])
            slots.reserve()
            slots.handed_in()
            fresh, none = hooks._take_claims(again, ahead, waiting=False, fresh=True)
            assert fresh is again[0]
            assert none == []
            slots.finished(fresh, succeeded=None)
            assert slots.idle
    finally:
        hooks.close(timeout=0)
        storage.close()
