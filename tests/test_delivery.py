"""What counts as delivered, and how failures are retried: real HTTP, injected time."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

import hookdispatch as hd

from conftest import FakeTime
from drivers import DRIVERS, transport_for
from receivers import unused_port

NO_JITTER = hd.RetryPolicy(initial_wait=1.0, max_wait=60.0, jitter=0.0)


def respond_in_turn(*statuses: int) -> Callable[[Request], Response]:
    """A handler answering each status in turn, then the last one forever."""
    answers = list(statuses)

    def handler(request: Request) -> Response:
        status = answers.pop(0) if len(answers) > 1 else answers[0]
        return Response(f"answer {status}", status=status)

    return handler


def inline(
    make_dispatcher: Callable[..., hd.Dispatcher],
    storage: hd.Storage,
    fake_time: FakeTime,
    **options: object,
) -> hd.Dispatcher:
    return make_dispatcher(
        storage=storage,
        workers=0,
        retry=options.pop("retry", NO_JITTER),
        clock=fake_time.clock,
        sleep=fake_time.sleep,
        **options,
    )


def test_500_forever_gets_four_attempts_then_fails(
    httpserver: HTTPServer, storage: hd.Storage, fake_time: FakeTime, make_dispatcher
) -> None:
    httpserver.expect_request("/hook", method="POST").respond_with_data("nope", status=500)
    hooks = inline(make_dispatcher, storage, fake_time)
    hooks.add_endpoint(httpserver.url_for("/hook"))

    event = hooks.dispatch("invoice.paid", {"invoice_id": "in_1"})

    [delivery] = hooks.deliveries(event_id=event.id)
    assert delivery.status is hd.DeliveryStatus.FAILED
    assert delivery.attempt_count == 4
    assert delivery.next_attempt_at is None
    assert delivery.last_error == "HTTP 500"
    attempts = hooks.attempts(delivery.id)
    assert [a.number for a in attempts] == [1, 2, 3, 4]
    assert all(a.status_code == 500 and a.failure is hd.FailureKind.HTTP_STATUS for a in attempts)
    assert attempts[0].response_body == b"nope"
    assert len(httpserver.log) == 4
    # Exponential backoff between the attempts, on the injected clock: 1 s, 2 s, 4 s.
    assert fake_time.sleeps == [1.0, 2.0, 4.0]
    gaps = [(b.started_at - a.started_at).total_seconds() for a, b in itertools.pairwise(attempts)]
    assert gaps == [1.0, 2.0, 4.0]


def test_500_500_200_gets_three_attempts_and_succeeds(
    httpserver: HTTPServer, storage: hd.Storage, fake_time: FakeTime, make_dispatcher
) -> None:
    httpserver.expect_request("/hook").respond_with_handler(respond_in_turn(500, 500, 200))
    hooks = inline(make_dispatcher, storage, fake_time)
    hooks.add_endpoint(httpserver.url_for("/hook"))

    event = hooks.dispatch("user.created", {"user_id": "user_78451"})

    [delivery] = hooks.deliveries(event_id=event.id)
    assert delivery.status is hd.DeliveryStatus.SUCCEEDED
    assert delivery.attempt_count == 3
    assert delivery.last_error is None
    assert [a.status_code for a in hooks.attempts(delivery.id)] == [500, 500, 200]
    assert [a.succeeded for a in hooks.attempts(delivery.id)] == [False, False, True]
    assert fake_time.sleeps == [1.0, 2.0]


def test_waits_grow_exponentially_with_jitter_within_bounds(
    httpserver: HTTPServer, storage: hd.Storage, fake_time: FakeTime, make_dispatcher
) -> None:
    httpserver.expect_request("/hook").respond_with_data("", status=503)
    policy = hd.RetryPolicy(max_attempts=6, initial_wait=0.5, max_wait=100.0, jitter=0.25)
    hooks = inline(make_dispatcher, storage, fake_time, retry=policy)
    hooks.add_endpoint(httpserver.url_for("/hook"))

    hooks.dispatch("user.deleted", {"user_id": "user_78451"})

    assert len(fake_time.sleeps) == 5
    for n, slept in enumerate(fake_time.sleeps):
        base = 0.5 * 2**n
        assert base <= slept <= base + 0.25


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirect_is_not_followed_and_counts_as_failure(
    httpserver: HTTPServer, storage: hd.Storage, fake_time: FakeTime, make_dispatcher, status: int
) -> None:
    httpserver.expect_request("/hook").respond_with_data(
        "", status=status, headers={"Location": httpserver.url_for("/elsewhere")}
    )
    httpserver.expect_request("/elsewhere").respond_with_data("should never be asked")
    hooks = inline(make_dispatcher, storage, fake_time, retry=hd.RetryPolicy(max_attempts=2))
    hooks.add_endpoint(httpserver.url_for("/hook"))

    event = hooks.dispatch("user.created", {})

    [delivery] = hooks.deliveries(event_id=event.id)
    assert delivery.status is hd.DeliveryStatus.FAILED
    assert [a.status_code for a in hooks.attempts(delivery.id)] == [status, status]
    assert {entry[0].path for entry in httpserver.log} == {"/hook"}


def test_connection_refused_is_a_failed_attempt_and_is_retried(
    storage: hd.Storage, fake_time: FakeTime, make_dispatcher
) -> None:
    hooks = inline(make_dispatcher, storage, fake_time)
    hooks.add_endpoint(f"http://127.0.0.1:{unused_port()}/hook")

    event = hooks.dispatch("user.created", {})

    [delivery] = hooks.deliveries(event_id=event.id)
    assert delivery.status is hd.DeliveryStatus.FAILED
    attempts = hooks.attempts(delivery.id)
    assert len(attempts) == 4
    assert all(a.failure is hd.FailureKind.CONNECT and a.status_code is None for a in attempts)
    assert delivery.last_error is not None
    assert delivery.last_error.startswith("connect")


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_any_2xx_is_delivered(
    httpserver: HTTPServer, storage: hd.Storage, fake_time: FakeTime, make_dispatcher, status: int
) -> None:
    httpserver.expect_request("/hook").respond_with_data("", status=status)
    hooks = inline(make_dispatcher, storage, fake_time)
    hooks.add_endpoint(httpserver.url_for("/hook"))

    event = hooks.dispatch("user.created", {})

    [delivery] = hooks.deliveries(event_id=event.id)
    assert (delivery.status, delivery.attempt_count) == (hd.DeliveryStatus.SUCCEEDED, 1)


def test_fan_out_follows_subscriptions_and_enabled_flag(
    httpserver: HTTPServer, storage: hd.Storage, fake_time: FakeTime, make_dispatcher
) -> None:
    httpserver.expect_request("/a").respond_with_data("")
    httpserver.expect_request("/b").respond_with_data("")
    httpserver.expect_request("/all").respond_with_data("")
    httpserver.expect_request("/off").respond_with_data("")
    hooks = inline(make_dispatcher, storage, fake_time)
    a = hooks.add_endpoint(httpserver.url_for("/a"), events=["user.created"])
    hooks.add_endpoint(httpserver.url_for("/b"), events=["invoice.paid"])
    every = hooks.add_endpoint(httpserver.url_for("/all"), events=["*"])
    off = hooks.add_endpoint(httpserver.url_for("/off"))
    hooks.disable_endpoint(off.id)

    event = hooks.dispatch("user.created", {"user_id": "u1"})

    deliveries = hooks.deliveries(event_id=event.id)
    assert {d.endpoint_id for d in deliveries} == {a.id, every.id}
    assert sorted(entry[0].path for entry in httpserver.log) == ["/a", "/all"]
    assert hooks.dispatch("nobody.listens", {}).type == "nobody.listens"


def test_body_is_identical_on_every_attempt_and_endpoint(
    httpserver: HTTPServer, storage: hd.Storage, fake_time: FakeTime, make_dispatcher
) -> None:
    httpserver.expect_request("/flaky").respond_with_handler(respond_in_turn(500, 200))
    httpserver.expect_request("/ok").respond_with_data("")
    hooks = inline(make_dispatcher, storage, fake_time)
    hooks.add_endpoint(httpserver.url_for("/flaky"))
    hooks.add_endpoint(httpserver.url_for("/ok"))

    event = hooks.dispatch("user.created", {"user_id": "user_78451", "name": "Zoë"})

    bodies = {entry[0].get_data() for entry in httpserver.log}
    assert bodies == {event.body}
    ids = {entry[0].headers["webhook-id"] for entry in httpserver.log}
    assert ids == {event.id}
    assert len(httpserver.log) == 3


def test_redeliver_sends_a_failed_delivery_again(
    httpserver: HTTPServer, storage: hd.Storage, fake_time: FakeTime, make_dispatcher
) -> None:
    httpserver.expect_request("/hook").respond_with_handler(respond_in_turn(500, 500, 200))
    hooks = inline(make_dispatcher, storage, fake_time, retry=hd.RetryPolicy(max_attempts=2))
    hooks.add_endpoint(httpserver.url_for("/hook"))
    event = hooks.dispatch("invoice.paid", {"invoice_id": "in_1"})
    [failed] = hooks.deliveries(event_id=event.id)
    assert failed.status is hd.DeliveryStatus.FAILED

    again = hooks.redeliver(failed.id)

    assert again.id != failed.id
    assert (again.status, again.attempt_count) == (hd.DeliveryStatus.SUCCEEDED, 1)
    assert hooks.get_delivery(failed.id).status is hd.DeliveryStatus.FAILED
    assert len(hooks.attempts(failed.id)) == 2
    assert len(hooks.deliveries(event_id=event.id)) == 2


def test_response_body_is_kept_up_to_the_cap(
    httpserver: HTTPServer, storage: hd.Storage, fake_time: FakeTime, make_dispatcher, driver
) -> None:
    big = b"x" * (200 * 1024)
    httpserver.expect_request("/hook").respond_with_data(big, status=500)
    hooks = inline(
        make_dispatcher,
        storage,
        fake_time,
        retry=hd.RetryPolicy(max_attempts=1),
        transport=transport_for(driver, max_response_bytes=1000),
    )
    hooks.add_endpoint(httpserver.url_for("/hook"))

    event = hooks.dispatch("user.created", {})

    [delivery] = hooks.deliveries(event_id=event.id)
    [attempt] = hooks.attempts(delivery.id)
    assert attempt.response_body == b"x" * 1000


def test_transport_of_the_wrong_kind_is_refused(driver: str) -> None:
    other = "async" if driver == "sync" else "sync"
    with pytest.raises(hd.InvalidInputError, match="Transport"):
        DRIVERS[driver](storage=hd.MemoryStorage(), transport=transport_for(other))


def test_dispatch_many_stores_and_delivers_a_batch(
    httpserver: HTTPServer, storage: hd.Storage, fake_time: FakeTime, make_dispatcher
) -> None:
    httpserver.expect_request("/hook").respond_with_data("")
    hooks = inline(make_dispatcher, storage, fake_time)
    hooks.add_endpoint(httpserver.url_for("/hook"))
    first = hooks.dispatch("user.created", {"n": 0}, id="evt_known")

    events = hooks.dispatch_many(
        [("user.created", {"n": 1}), ("invoice.paid", {"n": 2}), ("user.created", {}, "evt_known")]
    )

    assert [e.type for e in events] == ["user.created", "invoice.paid", "user.created"]
    assert events[2] == first  # a known id returns the stored event, sends nothing new
    assert len(httpserver.log) == 3
    assert {d.status for d in hooks.deliveries()} == {hd.DeliveryStatus.SUCCEEDED}


def test_dispatch_many_with_a_bad_item_stores_nothing(
    storage: hd.Storage, fake_time: FakeTime, make_dispatcher
) -> None:
    hooks = inline(make_dispatcher, storage, fake_time)
    hooks.add_endpoint("https://example.invalid/hooks")
    with pytest.raises(hd.InvalidEventError, match="item 1"):
        hooks.dispatch_many([("user.created", {}), ("", {}), ("user.created", {})])
    assert hooks.deliveries() == []
