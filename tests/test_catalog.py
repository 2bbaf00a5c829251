"""The event catalog: declared types, checked at dispatch and at subscription.

Through both drivers (``make_dispatcher``) on the storages we ship; the catalog's own
checks directly; and the ``catalog`` extra's absence in a subprocess.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import hookdispatch as hd

from stubs import recording

INVOICE_SCHEMA = {
    "type": "object",
    "properties": {
        "invoice_id": {"type": "string"},
        "amount": {"type": "integer", "minimum": 0},
        "lines": {
            "type": "array",
            "items": {"type": "object", "properties": {"amount": {"type": "integer"}}},
        },
        "note": {"type": "string", "maxLength": 10},
    },
    "required": ["invoice_id", "amount"],
}
INVOICE = {"invoice_id": "in_1", "amount": 4900}


def guide_catalog() -> hd.Catalog:
    return hd.Catalog(
        [
            hd.EventType("user.created", "Triggered when a new user signs up"),
            hd.EventType(
                "user.subscription.updated", "Triggered when a user's subscription changes"
            ),
            hd.EventType("user.deleted", "Triggered when a user account is deleted"),
            hd.EventType(
                "invoice.paid",
                "Triggered when an invoice is paid",
                schema=INVOICE_SCHEMA,
                example=INVOICE,
            ),
        ]
    )


@pytest.fixture
def catalog() -> hd.Catalog:
    return guide_catalog()


def nothing_stored(storage: hd.Storage, *ids: str) -> bool:
    """No delivery at all (an endpoint takes "*"), and none of these event ids."""
    for event_id in ids:
        with pytest.raises(hd.UnknownEventError):
            storage.get_event(event_id)
    return storage.list_deliveries() == []


# The catalog itself ------------------------------------------------------------------


def test_a_catalog_is_its_types_in_declaration_order(catalog: hd.Catalog) -> None:
    assert [t.name for t in catalog] == [
        "user.created",
        "user.subscription.updated",
        "user.deleted",
        "invoice.paid",
    ]
    assert len(catalog) == 4
    assert "user.deleted" in catalog
    assert "user.create" not in catalog
    assert ["not", "hashable"] not in catalog
    assert catalog["invoice.paid"].example == INVOICE
    assert catalog["user.created"].description == "Triggered when a new user signs up"
    assert catalog["user.created"].schema is None
    with pytest.raises(KeyError):
        catalog["user.create"]
    assert repr(catalog) == "<Catalog of 4 event types>"


def test_event_type_options_after_the_description_are_keywords() -> None:
    with pytest.raises(TypeError):
        hd.EventType("user.created", "described", {"type": "object"})  # type: ignore[misc]
    event_type = hd.EventType("user.created")
    assert (event_type.description, event_type.schema, event_type.example) == ("", None, None)


@pytest.mark.parametrize(
    ("types", "message"),
    [
        ([], "at least one event type"),
        ([hd.EventType("user.created"), hd.EventType("user.created")], "twice"),
        ([hd.EventType("user created")], "catalog entry 0"),
        ([hd.EventType("user.*")], "catalog entry 0"),
        ([hd.EventType("")], "catalog entry 0"),
        ([hd.EventType("a"), "user.deleted"], "catalog entry 1 is a str"),
        ([hd.EventType("a", 42)], "description"),  # type: ignore[arg-type]
        ([hd.EventType("a", schema=["type"])], "must be a JSON Schema"),  # type: ignore[arg-type]
        ([hd.EventType("a", schema={"type": "nonsense"})], "not a valid JSON Schema"),
        ([hd.EventType("a", schema={"minimum": "zero"})], "at $.minimum"),
        ([hd.EventType("a", schema={"x": {1, 2}})], "is not JSON"),
        (
            [hd.EventType("a", schema={"$schema": "http://json-schema.org/draft-07/schema#"})],
            "Draft 2020-12",
        ),
        (
            [hd.EventType("invoice.paid", schema=INVOICE_SCHEMA, example={"amount": 1})],
            "the example of 'invoice.paid' does not match its schema",
        ),
        ([hd.EventType("a", example={1, 2})], "the example of 'a' is not JSON"),
        ([hd.EventType("a", example=float("nan"))], "the example of 'a' is not JSON"),
    ],
)
def test_a_mistake_in_the_catalog_is_refused_when_it_is_built(
    types: list[Any], message: str
) -> None:
    with pytest.raises(hd.InvalidInputError, match=message.replace("$", r"\$")):
        hd.Catalog(types)


def test_a_catalog_takes_a_list_not_one_type() -> None:
    with pytest.raises(hd.InvalidInputError, match="list of EventType"):
        hd.Catalog(hd.EventType("user.created"))  # type: ignore[arg-type]
    with pytest.raises(hd.InvalidInputError, match="list of EventType"):
        hd.Catalog("user.created")  # type: ignore[arg-type]


def test_the_2020_12_dialect_may_be_named() -> None:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"}
    catalog = hd.Catalog([hd.EventType("a", schema=schema)])
    catalog.check_event("a", {})
    with pytest.raises(hd.InvalidEventError):
        catalog.check_event("a", [])


def test_the_catalog_keeps_its_own_copy_of_a_schema() -> None:
    schema: dict[str, Any] = {"type": "object", "required": ["user_id"]}
    catalog = hd.Catalog([hd.EventType("user.deleted", schema=schema)])
    schema["required"].append("reason")
    catalog.check_event("user.deleted", {"user_id": "user_1"})


def test_check_event_names_the_type_and_the_path(catalog: hd.Catalog) -> None:
    catalog.check_event("invoice.paid", INVOICE)
    catalog.check_event("user.created", {"anything": ["at", "all"]})  # no schema: any JSON
    with pytest.raises(hd.InvalidEventError) as info:
        catalog.check_event("invoice.paid", {**INVOICE, "lines": [{"amount": "12.50"}]})
    message = str(info.value)
    assert "'invoice.paid'" in message
    assert "at $.lines[0].amount: '12.50' is not of type 'integer'" in message
    with pytest.raises(hd.InvalidEventError, match="'invoice_id' is a required property"):
        catalog.check_event("invoice.paid", {"amount": 1})


def test_check_event_does_not_echo_large_data(catalog: hd.Catalog) -> None:
    with pytest.raises(hd.InvalidEventError) as info:
        catalog.check_event("invoice.paid", {**INVOICE, "note": "x" * 100_000})
    assert "at $.note" in str(info.value)
    assert len(str(info.value)) < 400
    with pytest.raises(hd.InvalidEventError) as info:
        catalog.check_event("invoice.paid", ["y" * 1000] * 1000)
    assert len(str(info.value)) < 400


def test_an_unknown_type_is_named_with_a_suggestion_and_the_known_ones(
    catalog: hd.Catalog,
) -> None:
    with pytest.raises(hd.InvalidEventError) as info:
        catalog.check_event("user.create", {})
    message = str(info.value)
    assert "unknown event type 'user.create'" in message
    assert "did you mean 'user.created'?" in message
    assert "user.created, user.subscription.updated, user.deleted, invoice.paid" in message


def test_an_error_lists_a_few_of_many_known_types() -> None:
    catalog = hd.Catalog([hd.EventType(f"thing.{n}") for n in range(40)])
    with pytest.raises(hd.InvalidEventError) as info:
        catalog.check_event("other", {})
    assert "thing.0, thing.1, thing.2, thing.3, thing.4 and 35 more" in str(info.value)


def test_check_subscription(catalog: hd.Catalog) -> None:
    catalog.check_subscription(["*"])
    catalog.check_subscription(["user.created", "user.*", "user.subscription.*", "invoice.*"])
    catalog.check_subscription("user.*")
    with pytest.raises(hd.InvalidEndpointError) as info:
        catalog.check_subscription(["user.created", "user.updated"])
    message = str(info.value)
    assert "'user.updated' is not an event type in the catalog" in message
    assert "user.created, user.subscription.updated, user.deleted, invoice.paid" in message
    with pytest.raises(hd.InvalidEndpointError, match=r"'users\.\*' matches no event type"):
        catalog.check_subscription(["users.*"])
    with pytest.raises(hd.InvalidEndpointError, match="matches no event type"):
        catalog.check_subscription(["invoice.paid.*"])  # a type is not a prefix of itself


def test_format_is_an_annotation_not_a_check() -> None:
    schema = {"type": "string", "format": "email"}
    hd.Catalog([hd.EventType("a", schema=schema)]).check_event("a", "not an email")


def test_a_ref_within_the_schema_is_followed_and_none_is_fetched() -> None:
    schema = {
        "$defs": {"money": {"type": "integer"}},
        "properties": {"amount": {"$ref": "#/$defs/money"}},
    }
    catalog = hd.Catalog([hd.EventType("a", schema=schema)])
    with pytest.raises(hd.InvalidEventError, match=r"at \$\.amount"):
        catalog.check_event("a", {"amount": "1"})
    remote = hd.Catalog([hd.EventType("b", schema={"$ref": "https://example.com/b.json"})])
    with pytest.raises(hd.InvalidEventError, match="cannot resolve"):
        remote.check_event("b", {})


# Through the dispatchers -------------------------------------------------------------


def test_an_unknown_type_is_refused_and_nothing_stored(
    storage: hd.Storage, make_dispatcher: Callable[..., Any], driver: str, catalog: hd.Catalog
) -> None:
    transport = recording(driver)
    hooks = make_dispatcher(storage=storage, workers=0, transport=transport, catalog=catalog)
    hooks.add_endpoint("https://a.example/hooks")  # "*"
    with pytest.raises(hd.InvalidEventError, match=r"unknown event type 'user\.updated'"):
        hooks.dispatch("user.updated", {"user_id": "user_1"}, id="evt-1")
    assert nothing_stored(storage, "evt-1")
    assert transport.urls == []

    event = hooks.dispatch("user.created", {"user_id": "user_1"}, id="evt-2")
    assert storage.get_event(event.id).type == "user.created"
    assert transport.urls == ["https://a.example/hooks"]


def test_data_that_fails_the_schema_is_refused_with_its_path(
    storage: hd.Storage, make_dispatcher: Callable[..., Any], driver: str, catalog: hd.Catalog
) -> None:
    transport = recording(driver)
    hooks = make_dispatcher(storage=storage, workers=0, transport=transport, catalog=catalog)
    hooks.add_endpoint("https://a.example/hooks")
    with pytest.raises(hd.InvalidEventError) as info:
        hooks.dispatch("invoice.paid", {"invoice_id": "in_1", "amount": -5}, id="evt-1")
    assert "'invoice.paid'" in str(info.value)
    assert "at $.amount: -5 is less than the minimum of 0" in str(info.value)
    assert nothing_stored(storage, "evt-1")
    assert transport.urls == []
    hooks.dispatch("invoice.paid", INVOICE)
    assert len(transport.urls) == 1


def test_a_batch_is_refused_whole_naming_the_position(
    storage: hd.Storage, make_dispatcher: Callable[..., Any], driver: str, catalog: hd.Catalog
) -> None:
    transport = recording(driver)
    hooks = make_dispatcher(storage=storage, workers=0, transport=transport, catalog=catalog)
    hooks.add_endpoint("https://a.example/hooks")
    bad_data = [
        ("user.created", {}, "evt-1"),
        ("invoice.paid", INVOICE, "evt-2"),
        ("invoice.paid", {"invoice_id": 7, "amount": 1}, "evt-3"),
    ]
    with pytest.raises(hd.InvalidEventError, match=r"item 2 of the batch: .*at \$\.invoice_id"):
        hooks.dispatch_many(bad_data)
    unknown = [("user.created", {}, "evt-1"), ("user.renamed", {}, "evt-4")]
    with pytest.raises(hd.InvalidEventError, match="item 1 of the batch: unknown event type"):
        hooks.dispatch_many(unknown)
    assert nothing_stored(storage, "evt-1", "evt-2", "evt-3", "evt-4")
    assert transport.urls == []

    events = hooks.dispatch_many([("user.created", {}), ("invoice.paid", INVOICE)])
    assert [e.type for e in events] == ["user.created", "invoice.paid"]
    assert len(transport.urls) == 2


def test_a_subscription_to_nothing_in_the_catalog_is_refused(
    storage: hd.Storage, make_dispatcher: Callable[..., Any], catalog: hd.Catalog
) -> None:
    hooks = make_dispatcher(storage=storage, workers=0, catalog=catalog)
    with pytest.raises(hd.InvalidEndpointError, match=r"'user\.updated' is not an event type"):
        hooks.add_endpoint("https://a.example/hooks", events=["user.created", "user.updated"])
    with pytest.raises(hd.InvalidEndpointError, match=r"known types: user\.created"):
        hooks.add_endpoint("https://a.example/hooks", events=["users.*"], tenant="acct_1")
    assert hooks.endpoints() == []

    everything = hooks.add_endpoint("https://a.example/all", events=["*"])
    users = hooks.add_endpoint("https://a.example/users", events=["user.*", "invoice.paid"])
    assert hooks.endpoints() == [everything, users]


def test_the_subscription_is_checked_before_the_target(
    make_dispatcher: Callable[..., Any], catalog: hd.Catalog
) -> None:
    hooks = make_dispatcher(
        storage=hd.MemoryStorage(), workers=0, catalog=catalog, targets=hd.TargetPolicy()
    )
    with pytest.raises(hd.InvalidEndpointError, match="not an event type in the catalog"):
        hooks.add_endpoint("http://127.0.0.1/hooks", events=["nope"])


def test_without_a_catalog_nothing_changes(
    storage: hd.Storage, make_dispatcher: Callable[..., Any], driver: str
) -> None:
    transport = recording(driver)
    hooks = make_dispatcher(storage=storage, workers=0, transport=transport)
    hooks.add_endpoint("https://a.example/hooks", events=["anything.*", "whatever"])
    hooks.dispatch("anything.at.all", {"amount": "not checked"})
    hooks.dispatch_many([("whatever", [1, 2]), ("not.subscribed", None)])
    assert len(transport.urls) == 2


def test_the_catalog_option_must_be_a_catalog(make_dispatcher: Callable[..., Any]) -> None:
    with pytest.raises(hd.InvalidInputError, match="catalog must be a hookdispatch Catalog"):
        make_dispatcher(storage=hd.MemoryStorage(), workers=0, catalog=["user.created"])


def test_the_outbox_form_is_checked_too(
    tmp_path: Path, make_dispatcher: Callable[..., Any], catalog: hd.Catalog
) -> None:
    storage = hd.SQLiteStorage(tmp_path / "app.db")
    hooks = make_dispatcher(storage=storage, workers=1, poll_interval=60, catalog=catalog)
    hooks.add_endpoint("https://a.example/hooks")
    conn = sqlite3.connect(tmp_path / "app.db", check_same_thread=False)
    try:
        with pytest.raises(hd.InvalidEventError, match="unknown event type"):
            hooks.dispatch("user.updated", {}, id="evt-1", transaction=conn)
        with pytest.raises(hd.InvalidEventError, match=r"at \$\.amount"):
            hooks.dispatch("invoice.paid", {"invoice_id": "in_1", "amount": "1"}, transaction=conn)
        conn.commit()
        assert nothing_stored(storage, "evt-1")
    finally:
        conn.close()


def test_both_constructors_take_the_catalog_as_a_keyword_option() -> None:
    import inspect  # noqa: PLC0415

    for cls in (hd.Dispatcher, hd.AsyncDispatcher):
        parameter = inspect.signature(cls).parameters["catalog"]
        assert (parameter.name, parameter.default, parameter.kind) == (
            "catalog",
            None,
            inspect.Parameter.KEYWORD_ONLY,
        )


# Without the extra -------------------------------------------------------------------


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_schema_without_jsonschema_names_the_extra() -> None:
    result = run(
        "import sys\n"
        "sys.modules['jsonschema'] = None  # as if it were not installed\n"
        "import hookdispatch as hd\n"
        "names_only = hd.Catalog([hd.EventType('user.created', 'signs up', example={})])\n"
        "names_only.check_event('user.created', {'any': 'thing'})\n"
        "try:\n"
        "    hd.Catalog([hd.EventType('user.created', schema={'type': 'object'})])\n"
        "except hd.MissingDependencyError as exc:\n"
        "    assert isinstance(exc, ImportError)\n"
        "    print(exc)\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'hookdispatch[catalog]'" in result.stdout


def test_jsonschema_is_imported_only_for_a_schema() -> None:
    result = run(
        "import sys, hookdispatch as hd\n"
        "catalog = hd.Catalog([hd.EventType('user.created', 'signs up')])\n"
        "with hd.Dispatcher(storage=hd.MemoryStorage(), workers=0, catalog=catalog) as hooks:\n"
        "    hooks.dispatch('user.created', {})\n"
        "assert 'jsonschema' not in sys.modules, 'imported without a schema'\n"
        "hd.Catalog([hd.EventType('user.created', schema={'type': 'object'})])\n"
        "assert 'jsonschema' in sys.modules\n"
    )
    assert result.returncode == 0, result.stderr


def test_a_remote_ref_is_never_fetched(httpserver: Any) -> None:
    """jsonschema's default registry retrieves a $ref over the network; ours never does."""
    httpserver.expect_request("/schema.json").respond_with_json({"type": "string"})
    url = httpserver.url_for("/schema.json")
    catalog = hd.Catalog(
        [hd.EventType("a.b", schema={"type": "object", "properties": {"n": {"$ref": url}}})]
    )
    hooks = hd.Dispatcher(storage=hd.MemoryStorage(), workers=0, catalog=catalog)
    with pytest.raises(hd.InvalidEventError, match="cannot resolve"):
        hooks.dispatch("a.b", {"n": "x"})
    assert httpserver.log == []


