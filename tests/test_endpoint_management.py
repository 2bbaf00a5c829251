"""Endpoint management: description, custom headers, metadata, and update_endpoint."""

from __future__ import annotations

import json
import logging
import pickle
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
from click.testing import CliRunner
from pytest_httpserver import HTTPServer

import hookdispatch as hd
import hookdispatch._targets
from downgrade import postgres_back_to, result_columns, sqlite_back_to
from hookdispatch._core import Claim, prepare
from hookdispatch.cli._app import cli
from hookdispatch.storage._postgres import MIGRATIONS as PG_MIGRATIONS
from hookdispatch.storage._sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from pg_fixtures import new_schema, postgres_admin_dsn, postgres_dsn  # noqa: F401 - fixtures

from stubs import recording

NOW = datetime(2024, 6, 30, 15, 41, 23, tzinfo=UTC)
TOKEN = "Bearer tok_9f8e7d6c5b4a"  # a credential: must never show up anywhere
OURS = (
    "Content-Type",
    "content-length",
    "HOST",
    "User-Agent",
    "Accept-Encoding",
    "Transfer-Encoding",
    "Connection",
    "Keep-Alive",
    "TE",
    "Trailer",
    "Upgrade",
    "Proxy-Authorization",
    "proxy-anything",
    "X-Webhook-Signature",
    "Webhook-Id",
    "webhook-timestamp",
    "WEBHOOK-SIGNATURE",
)


def endpoint(**fields: Any) -> hd.Endpoint:
    return hd.Endpoint.create("https://example.com/hooks", now=NOW, **fields)


# Headers on the wire ---------------------------------------------------------------------


def test_headers_reach_the_receiver(httpserver: HTTPServer) -> None:
    httpserver.expect_request(
        "/hooks", method="POST", headers={"Authorization": TOKEN, "X-Customer": "acct 42"}
    ).respond_with_data("ok")
    with hd.Dispatcher(storage=hd.MemoryStorage(), workers=0) as hooks:
        hooks.add_endpoint(
            httpserver.url_for("/hooks"), headers={"Authorization": TOKEN, "X-Customer": "acct 42"}
        )
        event = hooks.dispatch("user.created", {"id": 1})
        [delivery] = hooks.deliveries(event_id=event.id)
    assert delivery.status == "succeeded"
    [(request, _)] = httpserver.log
    assert request.headers["Authorization"] == TOKEN
    assert request.headers["webhook-id"] == event.id
    assert request.headers["Content-Type"] == "application/json"


def test_headers_reach_the_transport_with_both_drivers(
    make_dispatcher: Callable[..., Any], driver: str
) -> None:
    transport = recording(driver)
    hooks = make_dispatcher(storage=hd.MemoryStorage(), workers=0, transport=transport)
    hooks.add_endpoint("https://example.com/hooks", headers={"Authorization": TOKEN})
    hooks.dispatch("user.created", {})
    [request] = transport.requests
    assert request.headers["Authorization"] == TOKEN
    assert {"x-webhook-signature", "webhook-signature"} <= set(request.headers)


def test_ours_are_never_replaced_even_by_a_row_that_skipped_validation() -> None:
    # Endpoint(...) trusts its arguments (storage rebuilds rows with it): prepare()
    # must still keep every header of ours, and send no hop-by-hop one.
    forged = attrs.evolve(
        endpoint(),
        headers={"Content-Type": "text/plain", "webhook-id": "evil", "Proxy-X": "1", "X-Ok": "1"},
    )
    event = hd.Event.create("user.created", {}, now=NOW)
    claim = Claim(
        delivery=hd.Delivery.create(event, forged, now=NOW),
        endpoint=forged,
        event_type=event.type,
        body=event.body,
        lease="lse_1",
    )
    request = prepare(claim, now=NOW, timeout=5)
    lower = {name.lower(): value for name, value in request.headers.items()}
    assert len(lower) == len(request.headers)  # no name twice in another case
    assert lower["content-type"] == "application/json"
    assert lower["webhook-id"] == event.id
    assert "proxy-x" not in lower
    assert lower["x-ok"] == "1"


# Validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OURS)
def test_our_headers_and_hop_by_hop_ones_are_refused(name: str) -> None:
    with pytest.raises(hd.InvalidEndpointError, match=name) as caught:
        endpoint(headers={name: TOKEN})
    assert TOKEN not in str(caught.value)
    assert "tok_" not in str(caught.value)


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ({"X-Auth": "a\r\nX-Injected: 1" + TOKEN}, "X-Auth"),
        ({"X-Auth": TOKEN + "\n"}, "X-Auth"),
        ({"X-Auth": TOKEN + "\0"}, "X-Auth"),
        ({"X-Auth": TOKEN + "\x7f"}, "X-Auth"),
        ({"X-Auth": TOKEN + "\x1b[0m"}, "X-Auth"),
        ({"X-Auth": TOKEN + "é"}, "X-Auth"),
        ({"X-Auth": TOKEN + "x" * 4096}, "X-Auth"),
        ({"X-Auth": 42}, "X-Auth"),
        ({"Bad Name": TOKEN}, "Bad Name"),
        ({"Bad:Name": TOKEN}, "Bad:Name"),
        ({"": TOKEN}, "header name"),
        ({"X-Auth": TOKEN, "x-auth": TOKEN}, "x-auth"),
    ],
)
def test_invalid_headers_are_refused_without_their_value(
    headers: dict[str, Any], named: str
) -> None:
    with pytest.raises(hd.InvalidEndpointError) as caught:
        endpoint(headers=headers)
    message = str(caught.value)
    assert named in message
    assert "tok_" not in message


def test_at_most_20_headers_and_4_kib_values() -> None:
    twenty = {f"X-H{n}": TOKEN for n in range(20)}
    assert len(endpoint(headers=twenty).headers) == 20
    with pytest.raises(hd.InvalidEndpointError, match="at most 20") as caught:
        endpoint(headers={**twenty, "X-H20": TOKEN})
    assert "tok_" not in str(caught.value)
    assert endpoint(headers={"X-Big": "x" * 4096}).headers["X-Big"] == "x" * 4096
    assert endpoint(headers={"X-Empty": ""}).headers == {"X-Empty": ""}


def test_headers_must_be_a_mapping() -> None:
    with pytest.raises(hd.InvalidEndpointError, match="mapping"):
        endpoint(headers=[("Authorization", TOKEN)])


@pytest.mark.parametrize(
    "metadata",
    [
        {"blob": "x" * 5000},
        {"bad": {1, 2}},
        {"nan": float("nan")},
        {1: "not a string key"},
        ["not", "an", "object"],
        {"nul": "a\0b"},  # PostgreSQL's jsonb cannot hold it
        {"nul\0key": 1},
        {"deep": [{"nul": ["\0"]}]},
    ],
)
def test_invalid_metadata_is_refused(metadata: Any) -> None:
    with pytest.raises(hd.InvalidEndpointError, match="metadata"):
        endpoint(metadata=metadata)


@pytest.mark.parametrize("description", ["x" * 1025, "nul\0", "bell\a", 42])
def test_invalid_descriptions_are_refused(description: Any) -> None:
    with pytest.raises(hd.InvalidEndpointError, match="description"):
        endpoint(description=description)


def test_metadata_may_hold_a_backslash_and_u0000_as_text() -> None:
    assert endpoint(metadata={"text": "\\u0000"}).metadata == {"text": "\\u0000"}


def test_headers_and_metadata_are_immutable_copies() -> None:
    headers = {"Authorization": TOKEN}
    metadata: dict[str, Any] = {"customer": "acct_42"}
    made = endpoint(headers=headers, metadata=metadata, description="multi\nline\tok")
    headers["X-Later"] = "1"
    metadata["later"] = True
    assert made.headers == {"Authorization": TOKEN}
    assert made.metadata == {"customer": "acct_42"}
    with pytest.raises(TypeError):
        made.headers["X-New"] = "1"  # type: ignore[index]
    with pytest.raises(TypeError):
        made.metadata["new"] = 1  # type: ignore[index]
    assert pickle.loads(pickle.dumps(made)) == made
    assert hash(made) == hash(attrs.evolve(made))  # still hashable


# Never a value in repr or logs -----------------------------------------------------------


