"""A dispatch that finds workers free hands them its deliveries in the same storage call."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

import hookdispatch as hd

from receivers import wait_for


class _Counting(hd.SQLiteStorage):
    """Counts the claims made apart from a dispatch, and the dispatches' own leases."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lock = threading.Lock()
        self.claims = 0  # leased by claim() or complete_many() (the pump, workers' next)
        self.handed = 0  # deliveries leased by add_event_and_claim()
        self.pump_calls = 0  # calls of claim(): the pump's

    def claim(self, **options: Any) -> list[hd.Claim]:
        claims = super().claim(**options)
        with self.lock:
            self.claims += len(claims)
            self.pump_calls += 1
        return claims

    def complete_many(self, completions: Any, **options: Any) -> tuple[list[bool], list[hd.Claim]]:
        held, claims = super().complete_many(completions, **options)
        with self.lock:
            self.claims += len(claims)
        return held, claims

    def add_event_and_claim(self, event: hd.Event, **options: Any) -> tuple[bool, list[hd.Claim]]:
        stored, claims = super().add_event_and_claim(event, **options)
        with self.lock:
            self.handed += len(claims)
        return stored, claims


def test_free_workers_get_a_dispatchs_deliveries_without_a_claim_of_their_own(
    make_dispatcher: Any, httpserver: HTTPServer, tmp_path: Any
) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    storage = _Counting(tmp_path / "hooks.db")
    hooks = make_dispatcher(storage=storage, workers=4, poll_interval=60)
    for _ in range(3):
        hooks.add_endpoint(httpserver.url_for("/hook"))
    assert hooks.drain(timeout=5)  # the pump's first look finds nothing: then it sleeps
    before = storage.claims
    event = hooks.dispatch("user.created", {"id": 1})
    assert wait_for(lambda: len(httpserver.log) == 3)
    assert hooks.drain(timeout=5)
    statuses = {d.status for d in storage.list_deliveries(event_id=event.id)}
    assert statuses == {hd.DeliveryStatus.SUCCEEDED}
    assert storage.handed == 3, "the dispatch leased its 3 deliveries for the 3 free workers"
    assert storage.claims == before, "no other claim took them"


def test_a_dispatch_with_more_deliveries_than_free_workers_leaves_the_rest_to_them(
    make_dispatcher: Any, httpserver: HTTPServer, tmp_path: Any
) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    storage = _Counting(tmp_path / "hooks.db")
    hooks = make_dispatcher(storage=storage, workers=2, poll_interval=60)
    for _ in range(5):
        hooks.add_endpoint(httpserver.url_for("/hook"))
    assert hooks.drain(timeout=5)
    event = hooks.dispatch("user.created", {"id": 1})
    assert wait_for(lambda: len(httpserver.log) == 5)
    assert hooks.drain(timeout=5)
    statuses = [d.status for d in storage.list_deliveries(event_id=event.id)]
    assert statuses == [hd.DeliveryStatus.SUCCEEDED] * 5
    assert storage.handed == 2, "as many as there were free workers"
    assert storage.claims >= 3, "the other 3 were claimed as workers came free"


class _Held(hd.SQLiteStorage):
    """add_event_and_claim waits until the test lets it go on: in a storage thread
    (a call made on the loop through without_waiting cannot be cancelled halfway)."""

    without_waiting = hd.Storage.without_waiting

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entered, self.go_on = threading.Event(), threading.Event()

    def add_event_and_claim(self, event: hd.Event, **options: Any) -> tuple[bool, list[hd.Claim]]:
        self.entered.set()
        assert self.go_on.wait(10)
        return super().add_event_and_claim(event, **options)


def test_a_cancelled_async_dispatch_still_starts_what_it_leased(
    httpserver: HTTPServer, tmp_path: Any
) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    storage = _Held(tmp_path / "hooks.db")

    async def main() -> None:
        async with hd.AsyncDispatcher(storage=storage, concurrency=4, poll_interval=60) as hooks:
            await hooks.add_endpoint(httpserver.url_for("/hook"))
            assert await hooks.drain(timeout=5)
            dispatching = asyncio.create_task(hooks.dispatch("user.created", {"id": 1}))
            assert await asyncio.to_thread(storage.entered.wait, 5)
            dispatching.cancel()  # the caller gives up while the event is being stored
            storage.go_on.set()
            with pytest.raises(asyncio.CancelledError):
                await dispatching
            # Stored, and leased for a free worker: sent now, not after the 60 s lease.
            for _ in range(200):
                if httpserver.log:
                    break
                await asyncio.sleep(0.025)
            assert len(httpserver.log) == 1
            assert await hooks.drain(timeout=5)
        [delivery] = storage.list_deliveries()
        assert delivery.status is hd.DeliveryStatus.SUCCEEDED

    asyncio.run(main())