@pytest.mark.parametrize(
    ("schema", "data"),
    [
        ({"type": "object", "properties": {"n": {"multipleOf": 0.1}}}, {"n": 10**400}),
        ({"type": "object", "properties": {"1": {"type": "string"}}}, {1: 5}),
        ({"type": "object", "properties": {"1": {"type": "string"}}}, {"1": "ok", 1: 5}),
    ],
)
def test_data_is_checked_as_sent_and_only_invalid_event_error_escapes(
    schema: dict[str, Any], data: Any
) -> None:
    catalog = hd.Catalog([hd.EventType("a.b", schema=schema)])
    hooks = hd.Dispatcher(storage=hd.MemoryStorage(), workers=0, catalog=catalog)
    with pytest.raises(hd.InvalidEventError):
        hooks.dispatch("a.b", data)
    with pytest.raises(hd.InvalidEventError):
        hooks.dispatch_many([("a.b", data)])
    with pytest.raises(hd.InvalidEventError):
        catalog.check_event("a.b", data)


def test_a_tuple_is_an_array_as_sent() -> None:
    schema = {"type": "object", "properties": {"xs": {"type": "array"}}}
    catalog = hd.Catalog([hd.EventType("a.b", schema=schema)])
    catalog.check_event("a.b", {"xs": (1, 2)})
    hd.Dispatcher(storage=hd.MemoryStorage(), workers=0, catalog=catalog).dispatch(
        "a.b", {"xs": (1, 2)}
    )
