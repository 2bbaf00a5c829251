"""Group commit: workers finishing together store their work in one storage call."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

import hookdispatch as hd
from hookdispatch._group_commit import AsyncGroupCommit, GroupCommit, Lingering, Ticket
from hookdispatch.storage import Claim
from hookdispatch.testing._samples import make_delivery, make_endpoint, make_event

from receivers import wait_for


def _tickets(count: int) -> list[Ticket]:
    """Tickets that want a next delivery (their claims are never used here)."""
    endpoint = make_endpoint()
    tickets = []
    for n in range(count):
        event = make_event(n=n)
        delivery = make_delivery(event, endpoint, due=datetime.now(UTC))
        claim = Claim(
            delivery=delivery,
            endpoint=endpoint,
            event_type=event.type,
            body=event.body,
            lease="lse_x",
        )
        tickets.append(Ticket(claim, None, set()))
    return tickets


def test_threads_that_arrive_while_a_group_is_stored_go_together_in_the_next() -> None:
    groups: list[list[Ticket]] = []
    first_stored, release = threading.Event(), threading.Event()

    def store(group: list[Ticket]) -> None:
        groups.append(group)
        if len(groups) == 1:
            first_stored.set()
            assert release.wait(5)
        for ticket in group:
            ticket.done = True

    commit = GroupCommit(store, lingering=Lingering(lambda: 0))
    first, *others = _tickets(5)
    leader = threading.Thread(target=commit.join, args=(first,))
    leader.start()
    assert first_stored.wait(5)
    followers = [threading.Thread(target=commit.join, args=(t,)) for t in others]
    for thread in followers:
        thread.start()
    while len(commit._waiting) < len(others):  # all four are waiting behind the first
        threading.Event().wait(0.001)
    release.set()
    for thread in (leader, *followers):
        thread.join(5)
        assert not thread.is_alive()
    assert [len(group) for group in groups] == [1, 4]
    assert all(ticket.done for ticket in (first, *others))


def test_a_thread_alone_is_stored_at_once() -> None:
    groups: list[int] = []

    def store(group: list[Ticket]) -> None:
        groups.append(len(group))
        for ticket in group:
            ticket.done = True

    commit = GroupCommit(store, lingering=Lingering(lambda: 0))
    for ticket in _tickets(3):
        commit.join(ticket)
    assert groups == [1, 1, 1]


class _Clock:
    """A clock that moves only when told: each wait handed out passes in full."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lingering_waits_only_while_others_are_busy_and_keep_coming() -> None:
    clock, busy, waiting = _Clock(), [1], [1]
    lingering = Lingering(lambda: busy[0], clock=clock, max_gap=0.0025)
    lingering.last_call = 0.001
    assert list(lingering.waits(lambda: waiting[0])) == []  # alone: stored at once
    busy[0] = 4
    lingering.last_call = 0.0
    assert list(lingering.waits(lambda: waiting[0])) == []  # calls cost nothing yet

    lingering.last_call = 0.001
    waits = lingering.waits(lambda: waiting[0])
    assert next(waits) == pytest.approx(0.001)  # up to one call's time for the next
    waiting[0] = 2
    clock.now += 0.0005
    assert next(waits) == pytest.approx(0.001)  # one came: wait for the next
    clock.now += 0.001
    assert list(waits) == []  # nobody came within it

    waiting[0] = 1
    waits = lingering.waits(lambda: waiting[0])
    next(waits)
    clock.now += 0.0001
    waiting[0] = 3  # two came in 0.1 ms: the next wait is twice their pace
    assert next(waits) == pytest.approx(0.0001)
    clock.now += 0.0001
    assert list(waits) == []  # nobody came: the group goes, a call's time early

    waiting[0] = 1
    seen = []
    for wait in lingering.waits(lambda: waiting[0]):  # one more arrives every gap
        seen.append(wait)
        clock.now += wait
        waiting[0] += 1
        busy[0] += 1
    assert sum(seen) == pytest.approx(0.004)  # four gaps in all
    waiting[0], busy[0] = 1, 3
    waits = lingering.waits(lambda: waiting[0])
    next(waits)
    waiting[0] = 3  # every busy worker is in: the group goes
    assert list(waits) == []
    lingering.last_call = 2.0  # a slow call: the gap stays short
    waiting[0] = 1
    assert next(lingering.waits(lambda: waiting[0])) == pytest.approx(0.0025)


