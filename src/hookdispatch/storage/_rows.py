"""Records from database rows, shared by the SQLite and PostgreSQL backends.

Both store a delivery and an attempt in the same column order; they differ only
in how a timestamp comes back (``moment``: a float for SQLite, a ``datetime`` in
the session's zone for PostgreSQL), which each backend passes in.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Mapping, Sequence
from datetime import datetime
from typing import Any

from .._listing import DeliveryQuery, EndpointQuery
from .._models import Attempt, Delivery, DeliveryStatus, Endpoint
from ..exceptions import FailureKind, StorageError

__all__ = [
    "DELIVERY_WIDTH",
    "EndpointCache",
    "attempt_from_row",
    "delivery_filter",
    "delivery_from_row",
    "delivery_query",
    "endpoint_query",
    "json_object",
    "json_text",
]

DELIVERY_WIDTH = 11
"""Columns of a delivery row: id, event_id, endpoint_id, status, attempt_count,
next_attempt_at, last_error, created_at, updated_at, tenant, event_type."""


def delivery_filter(
    *,
    event_id: str | None,
    endpoint_id: str | None,
    status: DeliveryStatus | None,
    mark: str,
) -> tuple[str, list[Any]]:
    """The ``WHERE`` clause (or ``""``) and its parameters for ``list_deliveries``:
    every given filter must hold. ``mark`` is the driver's placeholder (``?``, ``%s``)."""
    where: list[str] = []
    params: list[Any] = []
    for column, value in (("event_id", event_id), ("endpoint_id", endpoint_id)):
        if value is not None:
            where.append(f"{column} = {mark}")
            params.append(value)
    if status is not None:
        where.append(f"status = {mark}")
        params.append(DeliveryStatus(status).value)
    return (" WHERE " + " AND ".join(where) if where else ""), params


def delivery_query(
    query: DeliveryQuery, *, mark: str, moment: Callable[[datetime], Any]
) -> tuple[str, str, list[Any]]:
    """``find_deliveries``' ``WHERE`` clause (``""`` when none), its ``ORDER BY … LIMIT``
    and their parameters. ``mark`` is the driver's placeholder; ``moment`` turns a
    datetime into the driver's timestamp.

    The order is ``created_at``, then ``id`` (both descending for ``newest_first``),
    and ``after`` a row-value comparison on that pair: with an index on (filter
    column, created_at, id) a page is one range scan, whatever its position."""
    where: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("tenant", query.tenant),
        ("event_id", query.event_id),
        ("endpoint_id", query.endpoint_id),
        ("event_type", query.event_type),
    ):
        if value is not None:
            where.append(f"{column} = {mark}")
            params.append(value)
    if query.status is not None:
        # A literal, not a parameter (a DeliveryStatus value, nothing else): only a
        # literal lets the planner use a partial index, such as failed deliveries'.
        where.append(f"status = '{DeliveryStatus(query.status).value}'")
    for bound, limit in ((">=", query.since), ("<", query.until)):
        if limit is not None:
            where.append(f"created_at {bound} {mark}")
            params.append(moment(limit))
    if query.after is not None:
        where.append(f"(created_at, id) {'<' if query.newest_first else '>'} ({mark}, {mark})")
        params.extend((moment(query.after[0]), query.after[1]))
    direction = " DESC" if query.newest_first else ""
    order = f" ORDER BY created_at{direction}, id{direction} LIMIT {mark}"
    params.append(query.limit)
    return (" WHERE " + " AND ".join(where) if where else ""), order, params


def endpoint_query(
    query: EndpointQuery, *, mark: str, moment: Callable[[datetime], Any]
) -> tuple[str, list[Any]]:
    """``find_endpoints``' ``WHERE … ORDER BY … LIMIT`` and its parameters (as
    :func:`delivery_query`): endpoints not deleted, of the tenant if one is given."""
    where = ["deleted_at IS NULL"]
    params: list[Any] = []
    if query.tenant is not None:
        where.append(f"tenant = {mark}")
        params.append(query.tenant)
    if query.after is not None:
        where.append(f"(created_at, id) > ({mark}, {mark})")
        params.extend((moment(query.after[0]), query.after[1]))
    params.append(query.limit)
    return f" WHERE {' AND '.join(where)} ORDER BY created_at, id LIMIT {mark}", params


