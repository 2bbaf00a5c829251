"""Deleting an endpoint: its unfinished deliveries are cancelled, its history stays,
nothing else changes; and every lookup by id can be scoped to one tenant.

Both drivers, memory and SQLite (the conformance suite holds PostgreSQL and user
backends to the storage half), against a real receiver on 127.0.0.1.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

import hookdispatch as hd


def test_deleting_an_endpoint_cancels_its_retries_and_keeps_its_history(
    storage: hd.Storage,
    make_dispatcher: Callable[..., Any],
    httpserver: HTTPServer,
) -> None:
    httpserver.expect_request("/down").respond_with_data("busy", status=503)
    httpserver.expect_request("/up").respond_with_data("ok")
    # Background mode, retries an hour away: the 503s leave them pending.
    hooks = make_dispatcher(
        storage=storage,
        workers=1,
        targets=hd.TargetPolicy.local(),
        retry=hd.RetryPolicy(initial_wait=3600, jitter=0, max_wait=3600),
    )
    down = hooks.add_endpoint(httpserver.url_for("/down"), tenant="acct_a")
    up = hooks.add_endpoint(httpserver.url_for("/up"), tenant="acct_a")
    neighbour = hooks.add_endpoint(httpserver.url_for("/up"), tenant="acct_b")
    events = [hooks.dispatch("user.created", {"n": n}, tenant="acct_a") for n in range(3)]
    hooks.dispatch("user.created", {}, tenant="acct_b")

    def succeeded() -> list[hd.Delivery]:
        return hooks.deliveries(status="succeeded")  # type: ignore[no-any-return]

    deadline, seen = time.monotonic() + 10, None
    while time.monotonic() < deadline:  # until the first attempts are over and stay so
        pending = hooks.deliveries(endpoint_id=down.id, status="pending")
        now = [d.attempt_count for d in pending]
        if len(now) == 3 and sum(now) >= 1 and len(succeeded()) == 4 and now == seen:
            break
        seen = now
        time.sleep(0.1)
    # The endpoint's backoff (after its first 503) holds the rest back, an hour.
    assert len(pending) == 3
    assert 1 <= sum(d.attempt_count for d in pending) <= 3
    attempts_before = {d.id: hooks.attempts(d.id) for d in pending}
    delivered = hooks.deliveries(endpoint_id=up.id) + hooks.deliveries(endpoint_id=neighbour.id)

    with pytest.raises(hd.UnknownEndpointError):  # another tenant cannot delete it
        hooks.delete_endpoint(down.id, tenant="acct_b")
    assert hooks.delete_endpoint(down.id, tenant="acct_a") == 3

    with pytest.raises(hd.UnknownEndpointError):
        hooks.get_endpoint(down.id)
    assert [e.id for e in hooks.endpoints()] == [up.id, neighbour.id]
    cancelled = hooks.deliveries(endpoint_id=down.id)
    assert [d.status for d in cancelled] == [hd.DeliveryStatus.CANCELLED] * 3
    assert all(d.next_attempt_at is None and d.last_error for d in cancelled)
    for delivery in cancelled:
        assert hooks.attempts(delivery.id) == attempts_before[delivery.id]
    assert (
        hooks.deliveries(endpoint_id=up.id) + hooks.deliveries(endpoint_id=neighbour.id)
        == delivered
    )

    # Nothing is retried, and new events skip it.
    hooks.dispatch("user.created", {}, tenant="acct_a")
    assert hooks.drain(timeout=5)
    paths = [request.path for request, _ in httpserver.log]
    assert paths.count("/down") == sum(d.attempt_count for d in pending)  # before the delete
    assert {d.event_id for d in hooks.deliveries(endpoint_id=down.id)} == {e.id for e in events}
    with pytest.raises(hd.UnknownEndpointError):
        hooks.delete_endpoint(down.id)
    with pytest.raises(hd.UnknownEndpointError):  # a cancelled delivery's endpoint is gone
        hooks.redeliver(cancelled[0].id)


def test_every_lookup_by_id_can_be_scoped_to_a_tenant(
    storage: hd.Storage, make_dispatcher: Callable[..., Any], httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/").respond_with_data("ok")
    hooks = make_dispatcher(storage=storage, workers=0, targets=hd.TargetPolicy.local())
    endpoint = hooks.add_endpoint(httpserver.url_for("/"), tenant="acct_a")
    event = hooks.dispatch("user.created", {}, tenant="acct_a")
    [delivery] = hooks.deliveries(event_id=event.id)
    assert delivery.tenant == "acct_a"
    assert delivery.event_type == "user.created"

    assert hooks.get_endpoint(endpoint.id, tenant="acct_a") == endpoint
    assert hooks.get_event(event.id, tenant="acct_a") == event
    assert hooks.get_delivery(delivery.id, tenant="acct_a") == delivery
    assert len(hooks.attempts(delivery.id, tenant="acct_a")) == 1
    # Another tenant's id reads exactly as an unknown one: the same error and message.
    for lookup, known, error in (
        (hooks.get_endpoint, endpoint.id, hd.UnknownEndpointError),
        (hooks.get_event, event.id, hd.UnknownEventError),
        (hooks.get_delivery, delivery.id, hd.UnknownDeliveryError),
        (hooks.attempts, delivery.id, hd.UnknownDeliveryError),
        (hooks.delete_endpoint, endpoint.id, hd.UnknownEndpointError),
    ):
        with pytest.raises(error) as theirs:
            lookup(known, tenant="acct_b")
        with pytest.raises(error) as unknown:
            lookup("xyz_unknown", tenant="acct_b")
        assert str(theirs.value) == str(unknown.value).replace("xyz_unknown", known)
    assert hooks.get_endpoint(endpoint.id) == endpoint  # nothing was deleted
