"""ConcurrencyTests: threads, and processes where the backend supports them."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import ClassVar

from .._models import DeliveryStatus
from ._expect import check, equal, skip
from ._harness import StorageHarness
from ._samples import (
    BASE,
    LEASE,
    at,
    make_delivery,
    make_endpoint,
    make_event,
    outcome,
    store_events,
)

__all__ = ["ConcurrencyTests"]


def _run_threads(count: int, target: Callable[[int], None]) -> None:
    """Run ``target(index)`` on ``count`` threads released together; re-raise failures."""
    start = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            start.wait()
            target(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise AssertionError(f"{len(errors)} of {count} threads failed") from errors[0]


def _duplicates(ids: list[str]) -> list[str]:
    return [delivery_id for delivery_id, n in Counter(ids).items() if n > 1]


class ConcurrencyTests(StorageHarness):
    """Claims from many threads (and processes) at once never overlap."""

    threads: ClassVar[int] = 8
    """How many threads the concurrency tests run at once."""

    processes: ClassVar[int] = 4
    """How many processes the multi-process test runs at once."""

    concurrent_deliveries: ClassVar[int] = 240
    """How many deliveries the concurrency tests share out."""

    def test_threads_never_claim_the_same_delivery(self) -> None:
        storage = self.storage
        ids = [d.id for d in store_events(storage, self.concurrent_deliveries)]
        claimed: list[list[str]] = [[] for _ in range(self.threads)]

        def claim_all(index: int) -> None:
            rng = random.Random(index)
            # Claim at different moments, all within every lease: nobody may take a
            # delivery that someone else holds.
            while True:
                now = BASE + timedelta(seconds=rng.uniform(0, 30))
                batch = storage.claim(now=now, lease_until=now + LEASE, limit=rng.randint(1, 4))
                if not batch:
                    return
                claimed[index].extend(c.delivery.id for c in batch)

        _run_threads(self.threads, claim_all)
        everything = [delivery_id for mine in claimed for delivery_id in mine]
        equal(_duplicates(everything), [], "deliveries claimed twice while their lease held")
        equal(sorted(everything), sorted(ids), "deliveries claimed by the threads together")

    def test_threads_claiming_in_turn_never_claim_the_same_delivery(self) -> None:
        # Several tenants with due work: claims take them in turn (the round robin
        # of Storage.claim), from many threads at once.
        storage = self.storage
        ids: list[str] = []
        tenants = 4
        for number in range(tenants):
            endpoint = make_endpoint(tenant=f"acct_{number}")
            storage.add_endpoint(endpoint)
            for n in range(self.concurrent_deliveries // tenants):
                event = make_event(n=n, tenant=endpoint.tenant)
                delivery = make_delivery(event, endpoint, due=at(n * 0.001 + number))
                storage.add_event(event, [delivery])
                ids.append(delivery.id)
        claimed: list[list[str]] = [[] for _ in range(self.threads)]

        def claim_all(index: int) -> None:
            rng = random.Random(index)
            while True:
                now = BASE + timedelta(seconds=rng.uniform(30, 40))
                batch = storage.claim(now=now, lease_until=now + LEASE, limit=rng.randint(1, 6))
                if not batch:
                    return
                claimed[index].extend(c.delivery.id for c in batch)

        _run_threads(self.threads, claim_all)
        everything = [delivery_id for mine in claimed for delivery_id in mine]
        equal(_duplicates(everything), [], "deliveries claimed twice while their lease held")
        equal(sorted(everything), sorted(ids), "deliveries claimed by the threads together")

    def test_threads_claim_and_complete_at_once(self) -> None:
        storage = self.storage
        ids = [d.id for d in store_events(storage, self.concurrent_deliveries)]
        lost: list[str] = []

        def work(index: int) -> None:
            while batch := storage.claim(now=BASE, lease_until=at(600), limit=2):
                for claim in batch:
                    attempt, state = outcome(claim, "succeeded", now=at(1))
                    if not storage.complete(claim, attempt, state):
                        lost.append(claim.delivery.id)

        _run_threads(self.threads, work)
        equal(lost, [], "complete() of a lease nobody else could hold returned False")
        done = storage.list_deliveries(status=DeliveryStatus.SUCCEEDED)
        equal(sorted(d.id for d in done), sorted(ids), "deliveries that succeeded")
        for delivery_id in ids[:: max(1, len(ids) // 20)]:
            equal(len(storage.list_attempts(delivery_id)), 1, "attempts per delivery")

    def test_concurrent_add_event_with_one_id_stores_it_once(self) -> None:
        storage = self.storage
        [first] = store_events(storage, 1)
        endpoint = storage.get_endpoint(first.endpoint_id)
        results: list[bool] = []

        def add(index: int) -> None:
            event = make_event(id="evt_contended", n=index)
            delivery = make_delivery(event, endpoint)
            results.append(storage.add_event(event, [delivery]))

        _run_threads(self.threads, add)
        equal(sorted(results), [False] * (self.threads - 1) + [True], "add_event() results")
        equal(
            len(storage.list_deliveries(event_id="evt_contended")),
            1,
            "deliveries stored for one event id added by many threads",
        )

    def test_processes_never_claim_the_same_delivery(self) -> None:
        if not self.supports_multiple_processes:
            skip("supports_multiple_processes is False")
        storage = self.storage
        spec = self.storage_factory_spec(storage)
        check(
            spec is not None,
            "supports_multiple_processes is True, so storage_factory_spec() must say how"
            " another process opens the store",
        )
        assert spec is not None
        ids = [d.id for d in store_events(storage, self.concurrent_deliveries)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        children = [
            subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "hookdispatch.testing._claimer", spec.to_json()],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for _ in range(self.processes)
        ]
        outputs = []
        try:
            for child in children:
                assert child.stdin is not None
                child.stdin.write("go\n")
                child.stdin.flush()
            for child in children:
                out, err = child.communicate(timeout=120)
                check(child.returncode == 0, f"a claiming process failed:\n{err}")
                outputs.append(out.split())
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
        everything = [delivery_id for output in outputs for delivery_id in output]
        equal(_duplicates(everything), [], "deliveries claimed by two processes")
        equal(sorted(everything), sorted(ids), "deliveries claimed by the processes together")