def delivery_from_row(row: Sequence[Any], moment: Callable[[Any], datetime]) -> Delivery:
    """The Delivery of a row; a status this version does not know is a StorageError."""
    try:
        status = DeliveryStatus(row[3])
    except ValueError:
        raise StorageError(
            f"delivery {row[0]!r} has status {row[3]!r}, which this version of hookdispatch"
            " does not know; upgrade hookdispatch or repair the row"
        ) from None
    return Delivery(
        id=row[0],
        event_id=row[1],
        endpoint_id=row[2],
        status=status,
        attempt_count=row[4],
        next_attempt_at=None if row[5] is None else moment(row[5]),
        last_error=row[6],
        created_at=moment(row[7]),
        updated_at=moment(row[8]),
        tenant=row[9],
        event_type=row[10],
    )


def attempt_from_row(row: Sequence[Any], moment: Callable[[Any], datetime]) -> Attempt:
    """The Attempt of a row: id, delivery_id, number, started_at, duration,
    status_code, failure, error, response_body (NULL or any bytes-like)."""
    return Attempt(
        id=row[0],
        delivery_id=row[1],
        number=row[2],
        started_at=moment(row[3]),
        duration=row[4],
        status_code=row[5],
        failure=None if row[6] is None else FailureKind(row[6]),
        error=row[7],
        response_body=b"" if row[8] is None else bytes(row[8]),
    )


def json_text(value: Mapping[str, Any]) -> str:
    """An endpoint's headers or metadata as the JSON text a column stores."""
    return json.dumps(dict(value), separators=(",", ":"), ensure_ascii=False)


def json_object(value: Any, *, column: str, endpoint_id: str) -> dict[str, Any]:
    """A stored JSON object column (text, or already decoded by the driver) as a dict;
    NULL is the empty object. Anything but a JSON object is a StorageError."""
    if value is None:
        return {}
    if isinstance(value, str | bytes):
        try:
            value = json.loads(value)
        except (RecursionError, ValueError):
            value = None
    if not isinstance(value, dict):
        raise StorageError(
            f"endpoint {endpoint_id!r} has a {column} column that is not a JSON object;"
            " repair the row"
        )
    return value


class EndpointCache:
    """The Endpoints of claims' rows, built once per distinct row: a claim's rows
    name few endpoints, mostly the same ones as the last claim's.

    The key is the endpoint's whole row, so any change to it, made anywhere, is a
    new key. Kept only when it can be shared: an Endpoint is frozen, but a list or
    object in its ``metadata`` is not, and one claim's consumer must not change
    another's. At most :attr:`MOST`, then it starts afresh; the storage clears it
    on its own updates and deletes of endpoints (no old secret kept longer)."""

    __slots__ = ("_seen",)

    MOST = 1024

    def __init__(self) -> None:
        self._seen: dict[Hashable, Endpoint] = {}

    def __repr__(self) -> str:
        return f"<EndpointCache of {len(self._seen)}>"  # (the rows hold secrets)

    def get(self, key: Hashable, build: Callable[[], Endpoint]) -> Endpoint:
        """The Endpoint kept for ``key``, or ``build()``'s (kept when shareable)."""
        endpoint = self._seen.get(key)
        if endpoint is None:
            endpoint = build()
            if _shareable(endpoint):
                if len(self._seen) >= self.MOST:
                    self._seen.clear()
                self._seen[key] = endpoint
        return endpoint

    def clear(self) -> None:
        self._seen.clear()


def _shareable(endpoint: Endpoint) -> bool:
    """Whether ``endpoint`` is immutable all through: its metadata holds no list or
    object (its headers are strings, its other fields frozen)."""
    return all(not isinstance(value, list | dict) for value in endpoint.metadata.values())