def test_a_worker_beside_stuck_ones_stops_waiting_for_them() -> None:
    """Seven workers hold their slots on a receiver that takes seconds; the eighth,
    alone in every group, waits for them once, not group after group, and waits
    again once a group forms with others in it."""
    clock, waiting = _Clock(), [1]
    lingering = Lingering(lambda: 8, clock=clock)
    lingering.last_call = 0.001

    def waited() -> float:
        total = 0.0
        for wait in lingering.waits(lambda: waiting[0]):
            clock.now += wait  # nobody comes
            total += wait
        return total

    assert waited() == pytest.approx(0.001)  # once: nobody came
    assert [waited() for _ in range(100)] == [0.0] * 100  # alone again: no wait
    waiting[0] = 2  # two came in while a call ran: others are sending again
    assert waited() == pytest.approx(0.001)
    waiting[0] = 1
    assert waited() == pytest.approx(0.001)  # alone after company: once more
    assert waited() == 0.0  # that drew nobody


def test_a_thread_waits_for_a_busy_worker_and_no_longer() -> None:
    groups: list[int] = []

    def store(group: list[Ticket]) -> None:
        groups.append(len(group))
        for ticket in group:
            ticket.done = True

    lingering = Lingering(lambda: 2, max_gap=30.0)
    lingering.last_call = 30.0  # it would wait 30 s for the second, and 2 minutes in all
    commit = GroupCommit(store, lingering=lingering)
    first, second = _tickets(2)
    leader = threading.Thread(target=commit.join, args=(first,))
    leader.start()
    wait_for(lambda: commit._storing)  # lingering: the other busy worker is not in
    commit.join(second)
    leader.join(5)
    assert not leader.is_alive()
    assert groups == [2]


class _Counted(Lingering):
    """Lingering that counts the groups it was asked to wait for."""

    def __init__(self, busy: int) -> None:
        super().__init__(lambda: busy, max_gap=0.05)
        self.asked = 0

    def waits(self, waiting: Any) -> Any:
        self.asked += 1
        return super().waits(waiting)


def test_a_ticket_handed_in_is_stored_by_the_next_worker_that_waits() -> None:
    groups: list[list[Ticket]] = []

    def store(group: list[Ticket]) -> None:
        groups.append(group)

    commit = GroupCommit(store, lingering=Lingering(lambda: 0))
    first, second = _tickets(2)
    commit.submit(first)  # returns at once: its worker goes on
    commit.submit(second)
    assert groups == []
    commit.wait(second)  # this worker waits: it stores both
    assert [len(group) for group in groups] == [2]
    assert first.done
    assert second.done
    commit.wait(first)  # stored already: returns at once
    assert len(groups) == 1


def test_tickets_that_came_during_a_call_are_stored_next_without_lingering() -> None:
    """Tickets of workers that went on meanwhile made their group while the call
    ran: lingering would only hold back the overlap of their work with the
    storage's."""
    first_stored, release = threading.Event(), threading.Event()
    groups: list[int] = []

    def store(group: list[Ticket]) -> None:
        groups.append(len(group))
        if len(groups) == 1:
            first_stored.set()
            assert release.wait(5)

    lingering = _Counted(busy=8)  # more busy than will ever come: it would wait
    lingering.last_call = 0.05
    commit = GroupCommit(store, lingering=lingering)
    first, *others = _tickets(4)
    leader = threading.Thread(target=commit.join, args=(first,))
    leader.start()
    assert first_stored.wait(5)
    asked = lingering.asked
    for ticket in others:
        ticket.detached = True  # their workers went on, holding more work
        commit.submit(ticket)
    release.set()
    leader.join(5)
    commit.wait(others[0])
    assert groups == [1, 3]
    assert lingering.asked == asked  # the second group went without asking
    assert all(ticket.done for ticket in others)


