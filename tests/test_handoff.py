"""A dispatch that finds workers free hands them its deliveries in the same storage call."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

import hookdispatch as hd
from hookdispatch._dispatching import STREAM_RUN
from hookdispatch._slots import DispatchStream

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


class _SlowLease(_Counting):
    """A dispatch that leases takes 2 ms (as one that writes its delivery row leased
    took twice a fan-out's on PostgreSQL): the workers are done with its delivery
    before the next dispatch of a loop, which then finds them all free again."""

    def add_event_and_claim(self, event: hd.Event, **options: Any) -> tuple[bool, list[hd.Claim]]:
        if options["limit"] > 0:
            time.sleep(0.002)
        return super().add_event_and_claim(event, **options)


def test_a_loop_of_dispatches_on_threads_leaves_its_deliveries_to_the_workers_claims(
    httpserver: HTTPServer, tmp_path: Any
) -> None:
    """A thread dispatching in a loop leases at dispatch only for the first few of
    the row (STREAM_RUN): the rest are claimed by the workers and the pump, several
    at a time. Leasing each (as before) kept the workers idle between dispatches
    and every group a single completion. A stall of this thread longer than
    STREAM_GAP starts a new row, so some more may lease; the code before leased
    nearly every one."""
    httpserver.expect_request("/hook").respond_with_data("ok")
    storage = _SlowLease(tmp_path / "hooks.db")
    with hd.Dispatcher(
        storage=storage, workers=4, poll_interval=60, targets=hd.TargetPolicy.local()
    ) as hooks:
        hooks.add_endpoint(httpserver.url_for("/hook"))
        assert hooks.drain(timeout=5)
        for n in range(100):
            hooks.dispatch("user.created", {"n": n})
        assert hooks.drain(timeout=10)
        assert storage.handed <= STREAM_RUN + 20
        assert storage.claims >= 100 - STREAM_RUN - 20
        assert len(storage.list_deliveries(status=hd.DeliveryStatus.SUCCEEDED, limit=200)) == 100


def test_a_dispatch_between_two_others_holding_the_slots_still_wakes_the_pump(
    httpserver: HTTPServer, tmp_path: Any
) -> None:
    """Dispatch A holds every free slot while it stores an event nobody subscribes
    to; dispatch B stores one that has a subscriber meanwhile, holding none (none
    free), so its wake notifies nobody. When A gives its slots back unused, it
    wakes the pump for B's delivery (before: it waited for poll_interval)."""
    httpserver.expect_request("/hook").respond_with_data("ok")
    a_storing, a_may_finish = threading.Event(), threading.Event()

    class Gated(hd.SQLiteStorage):
        def add_event_and_claim(
            self, event: hd.Event, **options: Any
        ) -> tuple[bool, list[hd.Claim]]:
            if event.type == "invoice.paid":  # A
                a_storing.set()
                assert a_may_finish.wait(10)
            return super().add_event_and_claim(event, **options)

    storage = Gated(tmp_path / "hooks.db")
    with hd.Dispatcher(
        storage=storage, workers=4, poll_interval=60, targets=hd.TargetPolicy.local()
    ) as hooks:
        hooks.add_endpoint(httpserver.url_for("/hook"), events=["user.created"])
        assert hooks.drain(timeout=5)
        a = threading.Thread(target=hooks.dispatch, args=("invoice.paid", {"a": 1}))
        a.start()
        assert a_storing.wait(5)
        b = hooks.dispatch("user.created", {"b": 1})  # while A holds the slots
        a_may_finish.set()
        a.join(timeout=5)
        assert hooks.drain(timeout=5)
        [delivery] = storage.list_deliveries(event_id=b.id)
        assert delivery.status is hd.DeliveryStatus.SUCCEEDED


def test_a_stream_is_told_by_the_gap_after_the_last_return_and_the_run_so_far() -> None:
    """DispatchStream, on a clock of its own: the STREAM_RUN-th dispatch in a row
    starting within the gap is deep in a stream, and so is every next one; a
    dispatch after a longer gap starts a new row. A gap of 0 sees no stream."""
    now = [0.0]
    stream = DispatchStream(gap=0.001, run=3, clock=lambda: now[0])

    def dispatch(after: float) -> bool:
        now[0] += after
        deep = stream.starting()
        now[0] += 0.0002  # its storage call
        stream.returned()
        return deep

    assert [dispatch(1.0), dispatch(0.0001), dispatch(0.0001)] == [False, False, False]
    assert [dispatch(0.0001) for _ in range(5)] == [True] * 5
    assert dispatch(0.002) is False  # a pause: a new row
    assert [dispatch(0.0005), dispatch(0.0005), dispatch(0.0005)] == [False, False, True]
    never = DispatchStream(gap=0.0, run=3, clock=lambda: now[0])
    for _ in range(10):
        assert never.starting() is False
        never.returned()


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
