"""dispatch_many's fast path keeps every behaviour of the event-by-event one.

The batch path (``store_events``) checks items with Event.create's checks without
calling it, writes the envelope around the encoded data, draws ids from a batch
supply (``new_ids``), pauses the garbage collector, and the backends store a batch
their own fast way (SQLite: many rows per statement; PostgreSQL: COPY). These tests
hold each of those to what the straightforward code did: the same bytes, the same
errors, the same rows, the same answers for ids stored already.
"""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import hookdispatch as hd
from hookdispatch._models import MAX_DATA_DEPTH, new_delivery, new_id, new_ids
from hookdispatch._operations import store_event, store_events
from pg_fixtures import new_schema, postgres_admin_dsn, postgres_dsn  # noqa: F401 - fixtures

NOW = datetime(2024, 6, 30, 15, 41, 23, 654321, tzinfo=UTC)
ID = re.compile(r"(evt|dlv)_[0-9a-f]{28}")
REFERENCE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[hd.Storage]:
    """Each backend, fresh: the three write a batch three different ways."""
    store: hd.Storage
    if request.param == "memory":
        store = hd.MemoryStorage()
    elif request.param == "sqlite":
        store = hd.SQLiteStorage(tmp_path / "hooks.db")
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        store = hd.PostgresStorage(dsn, schema=new_schema())
    yield store
    store.close()


def envelope(event: hd.Event) -> bytes:
    """The body as Event.create always encoded it: the whole document at once."""
    document = {
        "id": event.id,
        "event": event.type,
        "created_at": event.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": event.data,
    }
    return REFERENCE.encode(document).encode()


def not_json(data: Any) -> str:
    """The message Event.create always gave for ``data`` that does not encode (in an
    event ``x`` of type ``a.b`` made at NOW)."""
    document = {"id": "x", "event": "a.b", "created_at": "2024-06-30T15:41:23Z", "data": data}
    try:
        REFERENCE.encode(document).encode()
    except (TypeError, ValueError) as exc:
        return (
            f"event data is not JSON: {exc}. Pass dicts, lists, str, int, finite float,"
            " bool or None (convert datetimes, decimals and sets first)"
        )
    raise AssertionError("the data encodes")


def nested(depth: int) -> Any:
    data: Any = []
    for _ in range(depth - 1):
        data = [data]
    return data


def circular() -> dict[str, Any]:
    data: dict[str, Any] = {"a": 1}
    data["self"] = data
    return data


# The body -------------------------------------------------------------------------

ENCODABLE = [
    {"user_id": "user_78451", "plan": "Pro"},
    {},
    [],
    None,
    True,
    0,
    -12345678901234567890,
    3.25,
    1e-7,
    "plain",
    'quotes " and \\ backslashes, \n newlines, \t tabs, \x00 NUL',
    {"ünïcødé": "日本語 ✓ 😀", "emoji": ["🎉"]},
    {"nested": {"list": [1, 2.5, None, False, {"deep": [[[]]]}]}, "": ""},
    {7: "int key", 2.5: "float key", True: "bool key", None: "none key"},
    ("tuple", "is", "a", "list"),
    nested(MAX_DATA_DEPTH),
]


@pytest.mark.parametrize("data", ENCODABLE, ids=range(len(ENCODABLE)))
def test_the_body_is_the_document_encoded_whole(data: Any) -> None:
    event = hd.Event.create("user.created", data, now=NOW, id="evt_1")
    assert event.body == envelope(event)
    [(batched, _)] = store_events(hd.MemoryStorage(), [("user.created", data, "evt_1")], now=NOW)
    assert batched.body == event.body


UNENCODABLE = [
    {1, 2},
    b"bytes",
    object(),
    float("nan"),
    {"inf": float("inf")},
    {(1, 2): "tuple key"},
    circular(),
    ["\ud800 a lone surrogate"],
    {"x": datetime(2024, 1, 1, tzinfo=UTC)},
]


