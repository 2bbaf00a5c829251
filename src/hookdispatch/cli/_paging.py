"""Listings a page at a time: the cursor options, one page read, the hint to the next.

The listing commands read one keyset page through the storage contract
(``Storage.find_deliveries`` and ``Storage.find_endpoints``), never a whole table:
they ask for one row more than they show, and when it exists they print how to get
the next page, a cursor made of the last shown row's ``(created_at, id)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
from attrs import evolve

import hookdispatch as hd

from .._listing import Key, decode_cursor, encode_cursor

__all__ = [
    "count_deliveries",
    "cursor_option",
    "delivery_page",
    "endpoint_page",
    "more_hint",
]

F = TypeVar("F", bound=Callable[..., Any])

_COUNT_PAGE = 1000


def _parse_cursor(ctx: click.Context, param: click.Parameter, value: str | None) -> Key | None:
    """A cursor printed under a page, as the key it holds; refused otherwise."""
    if value is None:
        return None
    try:
        return decode_cursor(value.strip())
    except hd.InvalidInputError:
        raise click.BadParameter(
            "not a cursor that hookdispatch printed: copy it, as it is, from the line"
            " under the previous page"
        ) from None


def cursor_option(name: str, help: str) -> Callable[[F], F]:
    """``name CURSOR``: where a page starts. The command receives the decoded key as
    ``cursor``, or ``None``."""
    return click.option(name, "cursor", metavar="CURSOR", callback=_parse_cursor, help=help)


def delivery_page(storage: hd.Storage, query: hd.DeliveryQuery) -> hd.Page[hd.Delivery]:
    """One page of deliveries, ``query.limit`` rows at most, and the cursor to the next."""
    rows = storage.find_deliveries(evolve(query, limit=query.limit + 1))
    return _page(rows, query.limit)


def endpoint_page(storage: hd.Storage, query: hd.EndpointQuery) -> hd.Page[hd.Endpoint]:
    """One page of endpoints, ``query.limit`` rows at most, and the cursor to the next."""
    rows = storage.find_endpoints(evolve(query, limit=query.limit + 1))
    return _page(rows, query.limit)


_Row = TypeVar("_Row", hd.Delivery, hd.Endpoint)


def _page(rows: list[_Row], limit: int) -> hd.Page[_Row]:
    if len(rows) <= limit:
        return hd.Page(rows, None)
    last = rows[limit - 1]
    return hd.Page(rows[:limit], encode_cursor((last.created_at, last.id)))


def count_deliveries(storage: hd.Storage, query: hd.DeliveryQuery, *, cap: int) -> int:
    """How many deliveries match ``query`` (its ``limit`` and ``after`` aside), counted a
    page at a time and no further than ``cap``: ``cap`` means at least that many."""
    query = evolve(query, after=None, newest_first=False, limit=_COUNT_PAGE)
    total = 0
    while total < cap:
        rows = storage.find_deliveries(query)
        total += len(rows)
        if len(rows) < _COUNT_PAGE:
            break
        query = evolve(query, after=(rows[-1].created_at, rows[-1].id))
    return min(total, cap)


def more_hint(lead: str, option: str, cursor: str) -> str:
    """The line under a page that is not the last: how to see the next one."""
    return f"({lead}: run the same command with {option} {cursor})"
