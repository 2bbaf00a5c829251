"""What the application pays per webhook: ``dispatch()`` against Celery's ``.delay()``.

Each call is timed on its own (``perf_counter_ns``), back to back, and reported as
p50 and p99 in µs. (Calls paced with sleeps in between measure the machine instead:
on these VMs a call after an idle pause costs 3x a warm one, for every candidate.)
The consumer is a ``Dispatcher(workers=8)`` in this process, or the Celery worker
(threads, 8) on the same core, in two settings:

* waiting: it sends to the receiver that answers after 100 ms, so it is busy on the
  network but hardly on the CPU: this is the cost of the call itself;
* busy: it delivers to the instant receiver, flat out, sharing the sender core (and,
  in this process, the GIL) with the caller.

The batch path, ``dispatch_many``, is timed for one call of ``batch`` events on a
fresh dispatcher (its workers idle) and reported per event.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import hookdispatch as hd

from .celery_runs import Worker
from .harness import DATA, EVENT_TYPE, Deadline, Run
from .hookdispatch_runs import LOCAL
from .storages import StorageFactory


def percentiles(samples: list[float]) -> Run:
    """p50 (``value``) and p99 of ``samples`` µs."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return Run(statistics.median(ordered), cut=False, p99=p99)


def timed(call: Callable[[], object], count: int, limit: float) -> list[float]:
    """Time ``count`` calls one by one, back to back, within ``limit`` seconds (µs)."""
    samples: list[float] = []
    deadline = Deadline(limit)
    clock = time.perf_counter_ns
    while len(samples) < count and not deadline.expired:
        began = clock()
        call()
        samples.append((clock() - began) / 1000)
    return samples


def dispatch_latency(
    url: str,
    make_storage: StorageFactory,
    count: int,
    limit: float,
    *,
    wait: bool,
) -> Run:
    """``Dispatcher(workers=8).dispatch()`` per call, p50 and p99.

    ``wait``: let the workers deliver everything before closing (a fast receiver);
    else close at once, leaving the rest pending in the throwaway storage.
    """
    storage = make_storage()
    hooks = hd.Dispatcher(storage=storage, workers=8, targets=LOCAL)
    try:
        hooks.add_endpoint(url)
        samples = timed(lambda: hooks.dispatch(EVENT_TYPE, DATA), count, limit)
        if wait:
            hooks.drain(timeout=limit)
    finally:
        hooks.close(timeout=0)
        storage.close()
    return percentiles(samples)


def delay_latency(worker: Worker, count: int, limit: float, *, wait: bool) -> Run:
    """Celery ``send_webhook.delay()`` per call, p50 and p99.

    ``wait``: then wait until every task has been delivered; else drop the queue.
    """
    send, url = worker.peer.send_webhook.delay, worker.receiver.url
    before = worker.receiver.count()
    samples = timed(lambda: send(url, EVENT_TYPE, DATA), count, limit)
    if wait:
        worker.wait(before + len(samples), Deadline(limit))
    else:
        worker.purge()
        time.sleep(1)  # the tasks it had prefetched finish
    return percentiles(samples)


def batch_per_event(url: str, make_storage: StorageFactory, batch: int) -> Run:
    """One ``dispatch_many`` of ``batch`` events, workers idle: µs per event."""
    storage = make_storage()
    hooks = hd.Dispatcher(storage=storage, workers=8, targets=LOCAL)
    items = [(EVENT_TYPE, DATA)] * batch
    try:
        hooks.add_endpoint(url)
        began = time.perf_counter_ns()
        hooks.dispatch_many(items)
        elapsed = time.perf_counter_ns() - began
    finally:
        hooks.close(timeout=0)  # what is not delivered by now goes with the storage
        storage.close()
    return Run(elapsed / 1000 / batch)
