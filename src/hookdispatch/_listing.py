"""Listings: the filters of a query, one page of results, and the cursor to the next.

Listings page by *keyset*, never by offset: a page ends with the ``(created_at, id)``
of its last row, and the next page starts strictly after it, through an index whose
order is that same key. A page costs the same on the first page and on the
millionth row, and rows added or deleted meanwhile never shift a page (no row is
shown twice or skipped because another arrived). The cursor handed to callers is
that key, opaque, so that its form can change.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Generic, TypeVar

from attrs import frozen

from ._models import Delivery, DeliveryStatus, Endpoint
from .exceptions import InvalidInputError

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "DeliveryQuery",
    "EndpointQuery",
    "Page",
    "ReplayLinks",
    "check_page_size",
    "decode_cursor",
    "encode_cursor",
    "page_of",
    "replay_links",
]

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 100
"""Rows a listing returns when no ``limit`` is given."""
MAX_PAGE_SIZE = 1000
"""The most rows one page may hold: ask for the next page for more."""

Key = tuple[datetime, str]
"""A row's place in a listing: its ``created_at``, then its id."""


@frozen(kw_only=True)
class DeliveryQuery:
    """Which deliveries to list, in which order, from where: every given filter holds.

    ``since`` and ``until`` bound ``created_at`` (``since`` included, ``until``
    not). ``after`` is the key of the last row of the previous page: the page starts
    strictly after it in the listing's order, oldest first (``created_at``, then id)
    or, with ``newest_first``, the reverse. ``limit`` rows at most.
    """

    tenant: str | None = None
    event_id: str | None = None
    endpoint_id: str | None = None
    event_type: str | None = None
    status: DeliveryStatus | None = None
    since: datetime | None = None
    until: datetime | None = None
    after: Key | None = None
    newest_first: bool = False
    limit: int = DEFAULT_PAGE_SIZE

    def matches(self, delivery: Delivery) -> bool:
        """Whether ``delivery`` passes every filter and lies beyond ``after``."""
        created = delivery.created_at
        return (
            (self.tenant is None or delivery.tenant == self.tenant)
            and (self.event_id is None or delivery.event_id == self.event_id)
            and (self.endpoint_id is None or delivery.endpoint_id == self.endpoint_id)
            and (self.event_type is None or delivery.event_type == self.event_type)
            and (self.status is None or delivery.status == self.status)
            and (self.since is None or created >= self.since)
            and (self.until is None or created < self.until)
            and _beyond((created, delivery.id), self.after, self.newest_first)
        )

    def select(self, deliveries: Iterable[Delivery]) -> list[Delivery]:
        """The page, from deliveries in any order: filtered, sorted, cut to ``limit``.

        For backends without an index of their own (MemoryStorage, and the default
        ``Storage.find_deliveries``)."""
        found = sorted(
            (d for d in deliveries if self.matches(d)),
            key=lambda d: (d.created_at, d.id),
            reverse=self.newest_first,
        )
        return found[: self.limit]


@frozen(kw_only=True)
class EndpointQuery:
    """Which endpoints to list: ``tenant``'s (every tenant's for ``None``), oldest first
    (``created_at``, then id), strictly after the key ``after``, ``limit`` at most."""

    tenant: str | None = None
    after: Key | None = None
    limit: int = DEFAULT_PAGE_SIZE

    def select(self, endpoints: Iterable[Endpoint]) -> list[Endpoint]:
        """The page, from endpoints in any order (see :meth:`DeliveryQuery.select`)."""
        found = sorted(
            (
                e
                for e in endpoints
                if (self.tenant is None or e.tenant == self.tenant)
                and _beyond((e.created_at, e.id), self.after, newest_first=False)
            ),
            key=lambda e: (e.created_at, e.id),
        )
        return found[: self.limit]


@frozen(kw_only=True)
class ReplayLinks:
    """Where a delivery stands among the sends of its event to its endpoint.

    Every delivery of one event to one endpoint after the first is a replay of the
    one before it (``redeliver``), so the links need nothing stored: ``replay_of`` is
    the delivery of the same event and endpoint made just before this one (``None``
    for the first), ``replayed_by`` the one made just after (``None`` when none was):
    a failed delivery with a ``replayed_by`` is not an open failure any more.
    """

    replay_of: str | None
    replayed_by: str | None


def replay_links(delivery: Delivery, sends: Iterable[Delivery]) -> ReplayLinks:
    """The links of ``delivery`` among ``sends``, the deliveries of its event to its
    endpoint (any order)."""
    ordered = sorted(sends, key=lambda d: (d.created_at, d.id))
    ids = [d.id for d in ordered]
    at = ids.index(delivery.id)
    return ReplayLinks(
        replay_of=ids[at - 1] if at > 0 else None,
        replayed_by=ids[at + 1] if at + 1 < len(ids) else None,
    )


def _beyond(key: Key, after: Key | None, newest_first: bool) -> bool:
    if after is None:
        return True
    return key < after if newest_first else key > after


class Page(list[T], Generic[T]):
    """One page of a listing: a list of rows, plus ``next_cursor``.

    ``next_cursor`` is ``None`` on the last page; otherwise pass it back as
    ``after=`` (with the same filters) for the page that follows.
    """

    __slots__ = ("next_cursor",)

    def __init__(self, rows: Iterable[T], next_cursor: str | None) -> None:
        super().__init__(rows)
        self.next_cursor = next_cursor

    def __repr__(self) -> str:
        return f"Page({list.__repr__(self)}, next_cursor={self.next_cursor!r})"


def page_of(rows: list[T], limit: int, key: Key | None) -> Page[T]:
    """The page of ``rows``, fetched with ``limit + 1``: the extra row, if there is
    one, only says that another page follows, whose cursor is the last shown row's
    ``key`` (the caller's, since rows are of several kinds)."""
    if len(rows) <= limit:
        return Page(rows, None)
    assert key is not None
    return Page(rows[:limit], encode_cursor(key))


def check_page_size(limit: object) -> int:
    """``limit`` if it is a whole number from 1 to :data:`MAX_PAGE_SIZE`, else
    InvalidInputError."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInputError(
            f"limit must be a whole number from 1 to {MAX_PAGE_SIZE}, not {limit!r};"
            " ask for the next page (after=page.next_cursor) for more"
        )
    return limit


_CURSOR_VERSION = "1"


def encode_cursor(key: Key) -> str:
    """The opaque cursor of a row's key."""
    created, row_id = key
    text = f"{_CURSOR_VERSION}|{created.astimezone(UTC).isoformat()}|{row_id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: object) -> Key:
    """The key in a cursor from :func:`encode_cursor`; InvalidInputError for anything
    else (a cursor is not to be made by hand)."""
    if not isinstance(cursor, str) or not 0 < len(cursor) <= 512:
        raise InvalidInputError("after must be the next_cursor of a page, as a string")
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, created, row_id = text.split("|", 2)
        moment = datetime.fromisoformat(created)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        version, moment, row_id = "", None, ""
    if (
        version != _CURSOR_VERSION
        or moment is None
        or moment.tzinfo is None
        or not row_id
        or "\0" in row_id  # no id holds one; PostgreSQL would order it unlike the others
    ):
        raise InvalidInputError(
            "after is not a cursor this version of hookdispatch made; pass the"
            " next_cursor of a page as it is"
        )
    return moment.astimezone(UTC), row_id
