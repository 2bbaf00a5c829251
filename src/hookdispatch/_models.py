"""The values hookdispatch stores and returns: Event, Endpoint, Delivery, Attempt.

All are frozen attrs classes; a change makes a new value (``attrs.evolve``). Named
``create`` constructors validate user input and raise
:class:`~hookdispatch.exceptions.InvalidInputError` subclasses; the plain
constructors trust their arguments (storage backends use them to rebuild rows).
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from attrs import evolve, field, frozen

from ._types import JSON
from ._urls import parse_url
from .exceptions import (
    FailureKind,
    InvalidEndpointError,
    InvalidEventError,
    InvalidInputError,
    InvalidStateError,
    StorageError,
)

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DEFAULT_ROTATION_GRACE",
    "DEFAULT_TENANT",
    "MAX_DATA_DEPTH",
    "MAX_DESCRIPTION_LENGTH",
    "MAX_HEADERS",
    "MAX_HEADER_VALUE_LENGTH",
    "MAX_METADATA_BYTES",
    "Attempt",
    "Delivery",
    "DeliveryStatus",
    "Endpoint",
    "Event",
    "check_description",
    "check_grace",
    "check_headers",
    "check_metadata",
    "check_tenant",
    "generate_secret",
    "holds_nul",
    "new_deliveries",
    "new_delivery",
    "new_id",
    "new_ids",
    "subscription_keys",
]

MAX_EVENT_TYPE_LENGTH = 200
MAX_ID_LENGTH = 200
DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024
"""The largest encoded event body accepted by default (256 KiB)."""
MAX_DATA_DEPTH = 100
"""How deeply event data may nest: ``[[…]]`` 100 lists or dicts deep, no deeper.

Real payloads stay far below it; it is far below Python's recursion limit, so
encoding and decoding never hit that, wherever they run; and the whole body (one
level more) stays within the 128 levels strict JSON parsers such as serde_json accept."""
MIN_SECRET_LENGTH = 16
MAX_SECRET_LENGTH = 1024
ALL_EVENTS = "*"
DEFAULT_ROTATION_GRACE = 86400.0
"""How long, in seconds, a rotated-out secret keeps signing by default: 24 hours."""
MAX_ROTATION_GRACE = 90 * 86400.0
"""The longest grace period a rotation takes: 90 days."""
DEFAULT_TENANT = "default"
"""The tenant of endpoints and events given none: single-tenant code never names one."""

MAX_DESCRIPTION_LENGTH = 1024
"""The longest endpoint description, in characters."""
MAX_HEADERS = 20
"""The most custom headers an endpoint may carry."""
MAX_HEADER_NAME_LENGTH = 256
MAX_HEADER_VALUE_LENGTH = 4096
"""The longest custom header value, in characters (printable ASCII: one byte each)."""
MAX_METADATA_BYTES = 4096
"""The largest endpoint metadata, encoded as compact JSON (UTF-8)."""

RESERVED_HEADERS = frozenset(
    {
        # HTTP framing and hop-by-hop headers: the transport's, never an endpoint's.
        "content-type",
        "content-length",
        "host",
        "user-agent",
        "accept-encoding",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        # The signature headers: ours.
        "x-webhook-signature",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)
"""Header names (lower case) an endpoint's custom headers may not set; nor ``Proxy-*``."""

_EVENT_TYPE = re.compile(r"[A-Za-z0-9_.:\-/]+")
_ID = re.compile(r"[A-Za-z0-9_.:\-]+")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")


def _new_sequence() -> Iterator[int]:
    return itertools.count(int.from_bytes(os.urandom(8), "big") >> 1)


_id_sequence = _new_sequence()
"""Ids need to be unique, not secret: a counter that starts at 63 random bits (again in
every forked child) makes ids unique across processes and machines without a system
call per id, and makes the ids of one process increase in the order they are made."""


def _reseed_ids() -> None:
    global _id_sequence
    _id_sequence = _new_sequence()


os.register_at_fork(after_in_child=_reseed_ids)


def new_id(prefix: str) -> str:
    """A unique, time-ordered id such as ``evt_0190a3b4c5d6a1b2c3d4e5f6a7b8``.

    Milliseconds since the epoch, then 64 bits of a counter that starts at a random
    value: unique across threads, processes and machines, increasing in the order one
    process makes them (listings break ties of ``created_at`` by id), but not
    unguessable (ids are not secrets).
    """
    return f"{prefix}_{time.time_ns() // 1_000_000:012x}{next(_id_sequence) & _MASK_64:016x}"