def test_tickets_of_waiting_workers_that_came_during_a_call_still_linger() -> None:
    """Workers that wait for their tickets are in step when a group waits for them:
    without lingering, two out of step would store one ticket a call, each alone."""
    clock, waiting = _Clock(), [1]
    lingering = Lingering(lambda: 2, clock=clock)
    lingering.last_call = 0.001
    waited = list(lingering.waits(lambda: waiting[0]))  # alone: one wait, nobody came
    assert waited == [pytest.approx(0.001)]
    assert list(lingering.waits(lambda: waiting[0])) == []  # alone again: no wait
    lingering.came_during_call()
    assert list(lingering.waits(lambda: waiting[0])) == [pytest.approx(0.001)]


def test_a_group_whose_store_raises_is_marked_failed_and_its_waiters_go_on() -> None:
    calls: list[int] = []

    def store(group: list[Ticket]) -> None:
        calls.append(len(group))
        if len(calls) == 1:
            raise RuntimeError("a store that breaks its promise never to raise")
        for ticket in group:
            ticket.done = True

    commit = GroupCommit(store, lingering=Lingering(lambda: 0))
    broken, fine = _tickets(2)
    commit.join(broken)
    assert broken.done
    assert broken.failed
    commit.join(fine)  # the next group is stored as ever
    assert fine.done
    assert not fine.failed


def test_a_task_waits_for_a_busy_worker_and_no_longer() -> None:
    asyncio.run(_a_task_waits_for_a_busy_worker_and_no_longer())


async def _a_task_waits_for_a_busy_worker_and_no_longer() -> None:
    groups: list[int] = []

    async def store(group: list[Ticket]) -> None:
        groups.append(len(group))
        for ticket in group:
            ticket.done = True

    lingering = Lingering(lambda: 2, max_gap=30.0)
    lingering.last_call = 30.0
    commit = AsyncGroupCommit(store, lingering=lingering)
    first, second = _tickets(2)
    leader = asyncio.create_task(commit.join(first))
    for _ in range(3):
        await asyncio.sleep(0)
    assert not groups  # lingering
    await asyncio.wait_for(asyncio.gather(leader, commit.join(second)), 5)
    assert groups == [2]


def test_a_task_waits_a_loop_turn_for_a_short_gap() -> None:
    asyncio.run(_a_task_waits_a_loop_turn_for_a_short_gap())


async def _a_task_waits_a_loop_turn_for_a_short_gap() -> None:
    """A gap under the loop's timer floor is one turn of the loop: a task that is
    ready then joins the group; a wait with nobody ready ends after that turn."""
    groups: list[int] = []

    async def store(group: list[Ticket]) -> None:
        groups.append(len(group))
        for ticket in group:
            ticket.done = True

    lingering = Lingering(lambda: 3)
    lingering.last_call = 0.0002  # far below the 1 ms a loop timer keeps
    commit = AsyncGroupCommit(store, lingering=lingering)
    first, second, third = _tickets(3)
    joined = [asyncio.create_task(commit.join(first)), asyncio.create_task(commit.join(second))]
    await asyncio.wait_for(asyncio.gather(*joined), 5)
    assert groups == [2]  # the second came in the turn the first waited
    await asyncio.wait_for(commit.join(third), 5)  # nobody else: one turn, then stored
    assert groups == [2, 1]


def test_tasks_group_and_a_cancelled_waiter_leaves_the_group_to_finish() -> None:
    asyncio.run(_tasks_group_and_a_cancelled_waiter_leaves_the_group_to_finish())


