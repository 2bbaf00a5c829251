"""Bad input fails at the call with a clear HookDispatchError subclass and stores nothing,
on every storage backend; and the states in which an operation is refused."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

import hookdispatch as hd

MakeDispatcher = Callable[..., hd.Dispatcher]


def snapshot(storage: hd.Storage) -> dict[str, object]:
    """Everything a storage holds that a failed call could have added."""
    return {
        "endpoints": [(e.id, e.url, e.enabled) for e in storage.list_endpoints()],
        "deliveries": [(d.id, d.status) for d in storage.list_deliveries()],
        "events": _count_events(storage),
    }


def _count_events(storage: hd.Storage) -> int | None:
    # The Storage API has no list of events; for SQLite, count the rows. For memory,
    # a stored event would show up as a delivery to the catch-all endpoint.
    if isinstance(storage, hd.SQLiteStorage):
        with sqlite3.connect(storage.path) as conn:
            return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    return None


@pytest.fixture
def hooks(
    storage: hd.Storage, make_dispatcher: MakeDispatcher, httpserver: HTTPServer
) -> hd.Dispatcher:
    """An inline dispatcher with one catch-all endpoint, so any stored event is visible."""
    httpserver.expect_request("/hook").respond_with_data("ok")
    dispatcher = make_dispatcher(storage=storage, workers=0)
    dispatcher.add_endpoint(httpserver.url_for("/hook"), id="ep_catch_all")
    return dispatcher


def assert_rejected(
    hooks: hd.Dispatcher,
    call: Callable[[], object],
    error: type[hd.HookDispatchError],
    *words: str,
) -> pytest.ExceptionInfo[hd.HookDispatchError]:
    """``call`` raises ``error`` mentioning every word, and leaves storage unchanged."""
    before = snapshot(hooks.storage)
    with pytest.raises(error) as info:
        call()
    assert isinstance(info.value, hd.HookDispatchError)
    message = str(info.value)
    for word in words:
        assert word.lower() in message.lower(), message
    assert snapshot(hooks.storage) == before
    return info


# Endpoint URLs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://example.com/hooks", ("https://", "'ftp'")),
        ("file:///etc/passwd", ("https://",)),
        ("javascript:alert(1)", ("https://",)),
        ("example.com/x", ("https://",)),
        ("//example.com/x", ("https://",)),
        ("", ("non-empty", "https://")),
    ],
)
def test_url_must_be_http_or_https(hooks: hd.Dispatcher, url: str, words: tuple[str]) -> None:
    info = assert_rejected(hooks, lambda: hooks.add_endpoint(url), hd.InvalidEndpointError, *words)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://", ("no host",)),
        ("https:///path", ("no host",)),
        ("http://:8080/", ("no host",)),
        ("http://exa mple.com", ("spaces",)),
        ("http://example.com/a\nb", ("control",)),
        ("http://host:99999/", ("malformed", "port")),
        ("http://host:0/", ("port", "65535")),
        ("http://host:abc/", ("malformed",)),
        ("http://[::1/", ("malformed",)),
        ("https://example.com/hooks#frag", ("fragment",)),
        ("https://" + "a" * 64 + ".example.com/", ("not a valid host name", "63")),
        ("https://a..example.com/", ("not a valid host name",)),
    ],
)
def test_malformed_url(hooks: hd.Dispatcher, url: str, words: tuple[str]) -> None:
    assert_rejected(hooks, lambda: hooks.add_endpoint(url), hd.InvalidEndpointError, *words)


@pytest.mark.parametrize(
    "url",
    [
        "https://user:password@example.com/hooks",
        "https://user@example.com/hooks",
        "http://:password@example.com/",
    ],
)
def test_url_with_credentials(hooks: hd.Dispatcher, url: str) -> None:
    info = assert_rejected(
        hooks, lambda: hooks.add_endpoint(url), hd.InvalidEndpointError, "user:password"
    )
    assert "password@" not in str(info.value)


@pytest.mark.parametrize("url", [None, 123, b"https://example.com/"], ids=repr)
def test_url_must_be_a_string(hooks: hd.Dispatcher, url: Any) -> None:
    assert_rejected(hooks, lambda: hooks.add_endpoint(url), hd.InvalidEndpointError, "string")


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"events": []}, ("at least one",)),
        ({"events": "user.created"}, ("list",)),
        ({"events": ["user created"]}, ("not valid",)),
        ({"events": [""]}, ("non-empty",)),
        ({"events": [None]}, ("non-empty",)),
        ({"secret": "short"}, ("16",)),
        ({"secret": 12345678901234567890}, ("string",)),
        ({"secret": "whsec_not base64 at all!!!"}, ("base64",)),
        ({"secret": "x" * 2000}, ("1024",)),
    ],
    ids=repr,
)
def test_bad_endpoint_options(
    hooks: hd.Dispatcher, options: dict[str, Any], words: tuple[str]
) -> None:
    assert_rejected(
        hooks,
        lambda: hooks.add_endpoint("https://example.com/hooks", **options),
        hd.InvalidEndpointError,
        *words,
    )


BAD_IDS = ["", "has space", "a" * 201, "évt_1", "evt_1\n", "evt/1", 123, b"evt_1"]


@pytest.mark.parametrize("bad_id", BAD_IDS, ids=repr)
def test_bad_endpoint_id(hooks: hd.Dispatcher, bad_id: Any) -> None:
    assert_rejected(
        hooks,
        lambda: hooks.add_endpoint("https://example.com/hooks", id=bad_id),
        hd.InvalidInputError,
        "letters, digits",
    )


def test_bad_endpoint_id_is_an_endpoint_error(hooks: hd.Dispatcher) -> None:
    with pytest.raises(hd.InvalidEndpointError):
        hooks.add_endpoint("https://example.com/hooks", id="has space")


def test_duplicate_endpoint_id(hooks: hd.Dispatcher) -> None:
    assert_rejected(
        hooks,
        lambda: hooks.add_endpoint("https://example.com/other", id="ep_catch_all"),
        hd.InvalidInputError,
        "ep_catch_all",
        "already exists",
    )


# Events -------------------------------------------------------------------------------


class Opaque:
    pass


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"tags": {"a", "b"}}, id="set-inside"),
        pytest.param({1, 2}, id="set"),
        pytest.param(b"raw bytes", id="bytes"),
        pytest.param({"blob": b"\x00\x01"}, id="bytes-inside"),
        pytest.param(object(), id="object"),
        pytest.param({"thing": Opaque()}, id="object-inside"),
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="inf"),
        pytest.param(-float("inf"), id="-inf"),
        pytest.param({"a": [1, {"b": float("nan")}]}, id="nan-nested"),
        pytest.param({"when": datetime(2024, 1, 1, tzinfo=UTC)}, id="datetime"),
        pytest.param({(1, 2): "tuple key"}, id="tuple-key"),
    ],
)
def test_data_must_be_json(hooks: hd.Dispatcher, data: Any) -> None:
    info = assert_rejected(
        hooks,
        lambda: hooks.dispatch("user.created", data, id="evt_bad_data"),
        hd.InvalidEventError,
        "JSON",
        "convert",
    )
    assert isinstance(info.value, ValueError)
    assert info.value.__cause__ is None
    with pytest.raises(hd.UnknownEventError):
        hooks.get_event("evt_bad_data")


def test_circular_data(hooks: hd.Dispatcher) -> None:
    data: dict[str, Any] = {}
    data["self"] = data
    assert_rejected(hooks, lambda: hooks.dispatch("user.created", data), hd.InvalidEventError)


def test_data_with_a_lone_surrogate(hooks: hd.Dispatcher) -> None:
    with pytest.raises(hd.InvalidEventError):
        hooks.dispatch("user.created", {"name": "\ud800"})


@pytest.mark.parametrize(
    ("event_type", "words"),
    [
        ("", ("non-empty string", "user.created")),
        (None, ("non-empty string", "NoneType")),
        (123, ("non-empty string", "int")),
        (b"user.created", ("non-empty string", "bytes")),
        (["user.created"], ("non-empty string", "list")),
        ("user created", ("not valid", "letters")),
        ("user.created\n", ("not valid",)),
        ("x" * 201, ("not valid", "200")),
    ],
    ids=repr,
)
def test_bad_event_type(hooks: hd.Dispatcher, event_type: Any, words: tuple[str]) -> None:
    assert_rejected(
        hooks, lambda: hooks.dispatch(event_type, {"a": 1}), hd.InvalidEventError, *words
    )


@pytest.mark.parametrize("bad_id", BAD_IDS, ids=repr)
def test_bad_event_id(hooks: hd.Dispatcher, bad_id: Any) -> None:
    assert_rejected(
        hooks,
        lambda: hooks.dispatch("user.created", {}, id=bad_id),
        hd.InvalidEventError,
        "event id",
        "letters, digits",
        "leave it out",
    )


def test_nothing_was_sent_for_rejected_events(hooks: hd.Dispatcher, httpserver: HTTPServer) -> None:
    rejected: list[tuple[str, Any, str | None]] = [
        ("", {}, None),
        ("user.created", {1, 2}, None),
        ("user.created", {}, "bad id"),
    ]
    for event_type, data, event_id in rejected:
        with pytest.raises(hd.InvalidEventError):
            hooks.dispatch(event_type, data, id=event_id)
    assert httpserver.log == []
    # The rejected id is free: a valid dispatch with it is stored and sent.
    event = hooks.dispatch("user.created", {"ok": True}, id="evt_after_rejects")
    assert hooks.get_event("evt_after_rejects").data == {"ok": True}
    assert len(httpserver.log) == 1
    assert [d.event_id for d in hooks.deliveries()] == [event.id]


# Unknown ids ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get_endpoint", "disable_endpoint", "enable_endpoint"])
def test_unknown_endpoint_id(hooks: hd.Dispatcher, method: str) -> None:
    info = assert_rejected(
        hooks, lambda: getattr(hooks, method)("ep_missing"), hd.UnknownEndpointError, "ep_missing"
    )
    assert isinstance(info.value, hd.NotFoundError)
    assert isinstance(info.value, LookupError)
    assert [e.enabled for e in hooks.endpoints()] == [True]


@pytest.mark.parametrize("method", ["attempts", "get_delivery", "redeliver"])
def test_unknown_delivery_id(hooks: hd.Dispatcher, method: str) -> None:
    info = assert_rejected(
        hooks, lambda: getattr(hooks, method)("dlv_missing"), hd.UnknownDeliveryError, "dlv_missing"
    )
    assert isinstance(info.value, LookupError)


def test_unknown_event_id(hooks: hd.Dispatcher) -> None:
    info = assert_rejected(
        hooks, lambda: hooks.get_event("evt_missing"), hd.UnknownEventError, "evt_missing"
    )
    assert isinstance(info.value, LookupError)
    assert hooks.deliveries(event_id="evt_missing") == []


def test_unknown_delivery_status_filter(hooks: hd.Dispatcher) -> None:
    assert_rejected(hooks, lambda: hooks.deliveries(status="done"), hd.InvalidInputError, "pending")


# Idempotent ids ---------------------------------------------------------------------


def test_same_explicit_id_is_stored_and_sent_once(
    storage: hd.Storage, make_dispatcher: MakeDispatcher, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    hooks = make_dispatcher(storage=storage, workers=0)
    hooks.add_endpoint(httpserver.url_for("/hook"))

    first = hooks.dispatch("invoice.paid", {"invoice_id": "in_1"}, id="evt_once")
    again = hooks.dispatch("invoice.paid", {"invoice_id": "in_CHANGED"}, id="evt_once")

    assert again.id == first.id == "evt_once"
    assert again.data == {"invoice_id": "in_1"}
    assert again.body == first.body
    assert len(httpserver.log) == 1
    [delivery] = hooks.deliveries()
    assert delivery.event_id == "evt_once"
    assert delivery.status is hd.DeliveryStatus.SUCCEEDED
    assert delivery.attempt_count == 1
    if isinstance(storage, hd.SQLiteStorage):
        assert _count_events(storage) == 1


# States -----------------------------------------------------------------------------


def test_dispatch_after_close(storage: hd.Storage, make_dispatcher: MakeDispatcher) -> None:
    hooks = make_dispatcher(storage=storage, workers=0)
    hooks.add_endpoint("https://example.invalid/hooks")
    hooks.close()
    hooks.close()  # idempotent
    before = snapshot(storage)
    with pytest.raises(hd.DispatcherClosedError, match="create a new one"):
        hooks.dispatch("user.created", {})
    with pytest.raises(hd.InvalidStateError):
        hooks.dispatch("user.created", {})
    assert snapshot(storage) == before


def test_dispatch_after_close_in_background_mode(
    storage: hd.Storage, make_dispatcher: MakeDispatcher
) -> None:
    hooks = make_dispatcher(storage=storage, workers=2)
    hooks.close()
    with pytest.raises(hd.DispatcherClosedError):
        hooks.dispatch("user.created", {})


def test_redeliver_pending_delivery(storage: hd.Storage, make_dispatcher: MakeDispatcher) -> None:
    now = datetime.now(UTC)
    endpoint = hd.Endpoint.create("https://example.invalid/hooks", now=now)
    storage.add_endpoint(endpoint)
    event = hd.Event.create("user.created", {}, now=now)
    delivery = hd.Delivery.create(event, endpoint, now=now)
    assert storage.add_event(event, [delivery])
    hooks = make_dispatcher(storage=storage, workers=0)

    before = snapshot(storage)
    with pytest.raises(hd.InvalidStateError, match="pending") as info:
        hooks.redeliver(delivery.id)
    assert not isinstance(info.value, hd.DispatcherClosedError)
    assert delivery.id in str(info.value)
    assert snapshot(storage) == before
    assert storage.list_attempts(delivery.id) == []
    if isinstance(storage, hd.MemoryStorage):
        with pytest.warns(ResourceWarning, match="1 deliveries are still pending"):
            hooks.close()


def test_redeliver_after_close(
    storage: hd.Storage, make_dispatcher: MakeDispatcher, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    hooks = make_dispatcher(storage=storage, workers=0)
    hooks.add_endpoint(httpserver.url_for("/hook"))
    event = hooks.dispatch("user.created", {})
    [delivery] = hooks.deliveries(event_id=event.id)
    hooks.close()
    with pytest.raises(hd.DispatcherClosedError):
        hooks.redeliver(delivery.id)
    assert len(storage.list_deliveries()) == 1


def test_reads_after_close_use_the_open_storage(
    request: pytest.FixtureRequest,
    storage: hd.Storage,
    make_dispatcher: MakeDispatcher,
    driver: str,
) -> None:
    # Closing a dispatcher leaves the storage open ("it is yours to close"), so reading
    # through the dispatcher either still works or says it is closed: never a raw error.
    hooks = make_dispatcher(storage=storage, workers=0)
    hooks.add_endpoint("https://example.invalid/hooks", id="ep_1")
    hooks.close()
    for read in (hooks.endpoints, hooks.deliveries, lambda: hooks.get_endpoint("ep_1")):
        with contextlib.suppress(hd.HookDispatchError):
            read()


@pytest.mark.parametrize(
    "not_a_storage",
    [None, "webhooks.db", Path("webhooks.db"), object(), {}],
    ids=["none", "str", "path", "object", "dict"],
)
def test_dispatcher_needs_a_storage(not_a_storage: Any) -> None:
    with pytest.raises(hd.InvalidInputError, match="MemoryStorage"):
        hd.Dispatcher(storage=not_a_storage, workers=0)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"workers": -1}, ("workers",)),
        ({"timeout": 0}, ("timeout", "positive")),
        ({"timeout": -5}, ("timeout",)),
        ({"lease": 5, "timeout": 5}, ("lease", "longer")),
        ({"poll_interval": 0}, ("poll_interval",)),
    ],
    ids=repr,
)
def test_dispatcher_rejects_bad_options(options: dict[str, Any], words: tuple[str]) -> None:
    with pytest.raises(hd.InvalidInputError) as info:
        hd.Dispatcher(storage=hd.MemoryStorage(), **options)
    for word in words:
        assert word in str(info.value)


# SQLite specifics ---------------------------------------------------------------------


@pytest.mark.parametrize("path", [":memory:", "", "file:hooks.db?mode=memory"])
def test_sqlite_needs_a_file_path(path: str) -> None:
    with pytest.raises(hd.InvalidInputError, match="MemoryStorage"):
        hd.SQLiteStorage(path)


def test_sqlite_rejects_bad_synchronous(tmp_path: Path) -> None:
    with pytest.raises(hd.InvalidInputError, match="NORMAL"):
        hd.SQLiteStorage(tmp_path / "hooks.db", synchronous="OFF")  # type: ignore[arg-type]


def test_sqlite_file_from_a_newer_version(tmp_path: Path) -> None:
    path = tmp_path / "hooks.db"
    hd.SQLiteStorage(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 999")
    conn.close()
    with pytest.raises(hd.StorageError, match="upgrade") as info:
        hd.SQLiteStorage(path)
    assert "999" in str(info.value)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 999
    conn.close()


def test_sqlite_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "hooks.db"
    path.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(hd.StorageError) as info:
        hd.SQLiteStorage(path)
    assert not isinstance(info.value, sqlite3.Error)
    assert isinstance(info.value.__cause__, sqlite3.Error)


def test_sqlite_row_with_unknown_status(tmp_path: Path) -> None:
    path = tmp_path / "hooks.db"
    storage = hd.SQLiteStorage(path)
    try:
        now = datetime.now(UTC)
        endpoint = hd.Endpoint.create("https://example.invalid/hooks", now=now)
        storage.add_endpoint(endpoint)
        event = hd.Event.create("user.created", {}, now=now)
        delivery = hd.Delivery.create(event, endpoint, now=now)
        storage.add_event(event, [delivery])
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE deliveries SET status = 'paused' WHERE id = ?", (delivery.id,))
        conn.close()

        with pytest.raises(hd.StorageError, match="upgrade") as info:
            storage.get_delivery(delivery.id)
        assert "paused" in str(info.value)
        assert delivery.id in str(info.value)
        with pytest.raises(hd.StorageError):
            storage.list_deliveries()
        with pytest.raises(hd.StorageError):
            storage.list_attempts(delivery.id)
        with hd.Dispatcher(storage=storage, workers=0) as hooks:
            with pytest.raises(hd.StorageError):
                hooks.get_delivery(delivery.id)
    finally:
        storage.close()


def test_sqlite_after_close(tmp_path: Path) -> None:
    storage = hd.SQLiteStorage(tmp_path / "hooks.db")
    storage.close()
    with pytest.raises(hd.StorageError, match="closed"):
        storage.list_endpoints()


@pytest.mark.parametrize(
    "moments",
    [
        # Microseconds apart across a second's end, and back in time (a clock step).
        ["15:41:23.999999", "15:41:24.000000", "15:41:24.999999", "15:41:23.500000"],
        # The same second of another minute, hour and day: the cache must not match.
        ["15:41:23.100000", "15:42:23.100000", "16:41:23.100000", "15:41:23.200000"],
    ],
)
def test_created_at_is_each_events_own_second(moments: list[str]) -> None:
    for moment in moments:
        now = datetime.fromisoformat(f"2024-06-30T{moment}+00:00")
        event = hd.Event.create("user.created", {}, now=now)
        assert event.created_at == now.replace(microsecond=0)
        assert f'"created_at":"2024-06-30T{moment[:8]}Z"'.encode() in event.body
    later_day = datetime(2024, 7, 1, 15, 41, 23, 100000, tzinfo=UTC)
    assert hd.Event.create("user.created", {}, now=later_day).created_at.day == 1