def new_ids(prefix: str) -> Iterator[str]:
    """New ids as :func:`new_id` makes them, as many as asked for, for one batch: all
    with the millisecond this was called in (the batch's), each with the counter's
    next value. Half the cost of ``new_id`` per id."""
    head = f"{prefix}_{time.time_ns() // 1_000_000:012x}"
    for number in _id_sequence:
        yield f"{head}{number & _MASK_64:016x}"


_MASK_64 = (1 << 64) - 1


def generate_secret() -> str:
    """A new signing secret: ``whsec_`` and the base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def _rfc3339(moment: datetime) -> str:
    # An f-string is several times faster than strftime on this hot path.
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}Z"
    )


_last_second: tuple[datetime, str] = (datetime.min.replace(tzinfo=UTC), "")
"""The whole second events were last created in, and its RFC 3339 text: events come
in bursts, and a subtraction costs a fifth of ``replace`` and the formatting."""

_ONE_SECOND = timedelta(seconds=1)
_ZERO = timedelta(0)


def _to_the_second(now: datetime) -> tuple[datetime, str]:
    """``now`` without its microseconds, and as RFC 3339 text."""
    global _last_second
    whole, text = _last_second  # one read: another thread may replace it meanwhile
    if now.tzinfo is not whole.tzinfo or not _ZERO <= now - whole < _ONE_SECOND:
        whole = now.replace(microsecond=0)
        text = _rfc3339(whole)
        _last_second = (whole, text)
    return whole, text


# One encoder for every event: json.dumps() with options builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)

try:
    from _json import make_encoder as _make_c_encoder  # what _ENCODER runs, in C
except ImportError:  # pragma: no cover - an interpreter without CPython's _json
    _make_c_encoder = None  # type: ignore[assignment, misc]


def _encode_data(data: JSON) -> str:
    """``data`` as ``_ENCODER`` encodes it. CPython's C encoder called directly, as
    ``_ENCODER.encode`` calls it (a fresh one: its markers catch circular data),
    without ``encode``'s and ``iterencode``'s Python layers: a third less for the
    small data of most events."""
    if _make_c_encoder is None:  # pragma: no cover
        return _ENCODER.encode(data)
    return "".join(_make_c_encoder({}, *_C_ENCODER_OPTIONS)(data, 0))


_C_ENCODER_OPTIONS = (
    _ENCODER.default,
    json.encoder.encode_basestring,  # ensure_ascii=False's string encoder
    None,  # indent
    _ENCODER.key_separator,
    _ENCODER.item_separator,
    _ENCODER.sort_keys,
    _ENCODER.skipkeys,
    _ENCODER.allow_nan,
)
"""What ``_ENCODER.iterencode`` gives the C encoder after its markers."""


def _event_body(
    event_id: str, event_type: str, created_text: str, data: JSON, max_bytes: int
) -> bytes:
    """The body of a new event (see :class:`Event`), checked: JSON, at most
    :data:`MAX_DATA_DEPTH` deep, at most ``max_bytes``. Raises InvalidEventError.

    The envelope is written around the encoded data: its strings (a checked id and
    type, an RFC 3339 time) need no escaping, so the bytes are those of the
    envelope encoded whole. For data that does not encode, the envelope is encoded
    whole, as it always was, so that the error reads as it always did.
    """
    try:
        body = "".join(
            (
                '{"id":"',
                event_id,
                '","event":"',
                event_type,
                '","created_at":"',
                created_text,
                '","data":',
                _encode_data(data),
                "}",
            )
        ).encode()
    except (RecursionError, TypeError, ValueError):
        body = _encoded_envelope(event_id, event_type, created_text, data)
    if _nests_deeper_than(body, MAX_DATA_DEPTH + 1):  # +1: the envelope
        raise InvalidEventError(_TOO_DEEP)
    if len(body) > max_bytes:
        raise InvalidEventError(
            f"event body is {len(body):,} bytes, over the {max_bytes:,}-byte limit; send"
            " a reference the receiver can fetch (an id or a URL) instead of the data,"
            " or raise max_payload_bytes"
        )
    return body


def _encoded_envelope(event_id: str, event_type: str, created_text: str, data: JSON) -> bytes:
    """The body encoded whole, its errors as InvalidEventError (see ``_event_body``)."""
    document = {"id": event_id, "event": event_type, "created_at": created_text, "data": data}
    try:
        return _ENCODER.encode(document).encode()
    except RecursionError:
        raise InvalidEventError(_TOO_DEEP) from None
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise InvalidEventError(
            f"event data is not JSON: {exc}. Pass dicts, lists, str, int, finite float,"
            " bool or None (convert datetimes, decimals and sets first)"
        ) from None


_TOO_DEEP = (
    f"event data is nested too deeply to encode as JSON (the limit is {MAX_DATA_DEPTH}"
    " levels of lists and dicts); flatten it, or send a reference the receiver can fetch"
)


_ONE_KIND = bytes.maketrans(b"{}", b"[]")
_NOT_MARKS = bytes(byte for byte in range(256) if byte not in b'[]{}"')


def _nests_deeper_than(body: bytes, limit: int) -> bool:
    """Whether the JSON document ``body`` nests more than ``limit`` lists and dicts deep.

    Every list and dict opens with a ``[`` or ``{`` byte (strings add more, never
    fewer), so a body with few of them needs no more: the common case costs two
    C-speed counts. Otherwise, with bytes operations only: drop the escaped
    backslashes and quotes, keep only brackets (of one kind: valid JSON nests
    properly) and quotes, drop ``""`` (strings without brackets in them, or two
    strings with nothing structural between them), then what lies between quotes,
    and strip the innermost empty pairs ``limit`` times.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    marks = body
    if b"\\" in marks:
        marks = marks.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = marks.translate(_ONE_KIND, _NOT_MARKS).replace(b'""', b"")
    if b'"' in marks:  # strings with brackets in them: keep only what is outside
        marks = b"".join(marks.split(b'"')[::2])
    for _ in range(limit):
        if not marks:
            return False
        marks = marks.replace(b"[]", b"")
    return bool(marks)


def _check_event_type(event_type: object) -> str:
    if not isinstance(event_type, str) or not event_type:
        raise InvalidEventError(
            "event type must be a non-empty string such as 'user.created'"
            f" (got {type(event_type).__name__} {event_type!r:.40})"
        )
    if len(event_type) > MAX_EVENT_TYPE_LENGTH or not _EVENT_TYPE.fullmatch(event_type):
        raise InvalidEventError(
            f"event type {event_type[:60]!r} is not valid: use at most {MAX_EVENT_TYPE_LENGTH}"
            " letters, digits and . _ - : / (for example 'invoice.paid')"
        )
    return event_type


def _check_id(
    value: object, *, what: str, error: type[InvalidInputError] = InvalidEventError
) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value) or len(value) > MAX_ID_LENGTH:
        raise error(
            f"{what} must be 1 to {MAX_ID_LENGTH} letters, digits and . _ - :"
            f" (got {value!r:.60}); leave it out to have one generated"
        )
    return value


def check_grace(grace: object) -> float:
    """``grace`` as float seconds, if it is a rotation grace period: a finite number
    from 0 to :data:`MAX_ROTATION_GRACE`. Raises InvalidInputError."""
    if (
        isinstance(grace, bool)
        or not isinstance(grace, int | float)
        or not 0 <= grace <= MAX_ROTATION_GRACE  # False for NaN too
    ):
        raise InvalidInputError(
            f"grace must be a number of seconds from 0 (no overlap) to {MAX_ROTATION_GRACE:.0f}"
            f" ({MAX_ROTATION_GRACE / 86400:.0f} days), such as 86400.0 for 24 hours"
            f" (got {grace!r:.40})"
        )
    return float(grace)


def check_tenant(tenant: object) -> str:
    """``tenant`` if it is a valid tenant id (the host's own account id): 1 to 200
    letters, digits and . _ - :. Raises InvalidInputError."""
    if not isinstance(tenant, str) or not _ID.fullmatch(tenant) or len(tenant) > MAX_ID_LENGTH:
        raise InvalidInputError(
            f"tenant must be 1 to {MAX_ID_LENGTH} letters, digits and . _ - : such as your"
            f" account id 'acct_42' (got {tenant!r:.60}); leave it out for the default tenant"
        )
    return tenant


@functools.lru_cache(maxsize=4096)  # every dispatch asks, for the app's few types
def subscription_keys(event_type: str) -> tuple[str, ...]:
    """Every subscription pattern that matches ``event_type``, most specific first.

    ``user.subscription.updated`` is matched by itself, ``user.subscription.*``,
    ``user.*`` and ``*``: fan-out looks these up instead of testing each endpoint.
    """
    parts = event_type.split(".")
    prefixes = tuple(".".join(parts[:n]) + ".*" for n in range(len(parts) - 1, 0, -1))
    return (event_type, *prefixes, ALL_EVENTS)


@frozen
class Event:
    """Something that happened in the application, to be sent to every subscribed endpoint.

    ``body`` is the exact JSON document every endpoint receives, encoded once:
    ``{"id": …, "event": …, "created_at": …, "data": …}``.
    """

    id: str
    type: str
    created_at: datetime
    data: JSON = field(repr=False)
    body: bytes = field(repr=False, eq=False)
    tenant: str = DEFAULT_TENANT
    """The tenant whose endpoints the event goes to (not part of the body)."""

    @classmethod
    def create(
        cls,
        event_type: str,
        data: JSON,
        *,
        now: datetime,
        id: str | None = None,
        max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        tenant: str = DEFAULT_TENANT,
    ) -> Event:
        """Validate and encode a new event of ``tenant``. ``created_at`` is ``now`` to the second.

        Raises InvalidEventError for an empty or malformed type or id, for data that
        JSON cannot represent (sets, bytes, objects, NaN and infinities, non-string
        keys other than numbers, booleans and None, circular references), for data
        nested more than :data:`MAX_DATA_DEPTH` lists and dicts deep, and for a body
        over ``max_bytes`` once encoded.
        """
        event_type = _check_event_type(event_type)
        tenant = DEFAULT_TENANT if tenant is DEFAULT_TENANT else check_tenant(tenant)
        event_id = new_id("evt") if id is None else _check_id(id, what="event id")
        created_at, created_text = _to_the_second(now)
        body = _event_body(event_id, event_type, created_text, data, max_bytes)
        # Positional: the fields' order (id, type, created_at, data, body, tenant).
        return cls(event_id, event_type, created_at, data, body, tenant)

    @classmethod
    def from_body(cls, body: bytes, *, tenant: str = DEFAULT_TENANT) -> Event:
        """Rebuild an event of ``tenant`` from the body that :meth:`create` encoded
        (storage uses this; the tenant is stored beside the body, not in it).

        Raises StorageError for bytes that are not such a body: not JSON, nested too
        deeply for the decoder, or missing a field.
        """
        try:
            document = json.loads(body)
            created_at = datetime.fromisoformat(document["created_at"])
            return cls(
                id=document["id"],
                type=document["event"],
                created_at=created_at,
                data=document["data"],
                body=body,
                tenant=tenant,
            )
        except (RecursionError, ValueError, TypeError, KeyError) as exc:
            raise StorageError(
                f"a stored event body is not an event this version can read"
                f" ({type(exc).__name__}); was it written by hookdispatch?"
            ) from exc


def _check_url(url: object) -> str:
    """The URL unchanged, if the sender can send to it (see ``_urls.parse_url``)."""
    if not isinstance(url, str) or not url:
        raise InvalidEndpointError(
            "endpoint URL must be a non-empty string like https://example.com/hooks"
        )
    parse_url(url)
    return url


ENCRYPTED_SECRET_PREFIX = "hdenc1:"  # noqa: S105 - a marker, not a password
"""How a secret encrypted at rest starts (EncryptedStorage): never a secret to sign with."""


def _check_secret(secret: object) -> str:
    if not isinstance(secret, str):
        raise InvalidEndpointError(
            "endpoint secret must be a string; leave it out to have one generated"
        )
    if not MIN_SECRET_LENGTH <= len(secret) <= MAX_SECRET_LENGTH or not secret.isprintable():
        raise InvalidEndpointError(
            f"endpoint secret must be {MIN_SECRET_LENGTH} to {MAX_SECRET_LENGTH} printable"
            " characters; leave it out to have a strong one generated"
        )
    if secret.startswith(ENCRYPTED_SECRET_PREFIX):
        raise InvalidEndpointError(
            f"endpoint secret must not start with {ENCRYPTED_SECRET_PREFIX!r}, which marks a"
            " secret encrypted at rest (EncryptedStorage); leave it out to have one generated"
        )
    if secret.startswith("whsec_"):
        try:
            base64.b64decode(secret[6:], validate=True)
        except ValueError:
            raise InvalidEndpointError(
                "endpoint secret starts with 'whsec_' but the rest is not base64"
            ) from None
    return secret


def _check_events(events: object) -> tuple[str, ...]:
    if isinstance(events, str) or not hasattr(events, "__iter__"):
        raise InvalidEndpointError(
            "events must be a list of event types, e.g. ['user.created'], or ['*'] for all"
        )
    checked: list[str] = []
    for name in events:
        if name == ALL_EVENTS:
            checked.append(name)
            continue
        prefix = name[:-2] if isinstance(name, str) and name.endswith(".*") else name
        try:
            _check_event_type(prefix)
        except InvalidEventError as exc:
            raise InvalidEndpointError(
                f"{exc}; to subscribe to a family of types, end a prefix with '.*'"
                " (as in 'user.*'), or use '*' for all"
            ) from None
        checked.append(name)
    if not checked:
        raise InvalidEndpointError("events must name at least one event type, or '*' for all")
    return tuple(dict.fromkeys(checked))


_V = TypeVar("_V")


class FrozenMapping(Mapping[str, _V]):
    """A read-only mapping (an endpoint's headers and metadata): a copy of what it was
    made from, so changing that afterwards changes nothing here."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, _V] | None = None) -> None:
        self._items: dict[str, _V] = dict(items or {})

    def __getitem__(self, key: str) -> _V:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._items == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # values may be lists and dicts

    def __repr__(self) -> str:
        return f"FrozenMapping({self._items!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenMapping, (self._items,))


class HeaderMapping(FrozenMapping[str]):
    """An endpoint's custom headers: a read-only mapping whose ``repr()`` shows the
    names only, never a value (a value may be a credential)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"HeaderMapping(names={tuple(self._items)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (HeaderMapping, (self._items,))


def _frozen(items: Mapping[str, Any] | None) -> FrozenMapping[Any]:
    return items if type(items) is FrozenMapping else FrozenMapping(items)


def _frozen_headers(items: Mapping[str, str] | None) -> HeaderMapping:
    return items if isinstance(items, HeaderMapping) else HeaderMapping(items)


def _header_names(headers: Mapping[str, str]) -> str:
    """An endpoint's headers in a repr: their names only (a value may be a credential)."""
    return repr(tuple(headers))


def check_description(description: object) -> str:
    """``description`` if it is an endpoint description: a string of at most
    :data:`MAX_DESCRIPTION_LENGTH` characters, no control characters but tab and line
    breaks. Raises InvalidEndpointError."""
    if not isinstance(description, str):
        raise InvalidEndpointError(
            f"endpoint description must be a string (got {type(description).__name__})"
        )
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise InvalidEndpointError(
            f"endpoint description is {len(description):,} characters, over the"
            f" {MAX_DESCRIPTION_LENGTH:,}-character limit"
        )
    if not description.replace("\n", "").replace("\t", "").isprintable():
        raise InvalidEndpointError(
            "endpoint description must not contain control characters (other than tabs"
            " and line breaks)"
        )
    return description


def check_headers(headers: object) -> HeaderMapping:
    """``headers`` as a read-only mapping, if they are custom headers an endpoint may
    carry: at most :data:`MAX_HEADERS`, each name an HTTP token that is not one of
    :data:`RESERVED_HEADERS` nor ``Proxy-*`` (compared case-insensitively) and not
    given twice, each value at most :data:`MAX_HEADER_VALUE_LENGTH` printable ASCII
    characters. ``None``: no headers.

    Raises InvalidEndpointError naming the header, never quoting its value (which may
    be a credential).
    """
    if headers is None:
        return HeaderMapping()
    if not isinstance(headers, Mapping):
        raise InvalidEndpointError(
            "endpoint headers must be a mapping of header names to values, such as"
            " {'Authorization': 'Bearer …'}"
        )
    if len(headers) > MAX_HEADERS:
        raise InvalidEndpointError(
            f"an endpoint may carry at most {MAX_HEADERS} custom headers (got {len(headers)})"
        )
    seen: set[str] = set()
    for name, value in headers.items():
        if (
            not isinstance(name, str)
            or len(name) > MAX_HEADER_NAME_LENGTH
            or not _HEADER_NAME.fullmatch(name)
        ):
            raise InvalidEndpointError(
                f"header name {name!r:.80} is not valid: use 1 to {MAX_HEADER_NAME_LENGTH}"
                " letters, digits and !#$%&'*+-.^_`|~ (an HTTP token), such as 'Authorization'"
            )
        key = name.lower()
        if key in RESERVED_HEADERS or key.startswith("proxy-"):
            raise InvalidEndpointError(
                f"header {name!r} cannot be set on an endpoint: hookdispatch or the HTTP"
                " connection sets it (the signature headers, Content-Type, Host, User-Agent,"
                " and hop-by-hop headers such as Connection and Proxy-*)"
            )
        if key in seen:
            raise InvalidEndpointError(
                f"header {name!r} is given twice (header names are case-insensitive)"
            )
        seen.add(key)
        if not isinstance(value, str):
            raise InvalidEndpointError(
                f"the value of header {name!r} must be a string (got {type(value).__name__})"
            )
        if len(value) > MAX_HEADER_VALUE_LENGTH:
            raise InvalidEndpointError(
                f"the value of header {name!r} is {len(value):,} characters, over the"
                f" {MAX_HEADER_VALUE_LENGTH:,}-character limit"
            )
        if not _HEADER_VALUE.fullmatch(value):
            raise InvalidEndpointError(
                f"the value of header {name!r} must be printable ASCII: no line breaks, NUL,"
                " control or non-ASCII characters"
            )
    return HeaderMapping(headers)


def check_metadata(metadata: object) -> FrozenMapping[JSON]:
    """``metadata`` as a read-only mapping (of a copy), if it is endpoint metadata: a
    JSON object of at most :data:`MAX_METADATA_BYTES` encoded. ``None``: empty.
    Raises InvalidEndpointError."""
    if metadata is None:
        return FrozenMapping()
    if not isinstance(metadata, Mapping):
        raise InvalidEndpointError(
            "endpoint metadata must be a mapping with string keys (a JSON object), such"
            " as {'customer': 'acct_42'}"
        )
    if not all(isinstance(key, str) for key in metadata):
        raise InvalidEndpointError("endpoint metadata keys must be strings (a JSON object)")
    try:
        encoded = _ENCODER.encode(dict(metadata)).encode()
    except RecursionError:
        raise InvalidEndpointError("endpoint metadata is nested too deeply") from None
    except (TypeError, ValueError) as exc:
        raise InvalidEndpointError(
            f"endpoint metadata is not JSON: {exc}. Use dicts, lists, str, int, finite"
            " float, bool or None"
        ) from None
    if len(encoded) > MAX_METADATA_BYTES:
        raise InvalidEndpointError(
            f"endpoint metadata is {len(encoded):,} bytes as JSON, over the"
            f" {MAX_METADATA_BYTES:,}-byte limit; keep ids and small labels there"
        )
    copy = json.loads(encoded)  # later changes to the caller's stay out
    if holds_nul(copy):
        raise InvalidEndpointError(
            "endpoint metadata must not hold the NUL character (\\u0000) in a key or a"
            " string: PostgreSQL cannot store it; remove it"
        )
    return FrozenMapping(copy)


def holds_nul(value: object) -> bool:
    """Whether ``value`` (a str, or lists, tuples and mappings of them: decoded JSON,
    statement parameters) holds the NUL character in a string or a key, which
    PostgreSQL's text and jsonb cannot store."""
    if isinstance(value, str):
        return "\0" in value
    if isinstance(value, Mapping):
        return any(holds_nul(key) or holds_nul(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(holds_nul(item) for item in value)
    return False


@frozen
class Endpoint:
    """A receiver: where to POST, the secret to sign with, and which events it wants.

    ``events`` holds subscription patterns: exact event types, prefixes ending in
    ``.*`` (``user.*``), or ``"*"`` for every event. The secret never appears in
    ``repr()``.
    """

    id: str
    url: str
    secret: str = field(repr=False)
    events: tuple[str, ...]
    enabled: bool
    created_at: datetime
    consecutive_failures: int = 0
    """Deliveries that failed (used up their attempts) in a row; a success resets it."""
    tenant: str = DEFAULT_TENANT
    """The tenant (customer account) the endpoint belongs to: it receives that tenant's
    events only."""
    previous_secret: str | None = field(default=None, repr=False)
    """The secret before the last rotation, still signing (beside ``secret``) until
    ``previous_secret_expires_at``; ``None`` when no rotation overlaps. Never in ``repr()``."""
    previous_secret_expires_at: datetime | None = None
    """When ``previous_secret`` stops signing (the end of the rotation's grace period)."""
    description: str = ""
    """What the endpoint is for, in the host's or its customer's words."""
    headers: Mapping[str, str] = field(
        factory=HeaderMapping, converter=_frozen_headers, repr=_header_names, hash=False
    )
    """Custom headers sent with every request to it (an auth token its receiver
    expects, say), beside hookdispatch's own, which they never replace. Read-only;
    ``repr()`` shows their names only, never a value."""
    metadata: Mapping[str, JSON] = field(
        factory=FrozenMapping, converter=_frozen, repr=False, hash=False
    )
    """The host's own data about the endpoint (a JSON object, at most 4 KiB encoded);
    hookdispatch only stores it. Read-only at the top level."""

    @classmethod
    def create(
        cls,
        url: str,
        *,
        now: datetime,
        events: Any = (ALL_EVENTS,),
        secret: str | None = None,
        id: str | None = None,
        tenant: str = DEFAULT_TENANT,
        description: str = "",
        headers: Mapping[str, str] | None = None,
        metadata: Mapping[str, JSON] | None = None,
    ) -> Endpoint:
        """Validate a new endpoint of ``tenant``, generating the id and secret when not given.

        ``headers`` are checked by :func:`check_headers`, ``metadata`` by
        :func:`check_metadata`, ``description`` by :func:`check_description`.
        """
        return cls(
            id=new_id("ep")
            if id is None
            else _check_id(id, what="endpoint id", error=InvalidEndpointError),
            url=_check_url(url),
            secret=generate_secret() if secret is None else _check_secret(secret),
            events=_check_events(events),
            enabled=True,
            created_at=now,
            tenant=DEFAULT_TENANT if tenant is DEFAULT_TENANT else check_tenant(tenant),
            description=check_description(description),
            headers=check_headers(headers),
            metadata=check_metadata(metadata),
        )

    def previous_secret_live(self, now: datetime) -> str | None:
        """The previous secret if it still signs at ``now`` (a rotation's overlap), else None.

        It signs while ``now`` is before ``previous_secret_expires_at``; a previous
        secret without an expiry never does.
        """
        expires_at = self.previous_secret_expires_at
        if self.previous_secret is None or expires_at is None or now >= expires_at:
            return None
        return self.previous_secret

    def rotated(self, *, now: datetime, grace: float, secret: str | None = None) -> Endpoint:
        """This endpoint with a new secret (``secret``, checked, or a generated one),
        the current one kept as ``previous_secret`` for ``grace`` seconds from ``now``.

        ``grace`` 0: no overlap, the old secret stops signing at once. Raises
        InvalidInputError for a grace that is not a finite number of seconds from 0 to
        :data:`MAX_ROTATION_GRACE`, InvalidEndpointError for an invalid ``secret`` or
        one that is the current secret, and InvalidStateError for a rotation with a
        grace period while an earlier rotation's overlap is still live (its oldest
        secret would stop signing at once): end that one first, or rotate with grace 0.
        """
        grace = check_grace(grace)
        new_secret = generate_secret() if secret is None else _check_secret(secret)
        if new_secret == self.secret:
            raise InvalidEndpointError(
                "the new secret is the endpoint's current secret; give a different one,"
                " or leave it out to have one generated"
            )
        live = self.previous_secret_live(now)
        if grace and live is not None:
            raise InvalidStateError(
                f"endpoint {self.id!r} is still in the overlap of its last rotation (its"
                f" previous secret signs until {self.previous_secret_expires_at:%Y-%m-%d %H:%M:%S}"
                " UTC); end that overlap first (end_rotation(), or `hookdispatch endpoints"
                " end-rotation`), or rotate with grace 0 to drop both older secrets now"
            )
        if not grace:
            return evolve(
                self, secret=new_secret, previous_secret=None, previous_secret_expires_at=None
            )
        return evolve(
            self,
            secret=new_secret,
            previous_secret=self.secret,
            previous_secret_expires_at=now + timedelta(seconds=grace),
        )

    def rotation_ended(self) -> Endpoint:
        """This endpoint without a previous secret: only ``secret`` signs from now on."""
        return evolve(self, previous_secret=None, previous_secret_expires_at=None)

    def wants(self, event_type: str) -> bool:
        """Whether this endpoint subscribes to ``event_type``: by its exact name, a
        prefix pattern (``user.*`` matches ``user.created`` and
        ``user.subscription.updated``, not ``users.x``), or ``*``."""
        events = self.events
        return any(key in events for key in subscription_keys(event_type))


class DeliveryStatus(StrEnum):
    """Where a delivery stands. Only ``PENDING`` deliveries are ever attempted."""

    PENDING = "pending"
    """Waiting for its first attempt, for a retry, or in flight under a worker's lease."""
    SUCCEEDED = "succeeded"
    """An attempt got a 2xx response. Final."""
    FAILED = "failed"
    """Every allowed attempt failed. Final; :meth:`Dispatcher.redeliver` sends it again."""
    CANCELLED = "cancelled"
    """Its endpoint was deleted before it finished. Final; its attempts are kept."""

    @property
    def is_final(self) -> bool:
        return self is not DeliveryStatus.PENDING


@frozen
class Delivery:
    """One event on its way to one endpoint.

    ``next_attempt_at`` is when the delivery is next due: the scheduled retry time,
    or, while a worker holds it, the end of that worker's lease. ``None`` once final.
    """

    id: str
    """The delivery's id, ``dlv_`` and a unique, time-ordered part."""
    event_id: str
    """The id of the event being delivered (the ``webhook-id`` header)."""
    endpoint_id: str
    """The id of the endpoint it goes to; kept after the endpoint is deleted."""
    status: DeliveryStatus
    """``pending`` until it succeeds, fails (its attempts used up) or is cancelled."""
    attempt_count: int
    """How many attempts were recorded so far (0 before the first)."""
    next_attempt_at: datetime | None
    """When it is next due (UTC): the retry time, or the end of a worker's lease;
    ``None`` once final."""
    last_error: str | None
    """The last failed attempt's error (``HTTP 503``, ``timeout: ...``), never an
    endpoint URL; ``None`` before a failure and after a success."""
    created_at: datetime
    """When it was created (UTC): when its event was dispatched, or when it was
    made by a redelivery. Listings order and page by it."""
    updated_at: datetime
    """When its state last changed (UTC)."""
    tenant: str = DEFAULT_TENANT
    """The tenant of its event (and endpoint), stored beside it so that listings filter
    and page by tenant without a join."""
    event_type: str = ""
    """Its event's type, stored beside it for the same reason."""

    @classmethod
    def create(cls, event: Event, endpoint: Endpoint, *, now: datetime) -> Delivery:
        """A new delivery, due at ``now``."""
        return new_delivery(event, endpoint.id, now)


def new_delivery(event: Event, endpoint_id: str, now: datetime) -> Delivery:
    """:meth:`Delivery.create` for an endpoint known by its id (fan-out in a store)."""
    # Positional, in the fields' order: id, event_id, endpoint_id, status,
    # attempt_count, next_attempt_at, last_error, created_at, updated_at, tenant,
    # event_type (a third cheaper than by keyword, on every dispatch).
    return Delivery(
        new_id("dlv"), event.id, endpoint_id, _PENDING, 0, now, None, now, now,
        event.tenant, event.type,
    )  # fmt: skip


def new_deliveries(
    event: Event, endpoint_ids: Iterable[str], now: datetime, ids: Iterator[str]
) -> list[Delivery]:
    """:func:`new_delivery` for each of ``endpoint_ids``, with ids from ``ids``
    (:func:`new_ids`, for a batch)."""
    event_id, tenant, event_type = event.id, event.tenant, event.type
    fields = (_PENDING, 0, now, None, now, now, tenant, event_type)
    return [Delivery(next(ids), event_id, endpoint_id, *fields) for endpoint_id in endpoint_ids]


_PENDING = DeliveryStatus.PENDING


def _short_body(body: bytes) -> str:
    return repr(body[:40]) + ("…" if len(body) > 40 else "")


@frozen
class Attempt:
    """The record of one HTTP attempt of a delivery.

    ``failure`` is ``None`` when the attempt succeeded (a 2xx), else the reason.
    ``status_code`` and ``response_body`` are set when a response arrived; the body is
    kept up to the transport's cap (64 KiB by default).
    """

    id: str
    """The attempt's id, ``att_`` and a unique, time-ordered part."""
    delivery_id: str
    """The delivery it is an attempt of."""
    number: int
    """1 for the first attempt, 2 for the first retry, and so on."""
    started_at: datetime
    """When the attempt started (UTC)."""
    duration: float
    """Seconds from its start to its outcome: connect, send, wait and read."""
    status_code: int | None
    """The receiver's HTTP status; ``None`` when no answer arrived."""
    failure: FailureKind | None
    """Why it failed; ``None`` when it succeeded (a 2xx)."""
    error: str | None
    """What went wrong, in words, never with the endpoint's URL; ``None`` on success."""
    response_body: bytes = field(repr=_short_body)
    """The start of the receiver's answer body, up to the transport's cap (64 KiB by
    default); empty without an answer."""

    @property
    def succeeded(self) -> bool:
        return self.failure is None
