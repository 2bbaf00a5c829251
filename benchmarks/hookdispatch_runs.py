"""hookdispatch measured end to end: inline, on the thread pool, and on asyncio.

The clock runs from the first ``dispatch()`` to the moment every delivery is
recorded as succeeded in storage (``drain``), so storage writes, signing and the
enqueue calls are all inside it. Each measurement starts on fresh storage, outside
the clock; a run that hits its time limit counts what was delivered by then.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings

import hookdispatch as hd

from .harness import DATA, EVENT_TYPE, Deadline, Run
from .storages import StorageFactory

# The receivers are on 127.0.0.1 over plain http: local on purpose.
LOCAL = hd.TargetPolicy.local()

# A run cut at its time limit closes with deliveries pending: expected, not news.
logging.getLogger("hookdispatch").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", category=ResourceWarning)


def _result(delivered: int, count: int, elapsed: float, cpu: float) -> Run:
    return Run(delivered / elapsed, cut=delivered < count, cpu_us=cpu / max(delivered, 1) * 1e6)


def inline(url: str, make_storage: StorageFactory, count: int, limit: float) -> Run:
    """``workers=0``: each ``dispatch()`` returns once its delivery is done."""
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
