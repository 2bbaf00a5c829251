"""What the two drivers share (``_dispatching``): the same rules, whichever waits and calls."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

import hookdispatch as hd
from hookdispatch._dispatching import inline_claim_limit


def test_registering_a_host_name_never_stalls_the_event_loop() -> None:
    # MemoryStorage never blocks, so its calls run on the loop; but the registration
    # check resolves the endpoint's host name, which can take seconds. That part must
    # run off the loop all the same.
    resolved: list[str] = []

    def slow_resolver(host: str, port: int) -> list[str]:
        time.sleep(1.0)
        resolved.append(host)
        return ["127.0.0.1"]

    policy = hd.TargetPolicy(allow_http=True, allow_private=True, resolver=slow_resolver)

    async def main() -> tuple[hd.Endpoint, float]:
        loop = asyncio.get_running_loop()
        ticks: list[float] = []

        async def tick() -> None:
            while True:
                ticks.append(loop.time())
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0.05)
        async with hd.AsyncDispatcher(
            storage=hd.MemoryStorage(), concurrency=0, targets=policy
        ) as hooks:
            endpoint = await hooks.add_endpoint("http://receiver.test/hook")
        await asyncio.sleep(0.05)
        ticker.cancel()
        return endpoint, max(b - a for a, b in itertools.pairwise(ticks))

    endpoint, longest_gap = asyncio.run(main())

    assert resolved == ["receiver.test"]  # the name was resolved: the check ran
    assert endpoint.url == "http://receiver.test/hook"
    assert longest_gap < 0.3


def test_a_refused_name_is_still_refused_at_registration_off_the_loop() -> None:
    policy = hd.TargetPolicy(allow_http=True, resolver=lambda host, port: ["10.0.0.1"])

    async def main() -> None:
        async with hd.AsyncDispatcher(
            storage=hd.MemoryStorage(), concurrency=0, targets=policy
        ) as hooks:
            with pytest.raises(hd.InvalidEndpointError):
                await hooks.add_endpoint("http://internal.test/hook")
            assert await hooks.endpoints() == []

    asyncio.run(main())


class ClaimRecordingStorage(hd.MemoryStorage):
    """MemoryStorage that notes the limit of every claim, and every storage call."""

    def __init__(self) -> None:
        super().__init__()
        self.limits: list[int] = []
        self.calls: list[str] = []

    def add_event_and_claim(self, event: hd.Event, **options: Any) -> tuple[bool, list[Any]]:
        self.limits.append(options["limit"])
        self.calls.append("add_event_and_claim")
        return super().add_event_and_claim(event, **options)

    def claim(self, **options: Any) -> list[Any]:
        self.limits.append(options["limit"])
        self.calls.append("claim")
        return super().claim(**options)

    def complete(self, *args: Any) -> bool:
        self.calls.append("complete")
        return super().complete(*args)

    def next_due_at(self, *, event_id: str | None = None) -> datetime | None:
        self.calls.append("next_due_at")
        return super().next_due_at(event_id=event_id)


def _inline_to(
    httpserver: HTTPServer, make_dispatcher: Callable[..., Any], *, endpoints: int
) -> tuple[Any, ClaimRecordingStorage]:
    """An inline dispatcher on a ClaimRecordingStorage, with ``endpoints`` endpoints
    at ``httpserver``, which answers 200."""
    httpserver.expect_request("/hook").respond_with_data("ok")
    storage = ClaimRecordingStorage()
    hooks = make_dispatcher(storage=storage, workers=0)
    for _ in range(endpoints):
        hooks.add_endpoint(httpserver.url_for("/hook"))
    return hooks, storage


def test_inline_delivery_claims_as_many_as_the_driver_attempts_at_once(
    httpserver: HTTPServer, driver: str, make_dispatcher: Callable[..., Any]
) -> None:
    # The sync driver attempts one delivery after another, so it claims one at a
    # time (no lease runs while an earlier attempt does); the async driver attempts
    # an event's deliveries together, so it claims them together.
    hooks, storage = _inline_to(httpserver, make_dispatcher, endpoints=3)

    hooks.dispatch("user.created", {"n": 1})

    limit = inline_claim_limit(concurrent=driver == "async")
    assert set(storage.limits) == {limit}
    assert len(hooks.deliveries(status="succeeded")) == 3
    assert inline_claim_limit(concurrent=False) == 1
    assert inline_claim_limit(concurrent=True) > 1


def test_inline_dispatch_leases_as_it_stores_and_asks_no_more_than_it_must(
    httpserver: HTTPServer, driver: str, make_dispatcher: Callable[..., Any]
) -> None:
    # One endpoint: the event stored with its delivery leased (one call), the attempt
    # recorded, then only what is needed to learn that nothing is left. The sync
    # driver claimed its one-delivery limit in full, so it claims once more (more may
    # be due); the async driver's claim was short, so it goes straight to asking.
    hooks, storage = _inline_to(httpserver, make_dispatcher, endpoints=1)

    hooks.dispatch("user.created", {"n": 1})

    again = ["claim"] if driver == "sync" else []
    assert storage.calls == ["add_event_and_claim", "complete", *again, "next_due_at"]
    assert [d.status for d in hooks.deliveries()] == [hd.DeliveryStatus.SUCCEEDED]


@pytest.mark.parametrize("change", ["disable_endpoint", "enable_endpoint"])
def test_disabling_and_enabling_an_endpoint_both_wake_the_pump(
    driver: str, make_dispatcher: Callable[..., Any], change: str
) -> None:
    hooks = make_dispatcher(storage=hd.MemoryStorage(), workers=1, poll_interval=30)
    endpoint = hooks.add_endpoint("http://127.0.0.1:9/hook")
    dispatcher = hooks if driver == "sync" else hooks.hooks
    woken: list[str] = []
    notify = dispatcher._notify

    def spy() -> None:
        woken.append(change)
        notify()

    dispatcher._notify = spy
    getattr(hooks, change)(endpoint.id)

    assert woken == [change]


def test_enabling_an_endpoint_sends_its_waiting_deliveries_at_once(
    httpserver: HTTPServer, make_dispatcher: Callable[..., Any]
) -> None:
    # Deliveries stored while the pump idles (poll_interval 30 s) wait for the
    # endpoint; enabling it wakes the pump rather than leaving them to the next poll.
    httpserver.expect_request("/hook").respond_with_data("ok")
    storage = hd.MemoryStorage()
    hooks = make_dispatcher(storage=storage, workers=2, poll_interval=30)
    endpoint = hooks.add_endpoint(httpserver.url_for("/hook"))
    hooks.disable_endpoint(endpoint.id)
    now = datetime.now().astimezone()
    event = hd.Event.create("user.created", {"n": 1}, now=now)
    storage.add_event(event, [hd.Delivery.create(event, endpoint, now=now)])
    time.sleep(0.2)  # the pump has looked, found nothing it may send, and idles

    hooks.enable_endpoint(endpoint.id)

    assert hooks.drain(timeout=5)
    assert [d.status.value for d in hooks.deliveries()] == ["succeeded"]


def test_both_drivers_repr_and_refuse_after_closing_alike(
    driver: str, make_dispatcher: Callable[..., Any]
) -> None:
    name = "Dispatcher" if driver == "sync" else "AsyncDispatcher"
    capacity = "workers" if driver == "sync" else "concurrency"
    hooks = make_dispatcher(storage=hd.MemoryStorage(), workers=2)
    assert repr(hooks).startswith(f"<{name} {capacity}=2 storage=")
    hooks.close()
    assert repr(hooks).endswith(" closed>")
    with pytest.raises(hd.DispatcherClosedError, match=f"this {name} is closed"):
        hooks.dispatch("user.created", {})