def test_a_worker_that_finds_nothing_more_due_does_not_wake_the_pump_to_look_again(
    make_dispatcher: Any, httpserver: HTTPServer, tmp_path: Any
) -> None:
    """Each dispatch is handed to an idle worker, which records it and asks for its
    next delivery in the same call; the storage has none, so the worker stops. The
    pump, idle, is not woken by that to make a claim of its own that would find
    nothing too (before: one such claim per delivery, and under asyncio one more
    thread hop for the next due time)."""
    httpserver.expect_request("/hook").respond_with_data("ok")
    storage = _Counting(tmp_path / "hooks.db")
    hooks = make_dispatcher(storage=storage, workers=4, poll_interval=60)
    hooks.add_endpoint(httpserver.url_for("/hook"))
    assert hooks.drain(timeout=5)
    before = storage.pump_calls
    for n in range(20):
        hooks.dispatch("user.created", {"n": n})
        assert wait_for(lambda n=n: len(httpserver.log) == n + 1)
        assert hooks.drain(timeout=5)
    assert storage.handed == 20
    assert storage.pump_calls - before <= 2, "the pump stayed asleep"


def test_dispatches_back_to_back_on_threads_leave_their_deliveries_to_the_workers_claims(
    httpserver: HTTPServer, tmp_path: Any
) -> None:
    """A thread dispatching in a loop (each dispatch less than STREAM_GAP after the
    last returned) leases nothing at dispatch, even with workers free: leasing one
    dispatch at a time kept the workers idle and every group a single completion
    (half the deliveries a second on PostgreSQL). The workers and the pump claim
    them instead, several at a time; after a pause, a dispatch leases again. (A
    stall of the test's own thread may let one through: a few are allowed.)"""
    httpserver.expect_request("/hook").respond_with_data("ok")
    storage = _Counting(tmp_path / "hooks.db")
    with hd.Dispatcher(
        storage=storage, workers=4, poll_interval=60, targets=hd.TargetPolicy.local()
    ) as hooks:
        hooks.add_endpoint(httpserver.url_for("/hook"))
        assert hooks.drain(timeout=5)
        hooks.dispatch("user.created", {"n": -1})  # after the pause: leased at dispatch
        assert hooks.drain(timeout=5)
        assert storage.handed == 1
        for n in range(100):
            hooks.dispatch("user.created", {"n": n})
            until = time.perf_counter() + 0.0003  # time for a worker to come free
            while time.perf_counter() < until:
                pass
        assert hooks.drain(timeout=10)
        assert storage.handed <= 1 + 3
        assert storage.claims >= 100 - 3
        assert len(storage.list_deliveries(status=hd.DeliveryStatus.SUCCEEDED, limit=200)) == 101
        time.sleep(0.01)  # a pause: the next dispatch leases again
        hooks.dispatch("user.created", {"n": 100})
        assert hooks.drain(timeout=5)
        assert 2 <= storage.handed <= 2 + 3


def test_dispatches_back_to_back_under_asyncio_still_lease_while_tasks_are_free(
    httpserver: HTTPServer, tmp_path: Any
) -> None:
    """Under asyncio the caller waits for turns of the loop whatever the storage call
    costs, and leasing saves the pump a claim: no stream rule (see STREAM_GAP)."""
    httpserver.expect_request("/hook").respond_with_data("ok")
    storage = _Counting(tmp_path / "hooks.db")

    async def main() -> None:
        async with hd.AsyncDispatcher(
            storage=storage, concurrency=64, poll_interval=60, targets=hd.TargetPolicy.local()
        ) as hooks:
            await hooks.add_endpoint(httpserver.url_for("/hook"))
            assert await hooks.drain(timeout=5)
            for n in range(20):
                await hooks.dispatch("user.created", {"n": n})
            assert await hooks.drain(timeout=10)

    asyncio.run(main())
    assert storage.handed == 20  # 64 tasks free: every dispatch leased its own
