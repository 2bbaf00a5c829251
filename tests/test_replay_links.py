"""Replays link to what they replay: both drivers, memory and SQLite, a real receiver."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

import hookdispatch as hd


def test_each_replay_links_to_the_send_before_it(
    storage: hd.Storage, make_dispatcher: Callable[..., Any], httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/hooks").respond_with_data("down", status=503)
    hooks = make_dispatcher(
        storage=storage,
        workers=0,
        targets=hd.TargetPolicy.local(),
        retry=hd.RetryPolicy(max_attempts=1),
    )
    endpoint = hooks.add_endpoint(httpserver.url_for("/hooks"), tenant="acct_a")
    hooks.add_endpoint(httpserver.url_for("/hooks"), tenant="acct_a")  # its own sends
    event = hooks.dispatch("user.created", {}, tenant="acct_a")
    [first] = hooks.deliveries(event_id=event.id, endpoint_id=endpoint.id)
    assert hooks.replay_links(first.id) == hd.ReplayLinks(replay_of=None, replayed_by=None)

    second = hooks.redeliver(first.id)
    third = hooks.redeliver(second.id)
    assert hooks.replay_links(first.id, tenant="acct_a") == hd.ReplayLinks(
        replay_of=None, replayed_by=second.id
    )
    assert hooks.replay_links(second.id) == hd.ReplayLinks(replay_of=first.id, replayed_by=third.id)
    assert hooks.replay_links(third.id) == hd.ReplayLinks(replay_of=second.id, replayed_by=None)
    with pytest.raises(hd.UnknownDeliveryError):
        hooks.replay_links(first.id, tenant="acct_b")