def test_header_values_are_never_in_repr() -> None:
    made = endpoint(headers={"Authorization": TOKEN, "X-Api-Key": "key_123456"})
    for text in (repr(made), str(made), repr(made.headers), str(made.headers)):
        assert "Authorization" in text
        assert "tok_" not in text
        assert "key_123456" not in text


def test_header_values_are_never_logged(
    make_dispatcher: Callable[..., Any], driver: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    transport = recording(driver)
    hooks = make_dispatcher(storage=hd.MemoryStorage(), workers=0, transport=transport)
    made = hooks.add_endpoint("https://example.com/hooks", headers={"Authorization": TOKEN})
    hooks.dispatch("user.created", {})
    hooks.update_endpoint(made.id, headers={"Authorization": TOKEN + "2"})
    with pytest.raises(hd.InvalidEndpointError):
        hooks.update_endpoint(made.id, headers={"Host": TOKEN})
    logging.getLogger("test").info("endpoint: %r", hooks.get_endpoint(made.id))
    assert "tok_" not in caplog.text


# update_endpoint -------------------------------------------------------------------------


def test_update_changes_only_what_is_given(
    make_dispatcher: Callable[..., Any], driver: str
) -> None:
    hooks = make_dispatcher(storage=hd.MemoryStorage(), workers=0, transport=recording(driver))
    made = hooks.add_endpoint(
        "https://example.com/hooks",
        events=["user.created"],
        tenant="acct_42",
        description="first",
        headers={"Authorization": TOKEN},
        metadata={"n": 1},
    )
    hooks.disable_endpoint(made.id)
    disabled = hooks.get_endpoint(made.id)

    assert hooks.update_endpoint(made.id) == disabled  # nothing given: nothing changes
    changed = hooks.update_endpoint(made.id, description="second")
    assert changed == attrs.evolve(disabled, description="second")
    changed = hooks.update_endpoint(made.id, url="https://example.com/v2")
    assert changed == attrs.evolve(disabled, description="second", url="https://example.com/v2")
    changed = hooks.update_endpoint(made.id, events=["invoice.*", "user.created"])
    assert changed.events == ("invoice.*", "user.created")
    changed = hooks.update_endpoint(made.id, metadata={"n": 2})
    changed = hooks.update_endpoint(made.id, headers={})
    assert changed == attrs.evolve(
        disabled,
        description="second",
        url="https://example.com/v2",
        events=("invoice.*", "user.created"),
        metadata={"n": 2},
        headers={},
    )
    # Never the tenant, the secret, the state, nor the creation time.
    assert (changed.tenant, changed.secret, changed.enabled, changed.created_at) == (
        "acct_42",
        made.secret,
        False,
        made.created_at,
    )
    assert hooks.get_endpoint(made.id) == changed
    # The fan-out index follows the new events.
    hooks.enable_endpoint(made.id)
    assert [e.id for e in hooks.storage.endpoints_for("acct_42", "invoice.paid")] == [made.id]


def test_an_invalid_update_changes_nothing(
    make_dispatcher: Callable[..., Any], driver: str
) -> None:
    hooks = make_dispatcher(storage=hd.MemoryStorage(), workers=0, transport=recording(driver))
    made = hooks.add_endpoint("https://example.com/hooks", headers={"Authorization": TOKEN})
    for bad in (
        {"url": "ftp://example.com/x", "description": "new"},
        {"events": [], "description": "new"},
        {"headers": {"Connection": "close"}, "description": "new"},
        {"metadata": {"x": "y" * 5000}, "description": "new"},
    ):
        with pytest.raises(hd.InvalidEndpointError):
            hooks.update_endpoint(made.id, **bad)
    assert hooks.get_endpoint(made.id) == made
    with pytest.raises(hd.UnknownEndpointError):
        hooks.update_endpoint("ep_nope", description="x")


def test_update_checks_the_new_url_against_the_target_policy(
    make_dispatcher: Callable[..., Any], driver: str
) -> None:
    strict = hd.TargetPolicy(resolver=lambda host, port: {"internal.test": ["10.0.0.7"]}[host])
    hooks = make_dispatcher(
        storage=hd.MemoryStorage(), workers=0, transport=recording(driver), targets=strict
    )
    made = hooks.add_endpoint("https://8.8.8.8/hooks")
    for url in ("https://internal.test/hooks", "https://10.0.0.7/hooks", "http://8.8.8.8/x"):
        with pytest.raises(hd.InvalidEndpointError, match="refused"):
            hooks.update_endpoint(made.id, url=url)
    assert hooks.get_endpoint(made.id).url == "https://8.8.8.8/hooks"
    assert hooks.update_endpoint(made.id, url="https://8.8.4.4/h").url == "https://8.8.4.4/h"


def test_update_checks_new_events_against_the_catalog(
    make_dispatcher: Callable[..., Any], driver: str
) -> None:
    catalog = hd.Catalog([hd.EventType("user.created", "A user signed up")])
    hooks = make_dispatcher(
        storage=hd.MemoryStorage(), workers=0, transport=recording(driver), catalog=catalog
    )
    made = hooks.add_endpoint("https://example.com/hooks", events=["user.created"])
    with pytest.raises(hd.InvalidEndpointError, match="invoice"):
        hooks.update_endpoint(made.id, events=["invoice.paid"])
    assert hooks.update_endpoint(made.id, events=["user.*"]).events == ("user.*",)


def test_the_next_attempt_uses_the_updated_url_and_headers(
    make_dispatcher: Callable[..., Any], driver: str
) -> None:
    transport = recording(driver)
    hooks = make_dispatcher(storage=hd.MemoryStorage(), workers=0, transport=transport)
    made = hooks.add_endpoint("https://example.com/hooks", headers={"X-Version": "1"})
    hooks.update_endpoint(made.id, url="https://example.com/v2", headers={"X-Version": "2"})
    hooks.dispatch("user.created", {})
    [request] = transport.requests
    assert request.url == "https://example.com/v2"
    assert request.headers["X-Version"] == "2"


# Storage ---------------------------------------------------------------------------------


def test_sqlite_round_trip_and_a_version_5_file_keeps_its_endpoints(tmp_path: Path) -> None:
    path = tmp_path / "hooks.db"
    old = endpoint(secret=hd.generate_secret())
    store = hd.SQLiteStorage(path)
    store.add_endpoint(old)
    store.close()
    with sqlite3.connect(path) as conn:  # back to version 5, as the previous release wrote it
        sqlite_back_to(conn, 5)
    conn.close()
    store = hd.SQLiteStorage(path)
    try:
        got = store.get_endpoint(old.id)
        assert got == old
        assert (got.description, dict(got.headers), dict(got.metadata)) == ("", {}, {})
        changed = attrs.evolve(
            old, description="d", headers={"Authorization": TOKEN}, metadata={"a": [1]}
        )
        store.update_endpoint(changed)
        assert store.get_endpoint(old.id) == changed
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(SQLITE_MIGRATIONS)
    conn.close()


def test_a_stored_headers_column_that_is_not_an_object_is_a_storage_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "hooks.db"
    made = endpoint()
    store = hd.SQLiteStorage(path)
    store.add_endpoint(made)
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE endpoints SET headers = '[1]'")
    conn.close()
    store = hd.SQLiteStorage(path)
    try:
        with pytest.raises(hd.StorageError, match="headers"):
            store.get_endpoint(made.id)
    finally:
        store.close()


def test_a_version_6_postgres_schema_migrates_and_claims_carry_the_headers(
    postgres_dsn: str,  # noqa: F811
) -> None:
    schema = new_schema()
    old = endpoint()
    event = hd.Event.create("user.created", {}, now=NOW)
    store = hd.PostgresStorage(postgres_dsn, schema=schema)
    store.add_endpoint(old)
    store.add_event(event, [hd.Delivery.create(event, old, now=NOW)])
    store.close()
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:  # back to version 6
        postgres_back_to(conn, schema, 6)
    store = hd.PostgresStorage(postgres_dsn, schema=schema)
    try:
        assert store.get_endpoint(old.id) == old
        changed = attrs.evolve(
            old,
            description="Zoë's receiver",
            headers={"Authorization": TOKEN},
            metadata={"plan": {"seats": 3, "ratio": 0.5}},
        )
        store.update_endpoint(changed)
        assert store.get_endpoint(old.id) == changed
        [claim] = store.claim(now=NOW, lease_until=NOW + timedelta(minutes=1), limit=1)
        assert claim.endpoint == changed
        assert prepare(claim, now=NOW, timeout=5).headers["Authorization"] == TOKEN
    finally:
        store.close()
    with psycopg.connect(postgres_dsn) as conn:
        [(version,)] = conn.execute(f'SELECT version FROM "{schema}".schema_version').fetchall()
        outs = {
            name: result_columns(conn, schema, name) for name in ("claim_due_v5", "claim_due_v6")
        }
    assert version == len(PG_MIGRATIONS)
    # The previous release's claim function stays, unchanged, for a rolling upgrade.
    assert outs == {"claim_due_v5": 21, "claim_due_v6": 24}


# CLI -------------------------------------------------------------------------------------


def test_cli_add_update_and_list(tmp_path: Path, hooks_url: str) -> None:
    db = tmp_path / "hooks.db"
    runner = CliRunner(env={"HOOKDISPATCH_ALLOW_LOCAL": "1"})

    def run(*args: str) -> Any:
        return runner.invoke(cli, ["--db", str(db), *args])

    added = run(
        "endpoints", "add", hooks_url, "--json", "--description", "Billing",
        "--header", f"Authorization: {TOKEN}", "--header", "X-Customer:acct 42",
        "--metadata", '{"customer": "acct_42"}',
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    made = json.loads(added.stdout)
    assert (made["description"], made["headers"], made["metadata"]) == (
        "Billing",
        ["Authorization", "X-Customer"],
        {"customer": "acct_42"},
    )
    [stored] = hd.SQLiteStorage(db).list_endpoints()
    assert stored.headers == {"Authorization": TOKEN, "X-Customer": "acct 42"}

    updated = run("endpoints", "update", made["id"], "--description", "Billing v2")
    assert updated.exit_code == 0, updated.output
    assert "Authorization" in updated.output
    [listed] = json.loads(run("endpoints", "list", "--json").stdout)
    assert listed["description"] == "Billing v2"
    assert listed["headers"] == ["Authorization", "X-Customer"]
    assert listed["url"] == hooks_url

    updated = run(
        "endpoints", "update", made["id"], "--url", hooks_url + "/v2", "--events", "user.*",
        "--header", "X-Only: 1",
    )  # fmt: skip
    assert updated.exit_code == 0, updated.output
    [stored] = hd.SQLiteStorage(db).list_endpoints()
    assert (stored.url, stored.events, dict(stored.headers)) == (
        hooks_url + "/v2",
        ("user.*",),
        {"X-Only": "1"},
    )
    assert run("endpoints", "update", made["id"], "--clear-headers").exit_code == 0
    assert hd.SQLiteStorage(db).get_endpoint(made["id"]).headers == {}

    outputs = [run("endpoints", "list").output, run("endpoints", "list", "--json").output]
    for bad in (f"Host: {TOKEN}", f"X-Bad: {TOKEN}\x01", TOKEN):
        result = run("endpoints", "update", made["id"], "--header", bad)
        assert result.exit_code == 2
        outputs.append(result.output)
    assert not any("tok_" in output for output in outputs)


def test_cli_update_checks_the_target_policy(
    tmp_path: Path, hooks_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "hooks.db"
    local = CliRunner(env={"HOOKDISPATCH_ALLOW_LOCAL": "1"})
    made = json.loads(
        local.invoke(cli, ["--db", str(db), "endpoints", "add", hooks_url, "--json"]).stdout
    )
    # The real default policy, not the tests' local one (conftest.local_targets).
    monkeypatch.setattr(hookdispatch._targets, "_default", hd.TargetPolicy())
    strict = CliRunner(env={"HOOKDISPATCH_ALLOW_LOCAL": ""})
    result = strict.invoke(
        cli, ["--db", str(db), "endpoints", "update", made["id"], "--url", "http://127.0.0.1/x"]
    )
    assert result.exit_code == 2
    assert "refused" in result.output
    assert hd.SQLiteStorage(db).get_endpoint(made["id"]).url == hooks_url


@pytest.fixture
def hooks_url(httpserver: HTTPServer) -> str:
    httpserver.expect_request("/hooks", method="POST").respond_with_data("ok")
    return httpserver.url_for("/hooks")