async def _tasks_group_and_a_cancelled_waiter_leaves_the_group_to_finish() -> None:
    groups: list[list[Ticket]] = []
    release = asyncio.Event()

    async def store(group: list[Ticket]) -> None:
        groups.append(group)
        if len(groups) == 1:
            await release.wait()
        for ticket in group:
            ticket.done = True

    commit = AsyncGroupCommit(store, lingering=Lingering(lambda: 0))
    first, second, third = _tickets(3)
    leader = asyncio.create_task(commit.join(first))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(commit.join(t)) for t in (second, third)]
    await asyncio.sleep(0)
    leader.cancel()  # the first group's call goes on without the task that started it
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*waiting)
    await commit.wait()
    assert first.done
    assert second.done
    assert third.done
    assert [len(group) for group in groups] == [1, 2]
    with pytest.raises(asyncio.CancelledError):
        await leader


def test_tasks_waiting_on_a_group_whose_call_is_cancelled_are_cancelled() -> None:
    asyncio.run(_tasks_waiting_on_a_group_whose_call_is_cancelled_are_cancelled())


async def _tasks_waiting_on_a_group_whose_call_is_cancelled_are_cancelled() -> None:
    """As with ``asyncio.shield`` of the group's task (the loop shutting down, say)."""
    started = asyncio.Event()

    async def store(group: list[Ticket]) -> None:
        started.set()
        await asyncio.Event().wait()  # never stores

    commit = AsyncGroupCommit(store, lingering=Lingering(lambda: 0))
    waiting = [asyncio.create_task(commit.join(t)) for t in _tickets(2)]
    await started.wait()
    assert commit._group is not None
    assert commit._group.task is not None
    commit._group.task.cancel()
    for task in waiting:
        with pytest.raises(asyncio.CancelledError):
            await task


def test_tasks_waiting_on_a_group_whose_call_raises_get_its_exception() -> None:
    asyncio.run(_tasks_waiting_on_a_group_whose_call_raises_get_its_exception())


async def _tasks_waiting_on_a_group_whose_call_raises_get_its_exception() -> None:
    """``store`` never raises; were anything in its place to, every waiter gets the
    exception, once, as through ``asyncio.shield``: none waits for ever on a ticket
    the failed group took."""
    calls = 0

    async def store(group: list[Ticket]) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("the storage call raised")

    commit = AsyncGroupCommit(store, lingering=Lingering(lambda: 0))
    waiting = [asyncio.create_task(commit.join(t)) for t in _tickets(2)]
    done, pending = await asyncio.wait(waiting, timeout=5)
    assert not pending
    for task in done:
        with pytest.raises(RuntimeError, match="the storage call raised"):
            task.result()
    assert calls == 1


def _stored_on_release(release: asyncio.Event) -> AsyncGroupCommit:
    """A group commit, not lingering, whose calls store their groups once ``release``
    is set."""

    async def store(group: list[Ticket]) -> None:
        await release.wait()
        for ticket in group:
            ticket.done = True

    return AsyncGroupCommit(store, lingering=Lingering(lambda: 0))


def test_a_cancelled_waiter_leaves_no_future_behind() -> None:
    asyncio.run(_a_cancelled_waiter_leaves_no_future_behind())


async def _a_cancelled_waiter_leaves_no_future_behind() -> None:
    release = asyncio.Event()
    commit = _stored_on_release(release)
    tickets = _tickets(101)
    kept = asyncio.create_task(commit.join(tickets[0]))
    given_up = [asyncio.create_task(commit.join(t)) for t in tickets[1:]]
    await asyncio.sleep(0)
    for task in given_up:
        task.cancel()
    await asyncio.gather(*given_up, return_exceptions=True)
    assert commit._group is not None
    assert len(commit._group.sleepers) == 1  # the one still waiting
    release.set()
    await kept
    assert tickets[0].done