@pytest.mark.parametrize("data", UNENCODABLE, ids=range(len(UNENCODABLE)))
def test_data_that_does_not_encode_fails_with_the_message_it_always_had(data: Any) -> None:
    with pytest.raises(hd.InvalidEventError) as raised:
        hd.Event.create("a.b", data, now=NOW, id="x")
    assert str(raised.value) == not_json(data)
    with pytest.raises(hd.InvalidEventError) as in_batch:
        store_events(hd.MemoryStorage(), [("a.b", {}), ("a.b", data, "x")], now=NOW)
    assert str(in_batch.value) == f"item 1 of the batch: {not_json(data)}"


def test_the_lone_surrogate_is_placed_in_the_whole_body() -> None:
    # The position UnicodeEncodeError reports is in the body, envelope included.
    before = '{"id":"x","event":"a.b","created_at":"2024-06-30T15:41:23Z","data":"'
    with pytest.raises(hd.InvalidEventError, match=f"in position {len(before)}:"):
        hd.Event.create("a.b", "\ud800", now=NOW, id="x")


@pytest.mark.parametrize("data", [nested(MAX_DATA_DEPTH + 1), nested(5000)])
def test_data_nested_too_deeply_is_refused(data: Any) -> None:
    with pytest.raises(hd.InvalidEventError, match="nested too deeply"):
        hd.Event.create("a.b", data, now=NOW)
    with pytest.raises(hd.InvalidEventError, match=r"^item 0 of the batch: event data is nested"):
        store_events(hd.MemoryStorage(), [("a.b", data)], now=NOW)


def test_a_body_over_the_limit_is_refused_with_its_size() -> None:
    data = {"blob": "x" * 100}
    size = len(hd.Event.create("a.b", data, now=NOW, id="x").body)
    message = f"event body is {size:,} bytes, over the {size - 1:,}-byte limit"
    with pytest.raises(hd.InvalidEventError, match=message):
        hd.Event.create("a.b", data, now=NOW, id="x", max_bytes=size - 1)
    with pytest.raises(hd.InvalidEventError, match=f"item 0 of the batch: {message}"):
        store_events(hd.MemoryStorage(), [("a.b", data, "x")], now=NOW, max_bytes=size - 1)
    assert hd.Event.create("a.b", data, now=NOW, id="x", max_bytes=size).body


# Checks ---------------------------------------------------------------------------


def event_create_error(item: tuple[Any, ...], **options: Any) -> str:
    with pytest.raises(hd.InvalidInputError) as raised:
        hd.Event.create(
            item[0], item[1], now=NOW, id=item[2] if len(item) == 3 else None, **options
        )
    return str(raised.value)


BAD_ITEMS = [
    ("", {}),
    (None, {}),
    (42, {}),
    ("spaces are not allowed", {}),
    ("x" * 201, {}),
    ("a.b", {}, "bad id!"),
    ("a.b", {}, 17),
    ("a.b", {}, ""),
    ("a.b", {1, 2}),
]


@pytest.mark.parametrize("bad", BAD_ITEMS, ids=range(len(BAD_ITEMS)))
def test_a_bad_item_fails_as_event_create_fails_and_nothing_is_stored(
    backend: hd.Storage, bad: tuple[Any, ...]
) -> None:
    backend.add_endpoint(hd.Endpoint.create("https://example.com/hook", now=NOW))
    items: list[Any] = [("a.b", {"n": 1}), ("a.b", {"n": 2}), bad, ("a.b", {"n": 3})]
    with pytest.raises(hd.InvalidEventError) as raised:
        store_events(backend, items, now=NOW)
    assert str(raised.value) == f"item 2 of the batch: {event_create_error(bad)}"
    assert backend.list_deliveries() == []


def test_a_type_is_checked_for_every_item_that_is_another_object() -> None:
    good = "user.created"
    bad = "user created"
    items: list[Any] = [(good, {}), (good, {}), (bad, {}), (good, {})]
    with pytest.raises(hd.InvalidEventError, match=r"^item 2 of the batch: event type"):
        store_events(hd.MemoryStorage(), items, now=NOW)


