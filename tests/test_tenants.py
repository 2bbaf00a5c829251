"""Tenants: each customer account has its own endpoints, and gets its own events only.

Through both drivers on every storage we ship (PostgreSQL in test_postgres_tenants),
and through the command line.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from attrs import evolve
from click.testing import CliRunner
from pytest_httpserver import HTTPServer

import hookdispatch as hd
from hookdispatch.cli._app import cli

from stubs import Recording, recording


def test_an_event_reaches_its_tenants_endpoints_only(
    storage: hd.Storage, make_dispatcher: Callable[..., Any], driver: str
) -> None:
    transport = recording(driver)
    hooks = make_dispatcher(storage=storage, workers=0, transport=transport)
    hooks.add_endpoint("https://a.example/all", tenant="acct_a")
    hooks.add_endpoint("https://a.example/users", events=["user.*"], tenant="acct_a")
    hooks.add_endpoint("https://b.example/all", tenant="acct_b")
    hooks.add_endpoint("https://default.example/all")

    event = hooks.dispatch("user.created", {"user_id": "user_1"}, tenant="acct_a")
    assert event.tenant == "acct_a"
    assert sorted(transport.urls) == ["https://a.example/all", "https://a.example/users"]
    transport.urls.clear()

    hooks.dispatch_many([("invoice.paid", {}), ("user.deleted", {})], tenant="acct_b")
    assert transport.urls == ["https://b.example/all", "https://b.example/all"]
    transport.urls.clear()

    hooks.dispatch("user.created", {})  # no tenant: the default one
    assert transport.urls == ["https://default.example/all"]
    assert storage.get_event(event.id).tenant == "acct_a"


def test_the_async_driver_keeps_tenants_apart(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/a").respond_with_data("ok")
    httpserver.expect_request("/b").respond_with_data("ok")

    async def main() -> None:
        async with hd.AsyncDispatcher(storage=hd.MemoryStorage(), concurrency=0) as hooks:
            await hooks.add_endpoint(httpserver.url_for("/a"), tenant="acct_a")
            await hooks.add_endpoint(httpserver.url_for("/b"), tenant="acct_b")
            await hooks.dispatch("user.created", {}, tenant="acct_a")
            await hooks.dispatch_many([("user.created", {})], tenant="acct_a")
            assert [e.tenant for e in await hooks.endpoints(tenant="acct_b")] == ["acct_b"]

    asyncio.run(main())
    assert [request.path for request, _ in httpserver.log] == ["/a", "/a"]


def test_endpoints_can_be_listed_per_tenant(
    storage: hd.Storage, make_dispatcher: Callable[..., Any]
) -> None:
    hooks = make_dispatcher(storage=storage, workers=0)
    mine = hooks.add_endpoint("https://a.example/hooks", tenant="acct_a")
    hooks.add_endpoint("https://b.example/hooks", tenant="acct_b")
    assert hooks.endpoints(tenant="acct_a") == [mine]
    assert len(hooks.endpoints()) == 2
    assert hooks.endpoints(tenant="acct_c") == []


@pytest.mark.parametrize("tenant", ["", "acct 42", "a" * 201, "acct/42", "ünïcode", 42, None])
def test_a_tenant_id_that_is_not_a_short_id_is_refused(
    tenant: object, make_dispatcher: Callable[..., Any]
) -> None:
    hooks = make_dispatcher(storage=hd.MemoryStorage(), workers=0)
    with pytest.raises(hd.InvalidInputError, match="tenant must be"):
        hooks.add_endpoint("https://a.example/hooks", tenant=tenant)
    with pytest.raises(hd.InvalidInputError, match="tenant must be"):
        hooks.dispatch("user.created", {}, tenant=tenant)
    assert hooks.endpoints() == []


@pytest.mark.parametrize(
    "pattern", ["user*", "*.created", "user.*.created", ".*", "user.**", "*user", "us er.*"]
)
def test_only_exact_types_prefixes_and_star_subscribe(
    pattern: str, make_dispatcher: Callable[..., Any]
) -> None:
    hooks = make_dispatcher(storage=hd.MemoryStorage(), workers=0)
    with pytest.raises(hd.InvalidEndpointError, match=r"'user\.\*'"):
        hooks.add_endpoint("https://a.example/hooks", events=[pattern])


def test_prefix_subscriptions_match_whole_segments() -> None:
    endpoint = hd.Endpoint.create(
        "https://a.example/hooks", now=datetime.now(UTC), events=["user.*"]
    )
    assert endpoint.wants("user.created")
    assert endpoint.wants("user.subscription.updated")
    assert not endpoint.wants("users.created")
    assert not endpoint.wants("user")


def test_an_event_id_of_another_tenant_is_refused_and_reveals_nothing(
    storage: hd.Storage, make_dispatcher: Callable[..., Any], driver: str
) -> None:
    hooks = make_dispatcher(storage=storage, workers=0, transport=recording(driver))
    first = hooks.dispatch("user.created", {"secret": "of acct_a"}, id="order_1", tenant="acct_a")
    with pytest.raises(hd.InvalidEventError, match="already taken") as refused:
        hooks.dispatch("user.created", {}, id="order_1", tenant="acct_b")
    assert "acct_a" not in str(refused.value)
    with pytest.raises(hd.InvalidEventError, match="already taken"):
        hooks.dispatch_many([("user.created", {}, "order_1")], tenant="acct_b")
    # The same tenant dispatching the id again is the idempotent case, as before.
    assert hooks.dispatch("user.created", {}, id="order_1", tenant="acct_a") == first


def test_the_command_line_speaks_of_tenants(tmp_path: Any, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/a", method="POST").respond_with_data("ok")
    httpserver.expect_request("/b", method="POST").respond_with_data("ok")
    runner = CliRunner(env={"HOOKDISPATCH_ALLOW_LOCAL": "1"})
    db = ["--db", str(tmp_path / "hooks.db")]

    def run(*args: str) -> Any:
        result = runner.invoke(cli, [*db, *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result

    added = json.loads(
        run("endpoints", "add", httpserver.url_for("/a"), "--tenant", "acct_a", "--json").stdout
    )
    assert added["tenant"] == "acct_a"
    run("endpoints", "add", httpserver.url_for("/b"), "--tenant", "acct_b", "--events", "user.*")
    listed = json.loads(run("endpoints", "list", "--tenant", "acct_b", "--json").stdout)
    assert [endpoint["tenant"] for endpoint in listed] == ["acct_b"]
    assert "TENANT" in run("endpoints", "list").stdout
    run("send", "user.created", "--tenant", "acct_b")
    assert [request.path for request, _ in httpserver.log] == ["/b"]


def test_a_batch_with_another_tenants_id_stores_nothing(
    storage: hd.Storage, make_dispatcher: Callable[..., Any], driver: str
) -> None:
    transport = recording(driver)
    hooks = make_dispatcher(storage=storage, workers=0, transport=transport)
    hooks.add_endpoint("https://b.example/hooks", tenant="acct_b")
    hooks.dispatch("user.created", {}, id="shared", tenant="acct_a")
    with pytest.raises(hd.InvalidEventError, match=r"item 1 of the batch: .*already taken"):
        hooks.dispatch_many(
            [("user.created", {}, "fresh_1"), ("user.created", {}, "shared")], tenant="acct_b"
        )
    with pytest.raises(hd.UnknownEventError):
        storage.get_event("fresh_1")
    assert transport.urls == []


def test_the_outbox_refuses_another_tenants_id_and_returns_the_stored_event(
    tmp_path: Any,
) -> None:
    path = tmp_path / "hooks.db"
    storage = hd.SQLiteStorage(path)
    conn = sqlite3.connect(path, check_same_thread=False)
    with hd.Dispatcher(storage=storage, workers=1, transport=Recording()) as hooks:
        first = hooks.dispatch("user.created", {"v": 1}, id="shared", tenant="acct_a")
        with conn:
            with pytest.raises(hd.InvalidEventError, match="already taken"):
                hooks.dispatch("user.created", {}, id="shared", tenant="acct_b", transaction=conn)
            again = hooks.dispatch(
                "user.created", {"v": 2}, id="shared", tenant="acct_a", transaction=conn
            )
        assert again == first
        assert again.data == {"v": 1}
    conn.close()
    storage.close()


def test_a_delivery_is_not_sent_again_to_an_endpoint_moved_to_another_tenant(
    storage: hd.Storage, make_dispatcher: Callable[..., Any], driver: str
) -> None:
    hooks = make_dispatcher(storage=storage, workers=0, transport=recording(driver))
    endpoint = hooks.add_endpoint("https://a.example/hooks", tenant="acct_a")
    event = hooks.dispatch("user.created", {}, tenant="acct_a")
    [delivery] = hooks.deliveries(event_id=event.id)
    storage.update_endpoint(evolve(endpoint, tenant="acct_b"))
    with pytest.raises(hd.InvalidStateError, match="another tenant"):
        hooks.redeliver(delivery.id)