def test_only_the_tickets_a_failed_group_took_get_its_exception() -> None:
    asyncio.run(_only_the_tickets_a_failed_group_took_get_its_exception())


async def _only_the_tickets_a_failed_group_took_get_its_exception() -> None:
    """A ticket handed in while a group's call fails waits for the next group (which
    stores it), whether it waited on the failed group or joined after it ended and
    before its waiters were woken."""
    calls: list[list[Ticket]] = []
    release = asyncio.Event()
    late_joins = asyncio.get_running_loop().create_future()

    async def store(group: list[Ticket]) -> None:
        calls.append(group)
        if len(calls) == 1:
            await release.wait()
            late_joins.set_result(None)  # a task ready before this group's waiters wake
            raise RuntimeError("group 1 failed")
        for ticket in group:
            ticket.done = True

    commit = AsyncGroupCommit(store, lingering=Lingering(lambda: 0))
    first, during, late = _tickets(3)
    in_first = asyncio.create_task(commit.join(first))
    await asyncio.sleep(0.01)
    while_storing = asyncio.create_task(commit.join(during))  # after group 1 took its own
    await asyncio.sleep(0.01)

    async def join_late() -> None:
        await late_joins
        await commit.join(late)

    after = asyncio.create_task(join_late())
    release.set()
    results = await asyncio.gather(in_first, while_storing, after, return_exceptions=True)
    assert isinstance(results[0], RuntimeError)
    assert results[1:] == [None, None]
    assert not first.done
    assert during.done
    assert late.done
    assert [len(group) for group in calls] == [1, 2]


def test_a_waiter_cancelled_once_woken_leaves_its_ticket_to_be_stored() -> None:
    asyncio.run(_a_waiter_cancelled_once_woken_leaves_its_ticket_to_be_stored())


async def _a_waiter_cancelled_once_woken_leaves_its_ticket_to_be_stored() -> None:
    """Its ticket came while a group stored; that group's end woke it, and it was
    cancelled (closing, say) before it could start the next group: the next group
    starts all the same, and wait() (what closing waits for) waits for it."""
    release = asyncio.Event()
    commit = _stored_on_release(release)
    first, second = _tickets(2)
    in_first = asyncio.create_task(commit.join(first))
    await asyncio.sleep(0.01)
    waiting = asyncio.create_task(commit.join(second))
    await asyncio.sleep(0.01)
    group = commit._group
    assert group is not None
    assert group.task is not None
    release.set()
    while not group.task.done():
        await asyncio.sleep(0)
    await asyncio.sleep(0)  # woken, not resumed yet
    waiting.cancel()
    await asyncio.gather(in_first, waiting, return_exceptions=True)
    await commit.wait()
    assert first.done
    assert second.done


class _FailingGroups(hd.MemoryStorage):
    """complete_many raises the first ``failures`` times: nothing is recorded."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def complete_many(self, completions, **kwargs):  # type: ignore[no-untyped-def]
        if self.failures:
            self.failures -= 1
            raise hd.StorageError("the database went away")
        return super().complete_many(completions, **kwargs)


def test_a_group_that_fails_to_store_is_sent_again_when_its_leases_end(
    make_dispatcher: Any, httpserver: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    storage = _FailingGroups(failures=1)
    hooks = make_dispatcher(storage=storage, workers=2, lease=0.5, timeout=0.2, poll_interval=0.05)
    hooks.add_endpoint(httpserver.url_for("/hook"))
    event = hooks.dispatch("user.created", {"id": 1})

    def delivered() -> bool:
        [delivery] = storage.list_deliveries(event_id=event.id)
        return delivery.status is hd.DeliveryStatus.SUCCEEDED

    assert wait_for(delivered)  # once its lease ended: drain() does not wait for that
    assert len(httpserver.log) == 2  # at-least-once: sent again, not lost
    assert "recording the attempt of" in caplog.text