def test_a_bad_tenant_fails_as_event_create_fails() -> None:
    message = event_create_error(("a.b", {}), tenant="not a tenant")
    with pytest.raises(hd.InvalidInputError) as raised:
        store_events(hd.MemoryStorage(), [("a.b", {})], now=NOW, tenant="not a tenant")
    assert str(raised.value) == message
    assert not isinstance(raised.value, hd.InvalidEventError)
    # Event.create checks the type first: so does the batch, for its first item.
    with pytest.raises(hd.InvalidEventError, match=r"^item 0 of the batch: event type"):
        store_events(hd.MemoryStorage(), [("", {})], now=NOW, tenant="not a tenant")


# Ids ------------------------------------------------------------------------------


def test_batch_ids_look_like_and_sort_like_single_ones() -> None:
    single = new_id("evt")
    supply = new_ids("evt")
    batch = [next(supply) for _ in range(2000)]
    after = new_id("evt")
    assert all(ID.fullmatch(i) for i in [single, *batch, after])
    assert len(set(batch)) == len(batch)
    assert [single, *batch, after] == sorted([single, *batch, after])


# What is stored -------------------------------------------------------------------


def endpoints(storage: hd.Storage) -> dict[str, hd.Endpoint]:
    made = {
        "all": hd.Endpoint.create("https://example.com/all", now=NOW, events=["*"]),
        "users": hd.Endpoint.create(
            "https://example.com/users", now=NOW + timedelta(seconds=1), events=["user.*"]
        ),
        "invoices": hd.Endpoint.create(
            "https://example.com/inv", now=NOW + timedelta(seconds=2), events=["invoice.paid"]
        ),
        "other tenant": hd.Endpoint.create("https://example.com/b", now=NOW, tenant="acct_b"),
    }
    for endpoint in made.values():
        storage.add_endpoint(endpoint)
    return made


def shape(delivery: hd.Delivery) -> tuple[Any, ...]:
    """Everything of a delivery but its own id and its event's."""
    return (
        delivery.endpoint_id,
        delivery.status,
        delivery.attempt_count,
        delivery.next_attempt_at,
        delivery.last_error,
        delivery.created_at,
        delivery.updated_at,
        delivery.tenant,
        delivery.event_type,
    )


def test_a_batch_stores_what_dispatching_each_event_stores(backend: hd.Storage) -> None:
    endpoints(backend)
    types = ["user.created", "invoice.paid", "user.profile.updated", "order.shipped"]
    items = [(types[n % len(types)], {"n": n}) for n in range(300)]

    results = store_events(backend, items, now=NOW)
    singles = [store_event(backend, t, data, id=None, now=NOW)[0] for t, data in items[:4]]

    assert [stored for _, stored in results] == [True] * len(items)
    for (event, _), (event_type, data) in zip(results, items, strict=True):
        assert ID.fullmatch(event.id)
        assert (event.type, event.data, event.tenant) == (event_type, data, "default")
        assert event.created_at == NOW.replace(microsecond=0)
        assert backend.get_event(event.id) == event
        assert backend.get_event(event.id).body == event.body == envelope(event)
    for n, single in enumerate(singles):
        expected = sorted(shape(d) for d in backend.list_deliveries(event_id=single.id))
        batched = backend.list_deliveries(event_id=results[n][0].id)
        assert sorted(shape(d) for d in batched) == expected
        assert all(ID.fullmatch(d.id) for d in batched)
    ids = [d.id for d in backend.list_deliveries(limit=10_000)]
    fan_out = {"user.created": 2, "invoice.paid": 2, "user.profile.updated": 2, "order.shipped": 1}
    assert len(ids) == len(set(ids)) == sum(fan_out[t] for t, _ in [*items, *items[:4]])


