"""send_test: one event to one endpoint only, the catalog's example by default.

Both drivers, memory and SQLite, against a real receiver on 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

import hookdispatch as hd

CATALOG = hd.Catalog(
    [
        hd.EventType("user.created", "A user signed up", example={"user_id": "user_1"}),
        hd.EventType("invoice.paid", "An invoice was paid"),
    ]
)


def test_a_test_event_goes_to_one_endpoint_only(
    storage: hd.Storage, make_dispatcher: Callable[..., Any], httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/one").respond_with_data("ok")
    httpserver.expect_request("/two").respond_with_data("ok")
    hooks = make_dispatcher(
        storage=storage, workers=0, targets=hd.TargetPolicy.local(), catalog=CATALOG
    )
    one = hooks.add_endpoint(httpserver.url_for("/one"), events=["invoice.paid"], tenant="acct_a")
    hooks.add_endpoint(httpserver.url_for("/two"), events=["*"], tenant="acct_a")

    delivery = hooks.send_test(one.id, "user.created", tenant="acct_a")  # not subscribed: sent
    assert delivery.status == hd.DeliveryStatus.SUCCEEDED
    assert delivery.endpoint_id == one.id
    assert delivery.tenant == "acct_a"
    assert delivery.event_type == "user.created"
    [(request, _)] = httpserver.log
    assert request.path == "/one"
    body = json.loads(request.data)
    assert body["data"] == {"user_id": "user_1"}  # the catalog's example
    assert hooks.deliveries(tenant="acct_a") == [delivery]

    edited = hooks.send_test(one.id, "invoice.paid", {"invoice_id": "in_1"})
    assert json.loads(httpserver.log[-1][0].data)["data"] == {"invoice_id": "in_1"}
    assert edited.status == hd.DeliveryStatus.SUCCEEDED
    assert hooks.send_test(one.id, "invoice.paid").status == hd.DeliveryStatus.SUCCEEDED
    assert json.loads(httpserver.log[-1][0].data)["data"] == {}  # no example: {}


def test_a_test_event_is_refused_clearly(
    make_dispatcher: Callable[..., Any],
) -> None:
    hooks = make_dispatcher(storage=hd.MemoryStorage(), workers=0, catalog=CATALOG)
    endpoint = hooks.add_endpoint("https://example.com/hooks", tenant="acct_a")
    with pytest.raises(hd.UnknownEndpointError):
        hooks.send_test(endpoint.id, "user.created", tenant="acct_b")
    with pytest.raises(hd.InvalidEventError, match=r"not in the catalog|unknown"):
        hooks.send_test(endpoint.id, "user.exploded")
    hooks.disable_endpoint(endpoint.id)
    with pytest.raises(hd.InvalidStateError, match="disabled"):
        hooks.send_test(endpoint.id, "user.created")
    assert hooks.deliveries() == []  # nothing was stored
