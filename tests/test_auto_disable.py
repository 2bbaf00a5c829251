"""An endpoint whose deliveries keep failing is disabled; a success resets the count."""

from __future__ import annotations

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

import hookdispatch as hd

from conftest import FakeTime

ONE_ATTEMPT = hd.RetryPolicy(max_attempts=1)


def test_disabled_after_n_failed_deliveries_in_a_row(
    httpserver: HTTPServer, storage, fake_time: FakeTime, make_dispatcher, caplog
) -> None:
    healthy = [False]

    def handler(request: Request) -> Response:
        return Response("", status=200 if healthy[0] else 500)

    httpserver.expect_request("/hook").respond_with_handler(handler)
    disabled: list[tuple[str, str]] = []
    hooks = make_dispatcher(
        storage=storage,
        workers=0,
        retry=ONE_ATTEMPT,
        disable_after=3,
        clock=fake_time.clock,
        sleep=fake_time.sleep,
        on_endpoint_disabled=lambda endpoint, reason: disabled.append((endpoint.id, reason)),
    )
    endpoint = hooks.add_endpoint(httpserver.url_for("/hook"))

    hooks.dispatch("user.created", {})
    hooks.dispatch("user.created", {})
    assert hooks.get_endpoint(endpoint.id).consecutive_failures == 2
    healthy[0] = True
    hooks.dispatch("user.created", {})  # a success resets the count
    assert hooks.get_endpoint(endpoint.id).consecutive_failures == 0
    healthy[0] = False
    for _ in range(3):
        hooks.dispatch("user.created", {})

    assert disabled == [(endpoint.id, "3 deliveries in a row failed")]
    assert not hooks.get_endpoint(endpoint.id).enabled
    assert "3 deliveries in a row failed" in caplog.text
    assert hooks.dispatch("user.created", {}).id  # no delivery for a disabled endpoint
    assert len(httpserver.log) == 6
    assert hooks.enable_endpoint(endpoint.id).consecutive_failures == 0


def test_auto_disable_can_be_turned_off(
    httpserver: HTTPServer, storage, fake_time: FakeTime, make_dispatcher
) -> None:
    httpserver.expect_request("/hook").respond_with_data("", status=500)
    hooks = make_dispatcher(
        storage=storage,
        workers=0,
        retry=ONE_ATTEMPT,
        disable_after=None,
        clock=fake_time.clock,
        sleep=fake_time.sleep,
    )
    endpoint = hooks.add_endpoint(httpserver.url_for("/hook"))
    for _ in range(5):
        hooks.dispatch("user.created", {})
    assert hooks.get_endpoint(endpoint.id).enabled
    assert hooks.get_endpoint(endpoint.id).consecutive_failures == 5
