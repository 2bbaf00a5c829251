"""Responses that steer the next attempt: Retry-After, 410 Gone; and the payload limit."""

from __future__ import annotations

import email.utils
from datetime import timedelta

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

import hookdispatch as hd

from conftest import FakeTime
from receivers import wait_for

NO_JITTER = hd.RetryPolicy(initial_wait=1.0, jitter=0.0)


def inline(make_dispatcher, storage: hd.Storage, fake_time: FakeTime, **options):
    return make_dispatcher(
        storage=storage,
        workers=0,
        clock=fake_time.clock,
        sleep=fake_time.sleep,
        **{"retry": NO_JITTER, **options},
    )


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_seconds_delays_the_next_attempt(
    httpserver: HTTPServer, storage, fake_time: FakeTime, make_dispatcher, status: int
) -> None:
    answers = [Response("", status=status, headers={"Retry-After": "120"}), Response("")]
    httpserver.expect_request("/hook").respond_with_handler(lambda _: answers.pop(0))
    hooks = inline(make_dispatcher, storage, fake_time)
    hooks.add_endpoint(httpserver.url_for("/hook"))

    event = hooks.dispatch("user.created", {})

    assert fake_time.sleeps == [120.0]  # not the policy's 1 s
    [delivery] = hooks.deliveries(event_id=event.id)
    assert delivery.status is hd.DeliveryStatus.SUCCEEDED


def test_retry_after_http_date(
    httpserver: HTTPServer, storage, fake_time: FakeTime, make_dispatcher
) -> None:
    when = email.utils.format_datetime(fake_time.now + timedelta(seconds=90), usegmt=True)
    answers = [Response("", status=503, headers={"Retry-After": when}), Response("")]
    httpserver.expect_request("/hook").respond_with_handler(lambda _: answers.pop(0))
    hooks = inline(make_dispatcher, storage, fake_time)
    hooks.add_endpoint(httpserver.url_for("/hook"))

    hooks.dispatch("user.created", {})

    assert fake_time.sleeps == [90.0]


def test_retry_after_is_capped_and_ignored_elsewhere(
    httpserver: HTTPServer, storage, fake_time: FakeTime, make_dispatcher
) -> None:
    answers = [
        Response("", status=429, headers={"Retry-After": "999999"}),
        Response("", status=500, headers={"Retry-After": "600"}),  # not a 429/503
        Response("", status=429, headers={"Retry-After": "soon"}),  # unreadable
        Response(""),
    ]
    httpserver.expect_request("/hook").respond_with_handler(lambda _: answers.pop(0))
    policy = hd.RetryPolicy(initial_wait=1.0, jitter=0.0, max_retry_after=300.0)
    hooks = inline(make_dispatcher, storage, fake_time, retry=policy)
    hooks.add_endpoint(httpserver.url_for("/hook"))

    hooks.dispatch("user.created", {})

    assert fake_time.sleeps == [300.0, 2.0, 4.0]


def test_410_gone_disables_the_endpoint_and_enabling_resumes(
    httpserver: HTTPServer, storage, make_dispatcher
) -> None:
    gone = [True]

    def handler(request: Request) -> Response:
        return Response("", status=410 if gone[0] else 200)

    httpserver.expect_request("/hook").respond_with_handler(handler)
    disabled: list[tuple[str, str]] = []
    hooks = make_dispatcher(
        storage=storage,
        workers=2,
        poll_interval=0.05,
        on_endpoint_disabled=lambda endpoint, reason: disabled.append((endpoint.id, reason)),
    )
    endpoint = hooks.add_endpoint(httpserver.url_for("/hook"))

    event = hooks.dispatch("user.created", {})

    assert wait_for(lambda: not hooks.get_endpoint(endpoint.id).enabled)
    assert wait_for(lambda: disabled == [(endpoint.id, "the receiver answered 410 Gone")])
    [delivery] = hooks.deliveries(event_id=event.id)
    assert delivery.status is hd.DeliveryStatus.PENDING  # kept, not attempted further
    assert delivery.attempt_count == 1
    assert delivery.last_error == "HTTP 410: endpoint disabled"
    assert hooks.drain(timeout=5)
    assert len(httpserver.log) == 1

    gone[0] = False
    hooks.enable_endpoint(endpoint.id)
    assert wait_for(lambda: hooks.get_delivery(delivery.id).status.value == "succeeded")
    assert hooks.get_delivery(delivery.id).attempt_count == 2


def test_oversized_payload_is_refused_and_nothing_stored(
    storage, fake_time: FakeTime, make_dispatcher
) -> None:
    hooks = inline(make_dispatcher, storage, fake_time, max_payload_bytes=1000)
    hooks.add_endpoint("https://example.invalid/hooks")
    with pytest.raises(hd.InvalidEventError, match="1,000-byte limit"):
        hooks.dispatch("user.created", {"blob": "x" * 2000}, id="evt_big")
    assert hooks.deliveries() == []
    with pytest.raises(hd.UnknownEventError):
        hooks.get_event("evt_big")
    with pytest.raises(hd.InvalidEventError, match="limit"):
        hooks.dispatch_many([("user.created", {}), ("user.created", {"blob": "x" * 2000})])
    assert hooks.deliveries() == []


def test_default_payload_limit_is_256_kib(storage, fake_time: FakeTime, make_dispatcher) -> None:
    hooks = inline(make_dispatcher, storage, fake_time)
    with pytest.raises(hd.InvalidEventError, match="262,144-byte limit"):
        hooks.dispatch("user.created", {"blob": "x" * 262_144})