def test_ids_stored_already_or_twice_in_the_batch_are_stored_once(backend: hd.Storage) -> None:
    endpoints(backend)
    first = store_events(
        backend,
        [("user.created", {"n": 1}, "x1"), ("user.created", {"n": 2}, "x1"), ("a.b", {}, "x2")],
        now=NOW,
    )
    assert [(e.id, e.data, stored) for e, stored in first] == [
        ("x1", {"n": 1}, True),
        ("x1", {"n": 2}, False),
        ("x2", {}, True),
    ]
    later = NOW + timedelta(minutes=5)
    second = store_events(
        backend, [("a.b", {"n": 9}, "x2"), ("a.b", {"n": 3}, "x3"), ("a.b", {}, None)], now=later
    )
    assert [stored for _, stored in second] == [False, True, True]
    assert backend.get_event("x2").data == {}  # the stored one, untouched
    assert backend.get_event("x3").data == {"n": 3}
    counts = {e: len(backend.list_deliveries(event_id=e)) for e in ("x1", "x2", "x3")}
    assert counts == {"x1": 2, "x2": 1, "x3": 1}
    assert len(backend.list_deliveries(limit=1000)) == 2 + 1 + 1 + 1


@pytest.mark.parametrize("count", [1, 2, 3, 127, 128, 129, 249, 250, 333, 1000, 1025])
def test_sqlite_stores_every_size_of_batch(tmp_path: Path, count: int) -> None:
    storage = hd.SQLiteStorage(tmp_path / "hooks.db")
    try:
        endpoints(storage)
        results = store_events(storage, [("user.created", {"n": n}) for n in range(count)], now=NOW)
        assert all(stored for _, stored in results)
        deliveries = storage.list_deliveries(limit=10_000)
        assert len(deliveries) == 2 * count
        assert {d.event_id for d in deliveries} == {e.id for e, _ in results}
        assert storage.get_event(results[-1][0].id) == results[-1][0]
    finally:
        storage.close()


def test_add_events_stores_deliveries_of_any_shape_as_given(backend: hd.Storage) -> None:
    made = endpoints(backend)
    event = hd.Event.create("user.created", {}, now=NOW)
    fresh = new_delivery(event, made["all"].id, NOW)
    later = NOW + timedelta(seconds=30)
    odd = hd.Delivery(
        id=new_id("dlv"),
        event_id=event.id,
        endpoint_id=made["users"].id,
        status=hd.DeliveryStatus.PENDING,
        attempt_count=2,
        next_attempt_at=later,
        last_error="HTTP 503",
        created_at=NOW,
        updated_at=later,
        tenant="default",
        event_type="user.created",
    )
    other = hd.Event.create("invoice.paid", {}, now=later)
    its = new_delivery(other, made["invoices"].id, later)

    assert backend.add_events([(event, [fresh, odd]), (other, [its])]) == [True, True]

    for delivery in (fresh, odd, its):
        assert backend.get_delivery(delivery.id) == delivery
    assert backend.get_event(other.id) == other


def test_a_batch_with_an_unknown_endpoint_stores_nothing(backend: hd.Storage) -> None:
    made = endpoints(backend)
    events = [hd.Event.create("user.created", {"n": n}, now=NOW) for n in range(3)]
    batch = [(e, [new_delivery(e, made["all"].id, NOW)]) for e in events]
    batch[-1] = (events[-1], [new_delivery(events[-1], "ep_nobody", NOW)])
    with pytest.raises((hd.UnknownEndpointError, hd.StorageError)):
        backend.add_events(batch)
    if not isinstance(backend, hd.MemoryStorage):  # SQL: one transaction for the batch
        assert backend.list_deliveries() == []
        for event in events:
            with pytest.raises(hd.UnknownEventError):
                backend.get_event(event.id)


# The garbage collector ------------------------------------------------------------


def test_the_collector_runs_again_after_a_batch() -> None:
    assert gc.isenabled()
    store_events(hd.MemoryStorage(), [("a.b", {})] * 10, now=NOW)
    assert gc.isenabled()
    with pytest.raises(hd.InvalidEventError):
        store_events(hd.MemoryStorage(), [("a.b", {}), ("", {})], now=NOW)
    assert gc.isenabled()


def test_a_collector_the_application_turned_off_stays_off() -> None:
    gc.disable()
    try:
        store_events(hd.MemoryStorage(), [("a.b", {})] * 10, now=NOW)
        assert not gc.isenabled()
    finally:
        gc.enable()
