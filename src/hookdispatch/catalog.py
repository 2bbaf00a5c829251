"""The event catalog: the event types a host sends, declared once.

Each :class:`EventType` has a name, a description (for your receivers' documentation),
and optionally a JSON Schema of its ``data`` and an example payload. Hand a
:class:`Catalog` of them to a dispatcher (``Dispatcher(..., catalog=catalog)``) and it
refuses, before anything is stored, an event of a type the catalog does not name, an
event whose data fails its type's schema, and an endpoint subscribed to a type (or a
``prefix.*``) that names nothing in the catalog. Without a catalog nothing is checked
beyond the event's form.

Schemas are JSON Schema Draft 2020-12, validated by the ``jsonschema`` package:
``pip install 'hookdispatch[catalog]'``. It is imported only when a catalog has a
schema, so a catalog of names and descriptions needs nothing more, and ``import
hookdispatch`` never pays for it. ``format`` is an annotation, as the 2020-12
specification has it by default: ``"format": "email"`` is not asserted (jsonschema's
format checks depend on optional packages, and a catalog must answer the same on
every machine); use ``pattern``, ``enum`` or ``minimum`` to constrain values.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

from attrs import field, frozen

from ._models import ALL_EVENTS, Event, _check_event_type, subscription_keys
from ._types import JSON
from .exceptions import (
    InvalidEndpointError,
    InvalidEventError,
    InvalidInputError,
    MissingDependencyError,
)

__all__ = ["Catalog", "EventType"]


class _Validator(Protocol):
    """What the catalog uses of a jsonschema validator (jsonschema ships no types)."""

    def iter_errors(self, instance: Any) -> Iterator[Any]: ...


DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
_SHOWN_TYPES = 5  # known types an error lists
_MAX_MESSAGE = 200  # characters of the validator's message an error quotes


@frozen
class EventType:
    """One event type of a :class:`Catalog`.

    * ``name``: the type, as dispatched (``"user.created"``).
    * ``description``: what happened, for the people who write receivers
      (``"Triggered when a new user signs up"``).
    * ``schema``: a JSON Schema (Draft 2020-12) that the event's ``data`` must
      match; ``None``: any JSON.
    * ``example``: an example ``data``, which must match ``schema``; ``None``: none.

    The :class:`Catalog` checks all of it when it is built.
    """

    name: str
    description: str = ""
    schema: Mapping[str, Any] | bool | None = field(default=None, kw_only=True)
    example: JSON = field(default=None, kw_only=True)


class Catalog:
    """The event types a host sends, in the order they were declared.

    ``Catalog(types)`` takes :class:`EventType` values and checks them: at least one,
    names unique and valid event types, each schema a valid JSON Schema (Draft
    2020-12, compiled once here), each example JSON that matches its schema. It raises
    InvalidInputError otherwise, and MissingDependencyError when a type has a schema
    and ``jsonschema`` is not installed (``pip install 'hookdispatch[catalog]'``).

    ``for t in catalog`` yields the types in declaration order;
    ``catalog["user.created"]`` is one (KeyError if unknown), ``"user.created" in
    catalog`` and ``len(catalog)`` work as they read.
    """

    def __init__(self, types: Iterable[EventType]) -> None:
        if isinstance(types, EventType | str) or not isinstance(types, Iterable):
            raise InvalidInputError(
                "Catalog takes a list of EventType, e.g."
                " Catalog([EventType('user.created', 'Triggered when a new user signs up')])"
            )
        declared: dict[str, EventType] = {}
        for position, event_type in enumerate(types):
            _check_entry(position, event_type, declared)
            declared[event_type.name] = event_type
        if not declared:
            raise InvalidInputError("a catalog needs at least one event type")
        self._types = declared
        # name -> its compiled schema, or None (no schema): the one lookup of dispatch.
        self._validators: dict[str, _Validator | None] = {}
        has_schemas = any(t.schema is not None for t in declared.values())
        jsonschema = _import_jsonschema() if has_schemas else None
        self._best_match = jsonschema.exceptions.best_match if jsonschema else None
        # jsonschema's own dependency (4.18+): a $ref it cannot follow raises this.
        self._unresolvable: type[Exception] = (
            importlib.import_module("referencing.exceptions").Unresolvable
            if jsonschema
            else Exception
        )
        for name, event_type in declared.items():
            validator = None
            if event_type.schema is not None:
                assert jsonschema is not None
                validator = _compile(jsonschema, event_type)
            self._validators[name] = validator
        # Every prefix pattern that matches some type: "user.*", "user.subscription.*".
        self._prefixes = frozenset(
            key for name in declared for key in subscription_keys(name)[1:-1]
        )

    # The collection ----------------------------------------------------------------

    def __iter__(self) -> Iterator[EventType]:
        return iter(self._types.values())

    def __len__(self) -> int:
        return len(self._types)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._types

    def __getitem__(self, name: str) -> EventType:
        return self._types[name]

    def __repr__(self) -> str:
        count = len(self._types)
        return f"<Catalog of {count} event type{'' if count == 1 else 's'}>"

    # The checks --------------------------------------------------------------------

    def check_event(self, event_type: str, data: JSON) -> None:
        """Raise InvalidEventError unless ``event_type`` is in the catalog and ``data``
        matches its schema (if it has one).

        ``data`` is checked as receivers get it, in its JSON form (``{1: 5}`` is
        ``{"1": 5}``, a tuple is an array). The error names the type; for data that
        fails the schema, it also gives where (a JSON path such as
        ``$.items[0].amount``) and what (the validator's message for the most
        relevant failure, cut short rather than quoting a large value).
        """
        validator = self._validator(event_type)
        if validator is None:
            return
        try:
            sent = json.loads(json.dumps(data, allow_nan=False))
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidEventError(f"event data of {event_type!r} is not JSON: {exc}") from None
        self._validate(event_type, validator, sent)

    def check(self, event: Event) -> None:
        """:meth:`check_event` for an event already encoded: its body's ``data``, the
        bytes every receiver gets, is what is checked."""
        validator = self._validator(event.type)
        if validator is not None:
            self._validate(event.type, validator, json.loads(event.body)["data"])

    def _validator(self, event_type: str) -> _Validator | None:
        try:
            return self._validators[event_type]
        except (KeyError, TypeError):  # TypeError: an unhashable "type"
            raise InvalidEventError(self._unknown(event_type)) from None

    def _validate(self, event_type: str, validator: _Validator, data: JSON) -> None:
        assert self._best_match is not None  # a validator means jsonschema is loaded
        try:
            error = self._best_match(validator.iter_errors(data))
        except self._unresolvable as exc:  # a $ref to another document: none is fetched
            raise InvalidEventError(
                f"the schema of {event_type!r} in the catalog refers to what it cannot"
                f" resolve ({exc!s:.200}); a catalog schema's $ref must point inside it"
            ) from None
        except (ArithmeticError, ValueError, RecursionError) as exc:  # 10**400 vs multipleOf
            raise InvalidEventError(
                f"event data of {event_type!r} could not be checked against its schema in"
                f" the catalog ({type(exc).__name__}: {exc!s:.200})"
            ) from None
        if error is not None:
            message = error.message
            if len(message) > _MAX_MESSAGE:
                message = message[: _MAX_MESSAGE - 1] + "…"
            raise InvalidEventError(
                f"event data of {event_type!r} does not match its schema in the catalog:"
                f" at {error.json_path}: {message}"
            )

    def check_subscription(self, patterns: Iterable[str]) -> None:
        """Raise InvalidEndpointError unless every pattern names something in the catalog.

        An exact type must be one of the catalog's; ``prefix.*`` must match at least
        one of its types; ``*`` is always fine (it also gets types added later).
        """
        if isinstance(patterns, str):
            patterns = (patterns,)
        for pattern in patterns:
            if pattern == ALL_EVENTS or pattern in self._types or pattern in self._prefixes:
                continue
            if isinstance(pattern, str) and pattern.endswith(".*"):
                what = f"{pattern!r:.80} matches no event type in the catalog"
            else:
                what = f"{pattern!r:.80} is not an event type in the catalog"
            raise InvalidEndpointError(
                f"cannot subscribe: {what}{self._suggestion(pattern)}; known types:"
                f" {self._known()} (or '*' for all)"
            )

    # Messages ----------------------------------------------------------------------

    def _unknown(self, event_type: object) -> str:
        return (
            f"unknown event type {event_type!r:.80}: it is not in the catalog"
            f"{self._suggestion(event_type)}; known types: {self._known()}"
        )

    def _known(self) -> str:
        names = list(self._types)
        shown = ", ".join(names[:_SHOWN_TYPES])
        more = len(names) - _SHOWN_TYPES
        return shown + (f" and {more} more" if more > 0 else "")

    def _suggestion(self, name: object) -> str:
        if not isinstance(name, str):
            return ""
        import difflib  # noqa: PLC0415 - for error messages only

        candidates = [*self._types, *self._prefixes]
        close = difflib.get_close_matches(name, candidates, n=1)
        return f" (did you mean {close[0]!r}?)" if close else ""


def _check_entry(position: int, event_type: object, declared: Mapping[str, EventType]) -> None:
    """One entry of a catalog, before its schema: the form of each field."""
    if not isinstance(event_type, EventType):
        raise InvalidInputError(
            f"catalog entry {position} is a {type(event_type).__name__}, not an EventType"
        )
    try:
        _check_event_type(event_type.name)
    except InvalidEventError as exc:
        raise InvalidInputError(f"catalog entry {position}: {exc}") from None
    if event_type.name in declared:
        raise InvalidInputError(f"event type {event_type.name!r} is in the catalog twice")
    if not isinstance(event_type.description, str):
        raise InvalidInputError(f"the description of {event_type.name!r} must be a string")
    schema = event_type.schema
    if schema is not None and not isinstance(schema, Mapping | bool):
        raise InvalidInputError(
            f"the schema of {event_type.name!r} must be a JSON Schema (a dict), not a"
            f" {type(schema).__name__}"
        )
    if event_type.example is not None:
        try:
            json.dumps(event_type.example, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidInputError(
                f"the example of {event_type.name!r} is not JSON: {exc}"
            ) from None


def _import_jsonschema() -> Any:
    """The jsonschema module: imported here, when a catalog first has a schema."""
    try:  # optional, and slow to import
        return importlib.import_module("jsonschema")
    except ImportError as exc:
        raise MissingDependencyError(
            "the event catalog's JSON Schemas need jsonschema:"
            " pip install 'hookdispatch[catalog]' (or leave the schemas out)"
        ) from exc


def _compile(jsonschema: Any, event_type: EventType) -> _Validator:
    """The validator of a type's schema, checked; its example checked against it."""
    name = event_type.name
    schema = event_type.schema
    if isinstance(schema, Mapping):
        declared = schema.get("$schema")
        if declared is not None and (
            not isinstance(declared, str) or declared.rstrip("#") != DRAFT_2020_12
        ):
            raise InvalidInputError(
                f"the schema of {name!r} declares $schema {declared!r:.80}; catalog schemas"
                f" are JSON Schema Draft 2020-12: remove $schema or set it to {DRAFT_2020_12}"
            )
        try:  # our own copy, JSON through and through (tuples become lists)
            schema = json.loads(json.dumps(schema, allow_nan=False))
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidInputError(f"the schema of {name!r} is not JSON: {exc}") from None
    cls = jsonschema.Draft202012Validator
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidInputError(
            f"the schema of {name!r} is not a valid JSON Schema (Draft 2020-12):"
            f" at {exc.json_path}: {exc.message:.200}"
        ) from None
    # An empty registry: a $ref to another document is never retrieved (jsonschema's
    # default would fetch it over the network, at dispatch time).
    registry = importlib.import_module("referencing").Registry()
    validator: _Validator = cls(schema, registry=registry)
    if event_type.example is not None:
        error = jsonschema.exceptions.best_match(validator.iter_errors(event_type.example))
        if error is not None:
            raise InvalidInputError(
                f"the example of {name!r} does not match its schema:"
                f" at {error.json_path}: {error.message:.200}"
            )
    return validator
