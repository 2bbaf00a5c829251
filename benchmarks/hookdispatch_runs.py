"""hookdispatch measured end to end: inline, on the thread pool, and on asyncio.

The clock runs from the first ``dispatch()`` to the moment every delivery is
recorded as succeeded in storage (``drain``), so storage writes, signing and the
enqueue calls are all inside it. Each measurement starts on fresh storage, outside
the clock; a run that hits its time limit counts what was delivered by then.

:func:`instant_drain` measures the queue alone, as a job queue is measured: the
events are stored first, then a ``Dispatcher`` whose transport answers 200 at once,
with no I/O, works through them (claim, sign, record the attempt, complete).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import warnings
from datetime import UTC, datetime

import hookdispatch as hd

from .harness import DATA, EVENT_TYPE, Deadline, Run
from .storages import StorageFactory

# The receivers are on 127.0.0.1 over plain http: local on purpose.
LOCAL = hd.TargetPolicy.local()


def quiet() -> None:
    """A run cut at its time limit closes with deliveries pending: expected, not news.
    Called by each measurement, not on import (a test importing this module keeps
    the library's warnings)."""
    logging.getLogger("hookdispatch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=ResourceWarning)


def _result(delivered: int, count: int, elapsed: float, cpu: float) -> Run:
    return Run(delivered / elapsed, cut=delivered < count, cpu_us=cpu / max(delivered, 1) * 1e6)


def inline(url: str, make_storage: StorageFactory, count: int, limit: float) -> Run:
    """``workers=0``: each ``dispatch()`` returns once its delivery is done."""
    quiet()
    storage = make_storage()
    with hd.Dispatcher(storage=storage, workers=0, targets=LOCAL) as hooks:
        hooks.add_endpoint(url)
        deadline = Deadline(limit)
        cpu = time.process_time()
        done = 0
        while done < count and not deadline.expired:
            hooks.dispatch(EVENT_TYPE, DATA)
            done += 1
        elapsed, cpu = time.perf_counter() - deadline.began, time.process_time() - cpu
    storage.close()
    return _result(done, count, elapsed, cpu)


def thread_pool(
    url: str, make_storage: StorageFactory, count: int, workers: int, limit: float
) -> Run:
    """``workers=N``: this thread dispatches, N worker threads deliver."""
    quiet()
    storage = make_storage()
    hooks = hd.Dispatcher(storage=storage, workers=workers, targets=LOCAL)
    try:
        hooks.add_endpoint(url)
        deadline = Deadline(limit)
        cpu = time.process_time()
        dispatched = 0
        while dispatched < count and not deadline.expired:
            hooks.dispatch(EVENT_TYPE, DATA)
            dispatched += 1
        enqueue = (time.perf_counter() - deadline.began) / max(dispatched, 1)
        hooks.drain(timeout=deadline.remaining)
        elapsed, cpu = time.perf_counter() - deadline.began, time.process_time() - cpu
        run = _result(_succeeded(storage, count), count, elapsed, cpu)
    finally:
        hooks.close(timeout=0)
        storage.close()
    run.enqueue_us = enqueue * 1e6
    return run


async def _async_pool(
    url: str,
    make_storage: StorageFactory,
    count: int,
    concurrency: int,
    limit: float,
    transport: type[hd.AsyncTransport] | None,
) -> Run:
    quiet()
    storage = make_storage()
    sender = None if transport is None else transport(targets=LOCAL)  # type: ignore[call-arg]
    hooks = hd.AsyncDispatcher(
        storage=storage, concurrency=concurrency, targets=LOCAL, transport=sender
    )
    try:
        await hooks.__aenter__()
        await hooks.add_endpoint(url)
        deadline = Deadline(limit)
        cpu = time.process_time()
        dispatched = 0
        while dispatched < count and not deadline.expired:
            await hooks.dispatch(EVENT_TYPE, DATA)
            dispatched += 1
        enqueue = (time.perf_counter() - deadline.began) / max(dispatched, 1)
        await hooks.drain(timeout=deadline.remaining)
        elapsed, cpu = time.perf_counter() - deadline.began, time.process_time() - cpu
        run = _result(await asyncio.to_thread(_succeeded, storage, count), count, elapsed, cpu)
    finally:
        await hooks.aclose(timeout=0)
        if sender is not None:  # ours to close: the dispatcher closes only its own
            await sender.aclose()
        storage.close()
    run.enqueue_us = enqueue * 1e6
    return run


def async_pool(
    url: str,
    make_storage: StorageFactory,
    count: int,
    concurrency: int,
    limit: float,
    *,
    transport: type[hd.AsyncTransport] | None = None,
) -> Run:
    """``concurrency=N``: one coroutine dispatches, up to N attempts in flight.

    ``transport``: an async transport class to use instead of the default.
    """
    return asyncio.run(_async_pool(url, make_storage, count, concurrency, limit, transport))


def _succeeded(storage: hd.Storage, count: int) -> int:
    return len(storage.list_deliveries(status=hd.DeliveryStatus.SUCCEEDED, limit=count))


class InstantTransport(hd.Transport):
    """Answers every request 200 at once, without I/O: no network, no receiver."""

    OK = hd.Response(status_code=200, headers={}, body=b"")

    def send(self, request: hd.Request) -> hd.Response:
        return self.OK

    def close(self) -> None:
        pass


STORE_BATCH = 5_000

_serial = itertools.count()


def store_pending(storage: hd.Storage, url: str, count: int) -> None:
    """``count`` events of one endpoint (added here), each with one delivery due now,
    stored straight through ``storage.add_events``: no dispatcher is running."""
    now = datetime.now(UTC)
    endpoint = hd.Endpoint.create(url, now=now)
    storage.add_endpoint(endpoint)
    while count > 0:
        batch = []
        for _ in range(min(count, STORE_BATCH)):
            event = hd.Event.create(EVENT_TYPE, DATA, now=now, id=f"evt_drain_{next(_serial):012d}")
            batch.append((event, [hd.Delivery.create(event, endpoint, now=now)]))
        storage.add_events(batch)
        count -= len(batch)


def instant_drain(
    url: str, make_storage: StorageFactory, count: int, workers: int, limit: float
) -> Run:
    """``count`` stored deliveries, then ``Dispatcher(workers=N)`` with
    :class:`InstantTransport` until ``drain()`` returns: deliveries/s.

    The clock runs from the dispatcher's creation to ``drain()`` returning; every
    delivery must then be recorded as succeeded (a run cut by ``limit`` counts those
    that were).
    """
    quiet()
    storage = make_storage()
    hooks = None
    try:
        store_pending(storage, url, count)
        deadline = Deadline(limit)
        cpu = time.process_time()
        hooks = hd.Dispatcher(
            storage=storage, workers=workers, targets=LOCAL, transport=InstantTransport()
        )
        drained = hooks.drain(timeout=deadline.remaining)
        elapsed, cpu = time.perf_counter() - deadline.began, time.process_time() - cpu
        delivered = _succeeded(storage, count)
        if drained and delivered < count:
            raise RuntimeError(f"drained with {delivered} of {count} deliveries succeeded")
    finally:
        if hooks is not None:
            hooks.close(timeout=0)
        storage.close()
    return _result(delivered, count, elapsed, cpu)
