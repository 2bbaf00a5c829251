"""Listings: filters, keyset pages, bounded by default; both drivers, memory and SQLite.

(The storage half, PostgreSQL included, is in the conformance suite.)
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import hookdispatch as hd
from hookdispatch._listing import decode_cursor, encode_cursor

from conftest import FakeTime
from stubs import recording


def walk(fetch: Callable[..., Any], **filters: Any) -> list[Any]:
    """Every row, page after page."""
    rows: list[Any] = []
    after = None
    for _ in range(1000):
        page = fetch(after=after, **filters)
        assert isinstance(page, hd.Page)
        rows.extend(page)
        if page.next_cursor is None:
            return rows
        after = page.next_cursor
    raise AssertionError("no last page")


def test_deliveries_are_listed_a_bounded_page_at_a_time(
    storage: hd.Storage, make_dispatcher: Callable[..., Any], driver: str, fake_time: FakeTime
) -> None:
    hooks = make_dispatcher(
        storage=storage, workers=0, transport=recording(driver), clock=fake_time.clock
    )
    a = hooks.add_endpoint("https://a.example/hooks", tenant="acct_a")
    b = hooks.add_endpoint("https://b.example/hooks", tenant="acct_b")
    start = fake_time.now
    for n in range(130):
        hooks.dispatch("user.created" if n % 2 else "invoice.paid", {"n": n}, tenant="acct_a")
        if n % 10 == 0:
            hooks.dispatch("user.created", {"n": n}, tenant="acct_b")
        fake_time.now += timedelta(seconds=1)

    first = hooks.deliveries()
    assert len(first) == hd.DEFAULT_PAGE_SIZE  # never everything by default
    assert first.next_cursor is not None
    everything = walk(hooks.deliveries, limit=7)
    assert len(everything) == 143
    assert everything[:100] == first
    assert everything == sorted(everything, key=lambda d: (d.created_at, d.id))
    assert walk(hooks.deliveries, newest_first=True, limit=1000) == everything[::-1]

    mine = walk(hooks.deliveries, tenant="acct_a", limit=50)
    assert len(mine) == 130
    assert {d.endpoint_id for d in mine} == {a.id}
    assert [d.endpoint_id for d in walk(hooks.deliveries, tenant="acct_b")] == [b.id] * 13
    users = walk(hooks.deliveries, tenant="acct_a", event_type="user.created")
    assert len(users) == 65
    assert all(d.event_type == "user.created" for d in users)
    window = walk(
        hooks.deliveries,
        tenant="acct_a",
        since=start + timedelta(seconds=10),
        until=start + timedelta(seconds=20),
    )
    assert [d.created_at for d in window] == [start + timedelta(seconds=s) for s in range(10, 20)]
    assert walk(hooks.deliveries, status="pending") == []
    assert len(walk(hooks.deliveries, status="succeeded", endpoint_id=b.id)) == 13


def test_endpoints_are_listed_a_page_at_a_time(
    storage: hd.Storage, make_dispatcher: Callable[..., Any]
) -> None:
    hooks = make_dispatcher(storage=storage, workers=0)
    made = [hooks.add_endpoint(f"https://e{n}.example/hooks", tenant="acct_a") for n in range(5)]
    hooks.add_endpoint("https://other.example/hooks", tenant="acct_b")
    page = hooks.endpoints(tenant="acct_a", limit=2)
    assert page == made[:2]
    assert page.next_cursor is not None
    assert walk(hooks.endpoints, tenant="acct_a", limit=2) == made
    assert len(hooks.endpoints()) == 6
    assert hooks.endpoints().next_cursor is None


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"limit": 0}, "limit must be a whole number from 1 to 1000"),
        ({"limit": 1001}, "limit must be a whole number from 1 to 1000"),
        ({"limit": True}, "limit must be"),
        ({"after": "not-a-cursor"}, "after is not a cursor"),
        ({"after": ""}, "after must be the next_cursor"),
        ({"since": datetime(2024, 1, 1)}, "since must be a timezone-aware datetime"),
        ({"until": "yesterday"}, "until must be a timezone-aware datetime"),
        ({"status": "done"}, "unknown delivery status"),
        ({"tenant": 42}, "tenant must be a string"),
    ],
)
def test_bad_listing_arguments_are_refused_clearly(
    make_dispatcher: Callable[..., Any], arguments: dict[str, Any], message: str
) -> None:
    hooks = make_dispatcher(storage=hd.MemoryStorage(), workers=0)
    with pytest.raises(hd.InvalidInputError, match=message):
        hooks.deliveries(**arguments)


def test_a_cursor_is_opaque_but_round_trips() -> None:
    key = (datetime(2024, 6, 30, 15, 41, 23, 123456, tzinfo=UTC), "dlv_0190a3b4|x")
    cursor = encode_cursor(key)
    assert "dlv_" not in cursor
    assert decode_cursor(cursor) == key
    other_version = base64.urlsafe_b64encode(b"2|2024-06-30T15:41:23+00:00|dlv_1").decode()
    nul = encode_cursor((key[0], "dlv_\0"))
    for broken in ("!!!", other_version, cursor.lower(), nul):
        with pytest.raises(hd.InvalidInputError, match="not a cursor"):
            decode_cursor(broken)
