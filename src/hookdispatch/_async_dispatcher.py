"""AsyncDispatcher: the asyncio driver, the twin of :class:`Dispatcher`.

The same loop over the same pure core (claim, ``prepare``, send, ``conclude``,
``complete``), the same storage units and decisions (``_dispatching``); only the I/O differs:
requests go through an :class:`AsyncTransport`, and calls to a blocking storage
(SQLite, PostgreSQL) run on a small thread pool of their own, never on the event
loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from types import TracebackType
from typing import ParamSpec, Self, TypeVar

from ._core import Claim, Outcome
from ._dispatching import (
    ASYNC,
    DEFAULT_DISABLE_AFTER,
    DEFAULT_LEASE,
    DEFAULT_TIMEOUT,
    Driver,
    delivery_query,
    endpoint_query,
)
from ._group_commit import AsyncGroupCommit, Lingering, Ticket
from ._listing import DEFAULT_PAGE_SIZE, Page, ReplayLinks
from ._models import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_ROTATION_GRACE,
    DEFAULT_TENANT,
    Attempt,
    Delivery,
    DeliveryStatus,
    Endpoint,
    Event,
)
from ._operations import log_unrecorded, refused_target, warn_if_dropping
from ._policy import RetryPolicy
from ._reporting import AttemptReport
from ._targets import TargetPolicy
from ._types import JSON, Clock, utc_now
from .catalog import Catalog
from .exceptions import WouldBlockError
from .storage import Storage
from .telemetry import OpenTelemetry
from .transports import AsyncTransport
from .transports._asyncio import AsyncioTransport

__all__ = ["AsyncDispatcher", "AsyncSleep"]

AsyncSleep = Callable[[float], Awaitable[None]]
"""Waits for the given number of seconds without blocking the loop. Injected in tests."""

_YIELD_EVERY = 32
"""Attempts a task makes, and dispatches, between forced yields to the loop (see
``_work`` and ``_dispatch_and_lease``)."""

P = ParamSpec("P")
T = TypeVar("T")


class AsyncDispatcher(Driver):
    """Sends events to endpoints from asyncio: inline (``concurrency=0``) or in tasks.

    The options and guarantees are those of :class:`Dispatcher`, with
    ``concurrency`` (attempts in flight at once, 64 by default) in place of
    ``workers``, an :class:`AsyncTransport` (:class:`AsyncioTransport` by default),
    and an async ``sleep`` testing hook. ``storage_threads`` threads run the calls
    to a blocking storage. Use it as ``async with AsyncDispatcher(...) as hooks:``,
    or call :meth:`aclose`. It belongs to the event loop it is first used in.

    ``on_attempt`` is called on the event loop, once per recorded attempt (see
    :class:`AttemptReport`); it must not block. ``telemetry`` is as in
    :class:`Dispatcher`.
    """

    _FLAVOUR = ASYNC

    def __init__(
        self,
        *,
        storage: Storage,
        transport: AsyncTransport | None = None,
        concurrency: int = 64,
        retry: RetryPolicy | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        lease: float = DEFAULT_LEASE,
        poll_interval: float = 1.0,
        clock: Clock = utc_now,
        sleep: AsyncSleep = asyncio.sleep,
        storage_threads: int = 4,
        on_endpoint_disabled: Callable[[Endpoint, str], None] | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        targets: TargetPolicy | None = None,
        disable_after: int | None = DEFAULT_DISABLE_AFTER,
        catalog: Catalog | None = None,
        on_attempt: Callable[[AttemptReport], None] | None = None,
        telemetry: OpenTelemetry | None = None,
    ) -> None:
        super().__init__(locals())
        self._transport: AsyncTransport = transport or AsyncioTransport(
            max_connections=max(concurrency, 1), targets=self._targets
        )
        self._sleep = sleep
        self._executor = (
            ThreadPoolExecutor(storage_threads, thread_name_prefix="hookdispatch-storage")
            if storage.blocking
            else None
        )
        # A blocking storage that can say when it would wait: the delivery loop's
        # short calls try the loop first (see _quick).
        self._hurry = storage.blocking and (
            type(storage).without_waiting is not Storage.without_waiting
        )
        self._changed: asyncio.Event | None = None  # wakes the pump
        # Set when a task runs out of work or the pump finds nothing due: wakes drain().
        self._settled: asyncio.Event | None = None
        self._pump: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._group = AsyncGroupCommit(self._store_group, lingering=Lingering(self._busy_slots))
        self._dispatches = 0  # background dispatch() calls: see _dispatch_and_lease

    @property
    def storage(self) -> Storage:
        """The storage this dispatcher reads and writes."""
        return self._storage

    async def _call(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a storage call off the event loop (unless the storage never blocks)."""
        if not self._storage.blocking:
            return function(*args, **kwargs)
        return await self._submit(function, *args, **kwargs)

    async def _quick(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A short storage call of the delivery loop (a group's outcomes, the pump's
        claim; a dispatch's is made the same way): on the loop when the storage can
        make it without waiting (:meth:`Storage.without_waiting`, which SQLite
        implements), else as :meth:`_call`. The hop to a thread and back costs more
        than such a call: on SQLite, trying the loop first gave about 2.5x the
        deliveries per second (``python -m benchmarks.ab``)."""
        if self._hurry:
            try:
                return self._storage.without_waiting(functools.partial(function, *args, **kwargs))
            except WouldBlockError:
                pass  # nothing was done: in a thread, then
        return await self._call(function, *args, **kwargs)

    def _submit(
        self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> asyncio.Future[T]:
        """A storage call on a storage thread, as a future of its result."""
        call = functools.partial(function, *args, **kwargs)
        if self._executor is None:  # closed: reads still work, on the default executor
            return asyncio.ensure_future(asyncio.to_thread(call))
        return asyncio.get_running_loop().run_in_executor(self._executor, call)

    # Endpoints ----------------------------------------------------------------------

    async def add_endpoint(
        self,
        url: str,
        *,
        events: Iterable[str] = ("*",),
        secret: str | None = None,
        id: str | None = None,
        tenant: str = DEFAULT_TENANT,
        description: str = "",
        headers: Mapping[str, str] | None = None,
        metadata: Mapping[str, JSON] | None = None,
    ) -> Endpoint:
        """Register a receiver; see :meth:`Dispatcher.add_endpoint`."""
        store = functools.partial(
            self._store_endpoint,
            url,
            events,
            secret,
            id,
            self._clock(),
            tenant=tenant,
            description=description,
            headers=headers,
            metadata=metadata,
        )
        return await self._off_the_loop(store)

    async def update_endpoint(
        self,
        endpoint_id: str,
        *,
        url: str | None = None,
        events: Iterable[str] | None = None,
        description: str | None = None,
        headers: Mapping[str, str] | None = None,
        metadata: Mapping[str, JSON] | None = None,
    ) -> Endpoint:
        """Change the given fields of an endpoint; see :meth:`Dispatcher.update_endpoint`."""
        update = functools.partial(
            self._update_endpoint,
            endpoint_id,
            url=url,
            events=events,
            description=description,
            headers=headers,
            metadata=metadata,
        )
        return await self._off_the_loop(update)

    async def _off_the_loop(self, work: Callable[[], Endpoint]) -> Endpoint:
        """Endpoint work that may resolve a host name: in the storage thread, or in a
        thread of its own for a storage that does not block (never on the loop)."""
        if self._storage.blocking:
            return await self._call(work)
        return await asyncio.to_thread(work)

    async def endpoints(
        self, *, tenant: str | None = None, after: str | None = None, limit: int = DEFAULT_PAGE_SIZE
    ) -> Page[Endpoint]:
        """One page of endpoints; see :meth:`Dispatcher.endpoints`."""
        query = endpoint_query(tenant=tenant, after=after, limit=limit)
        return await self._call(self._page_endpoints, query)

    async def get_endpoint(self, endpoint_id: str, *, tenant: str | None = None) -> Endpoint:
        """The endpoint with this id; see :meth:`Dispatcher.get_endpoint`."""
        return await self._call(self._owned_endpoint, endpoint_id, tenant)

    async def delete_endpoint(self, endpoint_id: str, *, tenant: str | None = None) -> int:
        """Delete an endpoint and cancel its unfinished deliveries; see
        :meth:`Dispatcher.delete_endpoint`."""
        return await self._call(self._delete_endpoint, endpoint_id, tenant)

    async def disable_endpoint(self, endpoint_id: str) -> Endpoint:
        """Stop delivering to an endpoint. Its pending deliveries wait until it is enabled;
        events dispatched meanwhile are not sent to it."""
        return await self._set_enabled(endpoint_id, enabled=False)

    async def enable_endpoint(self, endpoint_id: str) -> Endpoint:
        """Resume an endpoint; its waiting deliveries are attempted as scheduled."""
        return await self._set_enabled(endpoint_id, enabled=True)

    async def rotate_secret(
        self,
        endpoint_id: str,
        *,
        grace: float = DEFAULT_ROTATION_GRACE,
        secret: str | None = None,
    ) -> Endpoint:
        """Give an endpoint a new secret, the current one signing on for ``grace``
        seconds; see :meth:`Dispatcher.rotate_secret`."""
        return await self._call(self._rotate_secret, endpoint_id, grace, secret)

    async def end_rotation(self, endpoint_id: str) -> Endpoint:
        """End an endpoint's rotation overlap now; see :meth:`Dispatcher.end_rotation`."""
        return await self._call(self._end_rotation, endpoint_id)

    async def _set_enabled(self, endpoint_id: str, *, enabled: bool) -> Endpoint:
        endpoint = await self._call(self._store_enabled, endpoint_id, enabled)
        self._notify()
        return endpoint

    # Events -------------------------------------------------------------------------

    async def dispatch(
        self,
        event_type: str,
        data: JSON,
        *,
        id: str | None = None,
        tenant: str = DEFAULT_TENANT,
        transaction: object | None = None,
    ) -> Event:
        """Send an event to every subscribed endpoint; see :meth:`Dispatcher.dispatch`.

        Inline (``concurrency=0``) it returns once every delivery is finished, the
        deliveries of the event attempted concurrently; otherwise once stored.
        With ``transaction`` the write runs on the calling thread, through your
        connection (which belongs to that thread), and is sent after you commit.
        """
        self._check_dispatch(transaction)
        now = self._clock()
        if transaction is not None:
            endpoints = await self._call(self._storage.endpoints_for, tenant, event_type)
            event, stored = self._store_event(
                event_type,
                data,
                id,
                now,
                tenant=tenant,
                transaction=transaction,
                endpoints=endpoints,
            )
        elif self._capacity == 0:
            event, stored, claims = await self._call(
                self._store_inline, event_type, data, id, now, tenant
            )
            if stored:
                self._dispatched([event.id])
                await self._deliver_inline(event.id, claims)
            return event
        else:
            return await self._dispatch_and_lease(event_type, data, id, now, tenant)
        if stored:
            self._dispatched([event.id])
            await self._after_store(event.id)
        return event

    async def _dispatch_and_lease(
        self, event_type: str, data: JSON, id: str | None, now: datetime, tenant: str
    ) -> Event:
        """Background mode: as :meth:`Dispatcher.dispatch`, the deliveries that free
        slots can start now are leased in the same storage call, and started."""
        event = self._checked_event(event_type, data, id, now, tenant)
        self._dispatches += 1
        if self._dispatches % _YIELD_EVERY == 0:
            # A store on the loop does not suspend: a caller dispatching in a loop
            # would hold the loop. Before storing, so that a cancellation here
            # stores nothing.
            await asyncio.sleep(0)
        self._start()
        held, held_back = self._lease_slots()
        try:
            leased = None
            if self._hurry:
                # No task and no turn of the loop, as for a storage that never blocks.
                with contextlib.suppress(WouldBlockError):  # nothing done: a thread, then
                    leased = self._storage.without_waiting(
                        functools.partial(self._store_and_lease, event, now, held, held_back)
                    )
            if leased is not None:
                event, stored, claims = leased
            elif self._storage.blocking:
                call = self._submit(self._store_and_lease, event, now, held, held_back)
                try:
                    event, stored, claims = await asyncio.shield(call)
                except asyncio.CancelledError:
                    # The caller gave up, not the storage call: what it leases still
                    # goes to the workers when it ends, rather than waiting out its
                    # leases.
                    call.add_done_callback(self._start_leased)
                    raise
            else:
                # A storage that never blocks: the call cannot be cancelled halfway,
                # and needs no task of its own nor a turn of the loop (a third of
                # the CPU time per delivery: AsyncDispatcher on MemoryStorage).
                event, stored, claims = self._store_and_lease(event, now, held, held_back)
        except BaseException:
            if self._return_slots(held, []):
                self._notify()
            raise
        wake = self._return_slots(held, claims)
        if stored:
            self._dispatched([event.id])
            for claim in claims:
                self._spawn(claim)
        if wake:
            self._notify()  # what is left of the event's deliveries: the pump's
        return event

    async def dispatch_many(
        self,
        items: Iterable[tuple[str, JSON] | tuple[str, JSON, str | None]],
        *,
        tenant: str = DEFAULT_TENANT,
    ) -> list[Event]:
        """Dispatch a batch in one storage call; see :meth:`Dispatcher.dispatch_many`.

        Inline, the events' deliveries are attempted concurrently.
        """
        self._check_open()
        results = await self._call(self._store_events, list(items), self._clock(), tenant=tenant)
        self._dispatched(event.id for event, stored in results if stored)
        if self._capacity == 0:
            await asyncio.gather(
                *(self._deliver_inline(event.id) for event, stored in results if stored)
            )
        else:
            self._start()
            self._notify()
        return await self._call(self._stored_events, results)

    async def send_test(
        self,
        endpoint_id: str,
        event_type: str,
        data: JSON | None = None,
        *,
        tenant: str | None = None,
    ) -> Delivery:
        """Send one event to one endpoint only; see :meth:`Dispatcher.send_test`."""
        self._check_open()
        delivery = await self._call(self._store_test, endpoint_id, event_type, data, tenant)
        self._dispatched([delivery.event_id])
        await self._after_store(delivery.event_id)
        return await self._call(self._storage.get_delivery, delivery.id)

    async def get_event(self, event_id: str, *, tenant: str | None = None) -> Event:
        """The event with this id; see :meth:`Dispatcher.get_event`."""
        return await self._call(self._owned_event, event_id, tenant)

    async def deliveries(
        self,
        *,
        tenant: str | None = None,
        event_id: str | None = None,
        endpoint_id: str | None = None,
        event_type: str | None = None,
        status: DeliveryStatus | str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        newest_first: bool = False,
    ) -> Page[Delivery]:
        """One page of deliveries; see :meth:`Dispatcher.deliveries`."""
        query = delivery_query(
            tenant=tenant,
            event_id=event_id,
            endpoint_id=endpoint_id,
            event_type=event_type,
            status=status,
            since=since,
            until=until,
            after=after,
            limit=limit,
            newest_first=newest_first,
        )
        return await self._call(self._page_deliveries, query)

    async def get_delivery(self, delivery_id: str, *, tenant: str | None = None) -> Delivery:
        """The delivery with this id; see :meth:`Dispatcher.get_delivery`."""
        return await self._call(self._owned_delivery, delivery_id, tenant)

    async def attempts(self, delivery_id: str, *, tenant: str | None = None) -> list[Attempt]:
        """Every attempt of a delivery, in order; see :meth:`Dispatcher.attempts`."""
        return await self._call(self._owned_attempts, delivery_id, tenant)

    async def replay_links(self, delivery_id: str, *, tenant: str | None = None) -> ReplayLinks:
        """Which delivery this one replays and which replays it; see
        :meth:`Dispatcher.replay_links`."""
        return await self._call(self._replay_links, delivery_id, tenant)

    async def redeliver(self, delivery_id: str) -> Delivery:
        """Send a finished delivery again as a new one; see :meth:`Dispatcher.redeliver`."""
        self._check_open()
        fresh = await self._call(self._store_redelivery, delivery_id, self._clock())
        self._dispatched([fresh.event_id])
        await self._after_store(fresh.event_id)
        return await self._call(self._storage.get_delivery, fresh.id)

    async def prune(self, *, older_than: timedelta | datetime, batch_size: int = 1000) -> int:
        """Delete finished work past an age, in batches; see :meth:`Dispatcher.prune`."""
        cutoff = self._prune_cutoff(older_than)
        total = 0
        while deleted := await self._call(self._prune_batch, cutoff, batch_size):
            total += deleted
        return total

    async def _after_store(self, event_id: str) -> None:
        if self._capacity == 0:
            await self._deliver_inline(event_id)
        else:
            self._start()
            self._notify()

    # The delivery loop --------------------------------------------------------------

    async def _attempt(self, claim: Claim) -> None:
        """Send one claimed delivery and record what happened."""
        await self._record(claim, *await self._send(claim))

    async def _send(self, claim: Claim) -> tuple[Attempt, Delivery]:
        """Send one claimed delivery: the attempt's record and the delivery's next state."""
        request, began = self._begin(claim)
        try:
            outcome: Outcome = refused_target(claim, self._targets) or (
                await self._transport.send(request)
            )
        except Exception as exc:
            outcome = self._transport_raised(claim, exc)
        return self._finish(claim, outcome, began)

    async def _record(self, claim: Claim, attempt: Attempt, delivery: Delivery) -> None:
        recorded = await self._call(self._store_attempt, claim, attempt, delivery)
        self._report(claim, attempt, delivery, recorded)

    async def _deliver_inline(self, event_id: str, claims: list[Claim] | None = None) -> None:
        """See :meth:`Dispatcher._deliver_inline`; the claims attempted side by side."""
        while True:
            if claims is None:
                claims = await self._call(self._claim_inline, self._clock(), event_id)
            await asyncio.gather(*(self._attempt(claim) for claim in claims))
            if not self._inline_again(claims):
                due = await self._call(self._storage.next_due_at, event_id=event_id)
                pause = self._pause(due)
                if pause is None:
                    return
                await self._sleep(pause)
            claims = None

    def _start(self) -> None:
        if self._pump is None:
            self._changed = asyncio.Event()
            self._settled = asyncio.Event()
            self._pump = asyncio.get_running_loop().create_task(
                self._run_pump(), name="hookdispatch-pump"
            )

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def _wait_for_change(self, timeout: float | None) -> None:
        assert self._changed is not None
        try:
            async with asyncio.timeout(timeout):
                await self._changed.wait()
        except TimeoutError:
            pass
        self._changed.clear()

    async def _run_pump(self) -> None:
        """Background mode: claim due work while slots are free; else wait."""
        while not self._stopping:
            if self._slots.free <= 0:
                self._pump_needs_slots = True
                await self._wait_for_change(None)
                self._pump_needs_slots = False
                # Let the other attempts finishing in this turn of the loop free
                # their slots too, so one claim serves several of them.
                await asyncio.sleep(0)
                continue
            assert self._changed is not None
            self._changed.clear()
            self._slots.claiming += 1
            try:
                claims = await self._quick(
                    self._claim_for_pump, self._clock(), self._slots.free, self._slots.held_back()
                )
            finally:
                self._slots.claiming -= 1
            self._slots.started(claims)
            for claim in claims:
                self._spawn(claim)
            if not claims:
                assert self._settled is not None
                self._settled.set()  # nothing due: drain() may be waiting for this
                await self._wait_for_change(self._idle_wait(await self._call(self._next_due)))

    def _start_leased(self, call: asyncio.Future[tuple[Event, bool, list[Claim]]]) -> None:
        """When a cancelled dispatch's storage call ends: start what it leased (its
        slots were given back at the cancellation). Closing: the leases run out
        and the deliveries are claimed again."""
        if call.cancelled() or call.exception() is not None or self._stopping:
            return
        _, _, claims = call.result()
        self._slots.started(claims)
        for claim in claims:
            self._spawn(claim)

    def _spawn(self, claim: Claim) -> None:
        """Start a task on a claimed delivery (its slot is counted already)."""
        task = asyncio.create_task(self._work(claim))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _work(self, claim: Claim | None) -> None:
        """Attempt a claim; then, while work is due, claim the next one in this task.

        As in the thread pool: going back to the pump after every attempt would
        cost a wake-up, a claim and a new task per delivery. After a success,
        recording it and claiming the next delivery take one storage call, shared
        with the tasks finishing meanwhile (see :mod:`._group_commit`).
        """
        attempts = 0
        ran_dry = False  # the last claim found nothing due: no need to wake the pump
        try:
            while claim is not None:
                success: tuple[Attempt, Delivery] | None = None
                succeeded: bool | None = None  # stays None if the task is cancelled
                try:
                    sent = await self._send(claim)
                    if sent[0].succeeded:
                        success = sent  # recorded with the next claim
                    else:
                        await self._record(claim, *sent)
                    succeeded = sent[0].succeeded
                except Exception:
                    succeeded = False
                    log_unrecorded(claim)
                finally:
                    if self._slots.finished(claim, succeeded=succeeded):
                        self._notify()  # more slots may go to this endpoint now: the pump's job
                claim, ran_dry = await self._claim_next(claim, success)
                # An attempt need not suspend (a refused target, a storage that never
                # blocks), so yield now and then: a long run of those cannot hold the
                # loop. Not after every attempt: that would run every task's ends
                # apart from their next starts, and the gen-0 allocation count, which
                # only falls as far as zero, would then set off a collection every few
                # dozen attempts (raw aiohttp, which ends one request and starts the
                # next in one step, sees one per few hundred).
                attempts += 1
                if attempts % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        finally:
            if not ran_dry or self._pump_needs_slots:
                self._notify()  # a slot is free: the pump may need it
            assert self._settled is not None
            self._settled.set()

    async def _store_group(self, tickets: list[Ticket]) -> None:
        """A group of tickets, stored in one call: on the loop if the storage can
        without waiting, else in a thread (one hop for them all)."""
        await self._quick(self._settle, tickets)

    async def _claim_next(
        self, claim: Claim, success: tuple[Attempt, Delivery] | None
    ) -> tuple[Claim | None, bool]:
        """This task's next delivery, if one is due; ``success`` (of ``claim``) is
        stored in the same storage call. None when stopping (after recording). And
        whether the storage was asked and had nothing due (see ``_ran_dry``)."""
        if success is None and self._stopping:
            return None, False
        held_back = self._hold_slot()
        claims: list[Claim] = []
        ticket: Ticket | None = None
        try:
            ticket = self._ticket(claim, success, held_back)
            if ticket is not None:
                if self._grouped:  # stored with what other tasks have
                    await self._group.join(ticket)
                else:
                    self._settle([ticket])
            claims, report = self._stored_ticket(ticket)
            if report is not None:
                self._emit(report)  # the slot is still held: drain() waits for this
        finally:
            next_claim = self._release_slot(claims)
        for extra in claims[1:]:  # (a storage that leased more than asked: sent too)
            self._spawn(extra)
        return next_claim, self._ran_dry(ticket)

    # Lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._capacity:
            self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until no delivery is due now and none is in flight; see :meth:`Dispatcher.drain`."""
        if self._capacity == 0 or self._pump is None:
            return True
        assert self._settled is not None
        give_up = self._give_up_at(timeout)
        while True:
            self._settled.clear()  # before looking: a task ending from now on sets it
            due = await self._call(self._storage.next_due_at)
            if self._drained(due):
                return True
            if self._pump.done():
                return False
            wait = self._drain_wait(give_up)
            if wait <= 0:
                return False
            # Woken when a task runs out of work, so drain returns as soon as the
            # last attempt is recorded; the cap covers work due by the clock alone.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._settled.wait()

    async def aclose(self, timeout: float | None = None) -> None:
        """Stop taking events, deliver what is due (up to ``timeout`` s), and stop.

        Attempts in flight always finish. Retries scheduled for later stay in storage;
        with MemoryStorage they are lost and a ResourceWarning says how many. The
        storage stays open: it is yours to close. Idempotent.
        """
        if self._closed:
            return
        self._mark_closed(drained=await self.drain(timeout))
        self._stopping = True
        self._notify()
        if self._pump is not None:
            await self._pump
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._group.wait()  # a group a cancelled task left behind
        if self._owns_transport:
            await self._transport.aclose()
        if self._executor is not None:
            # Wait for storage calls still running (say, from a cancelled request), so
            # the caller may close the storage as soon as this returns.
            executor, self._executor = self._executor, None
            await asyncio.to_thread(executor.shutdown, wait=True)
        warn_if_dropping(self._storage)
