"""Endpoint secrets encrypted at rest (EncryptedStorage): on real SQLite files, in
MemoryStorage and on PostgreSQL; through Dispatchers that deliver to a real local
receiver; key rotation, migration of a plain-text database, wrong keys, the command
line, and the conformance suite run through the wrapper."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import psycopg
import pytest
from click.testing import CliRunner, Result
from psycopg import sql
from pytest_httpserver import HTTPServer
from standardwebhooks import Webhook
from werkzeug import Request, Response

import hookdispatch as hd
from hookdispatch._models import ENCRYPTED_SECRET_PREFIX
from hookdispatch.cli._app import cli
from hookdispatch.storage import EncryptedStorage, Storage
from hookdispatch.testing import FactorySpec, StorageConformance
from pg_fixtures import new_schema, postgres_admin_dsn, postgres_dsn  # noqa: F401 - fixtures

from receivers import wait_for
from stubs import Recording

KEY = EncryptedStorage.generate_key()
OLD_KEY = EncryptedStorage.generate_key()
NEW_KEY = EncryptedStorage.generate_key()
PREFIX = ENCRYPTED_SECRET_PREFIX

# Storage methods whose arguments or results carry endpoints: these encrypt or decrypt.
# Every other public method of Storage must be forwarded to the inner storage as is.
ENCRYPTS = {"add_endpoint", "update_endpoint"}
DECRYPTS = {
    "get_endpoint",
    "list_endpoints",
    "find_endpoints",
    "endpoints_for",
    "claim",
    "complete_and_claim",
    "complete_many",
    "add_event_and_claim",
}


def open_encrypted_sqlite(path: str, key: str) -> EncryptedStorage:
    """The conformance suite's factory, for the processes it starts."""
    return EncryptedStorage(hd.SQLiteStorage(path), keys=[key])


def open_encrypted_postgres(dsn: str, schema: str, key: str) -> EncryptedStorage:
    """The same, on PostgreSQL."""
    return EncryptedStorage(hd.PostgresStorage(dsn, schema=schema, max_connections=4), keys=[key])


def raw_secrets(path: Path) -> dict[str, tuple[str, str | None]]:
    """Each endpoint's ``secret`` and ``previous_secret`` as the SQLite file holds them."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT id, secret, previous_secret FROM endpoints").fetchall()
    conn.close()
    return {row[0]: (row[1], row[2]) for row in rows}


def file_bytes(path: Path) -> bytes:
    """The database file and its WAL and shared-memory files, as they are on disk."""
    return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))


def vacuum(path: Path) -> None:
    """What docs/security.md says to run after encrypting a plain-text SQLite file: the
    old rows linger in free pages and in the WAL until then."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("VACUUM")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def public_methods() -> dict[str, Any]:
    """Every public method of the Storage contract, abstract or with a default."""
    return {
        name: member
        for name, member in inspect.getmembers(Storage, inspect.isfunction)
        if not name.startswith("_")
    }


PUBLIC_METHODS = frozenset(public_methods())


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "hooks.db"


@pytest.fixture
def hooks_url(httpserver: HTTPServer) -> str:
    httpserver.expect_request("/hooks", method="POST").respond_with_data("ok")
    return httpserver.url_for("/hooks")


@pytest.fixture
def sqlite_inner(db: Path) -> Iterator[hd.SQLiteStorage]:
    storage = hd.SQLiteStorage(db)
    yield storage
    storage.close()


# The wrapper covers the whole contract ----------------------------------------------


def test_every_public_storage_method_is_overridden() -> None:
    """A method added to Storage later must not fall through to a default that
    bypasses the inner backend (or hands out an encrypted secret)."""
    missing = sorted(name for name in public_methods() if name not in vars(EncryptedStorage))
    assert not missing, (
        f"EncryptedStorage does not override Storage.{', Storage.'.join(missing)}: forward"
        " each to self._inner (decrypting what returns endpoints, encrypting what stores them)"
    )


def test_methods_that_carry_endpoints_are_the_ones_that_encrypt_or_decrypt() -> None:
    """A new method that stores or returns endpoints (or claims) must encrypt or decrypt."""
    for name, method in public_methods().items():
        signature = inspect.signature(method)
        carries = re.compile(r"\b(Endpoint|Claim)\b")  # not EndpointQuery
        takes = any(
            re.search(r"\bEndpoint\b", str(p.annotation)) for p in signature.parameters.values()
        )
        returns = bool(carries.search(str(signature.return_annotation)))
        if takes:
            assert name in ENCRYPTS, f"Storage.{name} takes an endpoint: encrypt its secrets"
        if returns:
            assert name in DECRYPTS, f"Storage.{name} returns endpoints: decrypt their secrets"


def _sample_arguments(method: Any) -> tuple[list[object], dict[str, object]]:
    args: list[object] = []
    kwargs: dict[str, object] = {}
    for parameter in list(inspect.signature(method).parameters.values())[1:]:  # not self
        value = getattr(mock.sentinel, parameter.name)
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
            kwargs[parameter.name] = value
        else:
            args.append(value)
    return args, kwargs


@pytest.mark.parametrize(
    "name", sorted(set(public_methods()) - ENCRYPTS - DECRYPTS), ids=lambda name: name
)
def test_every_other_method_is_forwarded_to_the_inner_storage(name: str) -> None:
    inner = mock.create_autospec(hd.MemoryStorage, instance=True)
    inner.blocking = False
    storage = EncryptedStorage(inner, keys=[KEY])
    args, kwargs = _sample_arguments(getattr(Storage, name))
    result = getattr(storage, name)(*args, **kwargs)
    getattr(inner, name).assert_called_once_with(*args, **kwargs)
    if inspect.signature(getattr(Storage, name)).return_annotation == "None":
        assert result is None
    else:
        assert result is getattr(inner, name).return_value


def test_blocking_is_the_inner_storages(db: Path) -> None:
    assert EncryptedStorage(hd.MemoryStorage(), keys=[KEY]).blocking is False
    on_disk = EncryptedStorage(hd.SQLiteStorage(db), keys=[KEY])
    assert on_disk.blocking is True
    on_disk.close()
    assert EncryptedStorage.blocking is True  # the class keeps Storage's safe default


class SpyStorage(hd.SQLiteStorage):
    """SQLiteStorage that notes which of its own methods are called."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.called: set[str] = set()

    def __getattribute__(self, name: str) -> Any:
        if name in PUBLIC_METHODS:
            object.__getattribute__(self, "called").add(name)
        return super().__getattribute__(name)


def test_a_dispatcher_uses_the_inner_backends_own_fast_paths(db: Path, hooks_url: str) -> None:
    inner = SpyStorage(db)
    storage = EncryptedStorage(inner, keys=[KEY])
    hooks = hd.Dispatcher(storage=storage, workers=2, poll_interval=0.05)
    hooks.add_endpoint(hooks_url)
    hooks.dispatch_many([("user.created", {"n": n}) for n in range(20)])
    assert hooks.drain(timeout=10)
    hooks.prune(older_than=timedelta(days=30))
    hooks.close()
    statuses = {d.status for d in storage.list_deliveries()}
    assert statuses == {hd.DeliveryStatus.SUCCEEDED}
    assert {"add_events", "claim", "complete_many", "prune"} <= inner.called
    storage.close()


# Nothing in plain text at rest -------------------------------------------------------


def test_the_sqlite_file_holds_no_plain_secret(db: Path, hooks_url: str) -> None:
    storage = EncryptedStorage(hd.SQLiteStorage(db), keys=[KEY])
    hooks = hd.Dispatcher(storage=storage, workers=0)
    generated = hooks.add_endpoint(hooks_url)
    chosen = hooks.add_endpoint(hooks_url, secret="a chosen secret, long enough")
    hooks.close()
    storage.close()

    stored = raw_secrets(db)
    for endpoint in (generated, chosen):
        secret, previous = stored[endpoint.id]
        assert secret.startswith(PREFIX)
        assert endpoint.secret not in secret
        assert previous is None
        assert endpoint.secret.encode() not in file_bytes(db)
    # Fernet encrypts with a fresh IV every time: equal secrets do not look equal.
    assert stored[generated.id][0] != stored[chosen.id][0]


def test_secrets_come_back_decrypted_from_every_read(tmp_path: Path) -> None:
    for inner in (hd.MemoryStorage(), hd.SQLiteStorage(tmp_path / "reads.db")):
        storage = EncryptedStorage(inner, keys=[KEY])
        now = datetime.now(UTC)
        endpoint = hd.Endpoint.create("https://example.com/hooks", now=now, events=["a.*"])
        storage.add_endpoint(endpoint)
        assert inner.get_endpoint(endpoint.id).secret.startswith(PREFIX)
        assert storage.get_endpoint(endpoint.id) == endpoint
        assert storage.list_endpoints() == [endpoint]
        assert storage.endpoints_for(hd.DEFAULT_TENANT, "a.b") == [endpoint]

        event = hd.Event.create("a.b", {}, now=now)
        storage.add_event(event, [hd.Delivery.create(event, endpoint, now=now)])
        [claim] = storage.claim(now=now, lease_until=now + timedelta(minutes=1), limit=5)
        assert claim.endpoint == endpoint
        storage.close()


def test_an_endpoint_read_from_the_inner_storage_is_not_encrypted_twice(
    sqlite_inner: hd.SQLiteStorage,
) -> None:
    storage = EncryptedStorage(sqlite_inner, keys=[KEY])
    endpoint = hd.Endpoint.create("https://example.com/hooks", now=datetime.now(UTC))
    storage.add_endpoint(endpoint)
    storage.update_endpoint(sqlite_inner.get_endpoint(endpoint.id))  # as stored: encrypted
    assert storage.get_endpoint(endpoint.id).secret == endpoint.secret


# Delivering through the wrapper ------------------------------------------------------


def test_a_dispatcher_signs_with_the_plain_secret(
    db: Path, hooks_url: str, httpserver: HTTPServer
) -> None:
    storage = EncryptedStorage(hd.SQLiteStorage(db), keys=[KEY])
    hooks = hd.Dispatcher(storage=storage, workers=0)
    endpoint = hooks.add_endpoint(hooks_url)
    event = hooks.dispatch("user.created", {"user_id": "user_78451"})
    assert hooks.deliveries(event_id=event.id)[0].status == "succeeded"
    hooks.close()
    storage.close()

    [(request, _)] = httpserver.log
    body = request.get_data()
    assert hd.verify_signature(body, request.headers["x-webhook-signature"], endpoint.secret)
    assert hd.verify_standard_webhook(body, request.headers, endpoint.secret, now=time.time())
    Webhook(endpoint.secret).verify(body, dict(request.headers))  # the reference library


def test_a_background_dispatcher_delivers_through_the_wrapper(
    db: Path, hooks_url: str, httpserver: HTTPServer
) -> None:
    storage = EncryptedStorage(hd.SQLiteStorage(db), keys=[KEY])
    hooks = hd.Dispatcher(storage=storage, workers=4, poll_interval=0.05)
    endpoint = hooks.add_endpoint(hooks_url)
    for n in range(10):
        hooks.dispatch("user.created", {"n": n})
    assert hooks.drain(timeout=10)
    hooks.close()
    storage.close()
    assert len(httpserver.log) == 10
    for request, _ in httpserver.log:
        Webhook(endpoint.secret).verify(request.get_data(), dict(request.headers))


def test_an_async_dispatcher_delivers_through_the_wrapper(
    hooks_url: str, httpserver: HTTPServer
) -> None:
    async def main() -> hd.Endpoint:
        storage = EncryptedStorage(hd.MemoryStorage(), keys=[KEY])
        async with hd.AsyncDispatcher(storage=storage, concurrency=0) as hooks:
            endpoint = await hooks.add_endpoint(hooks_url)
            await hooks.dispatch("user.created", {"user_id": "user_78451"})
        return endpoint

    endpoint = asyncio.run(main())
    [(request, _)] = httpserver.log
    Webhook(endpoint.secret).verify(request.get_data(), dict(request.headers))


def test_a_rotation_keeps_both_secrets_encrypted_and_both_signatures_sent(
    db: Path, hooks_url: str, httpserver: HTTPServer
) -> None:
    storage = EncryptedStorage(hd.SQLiteStorage(db), keys=[KEY])
    hooks = hd.Dispatcher(storage=storage, workers=0)
    old = hooks.add_endpoint(hooks_url)
    rotated = hooks.rotate_secret(old.id, grace=3600)
    assert rotated.previous_secret == old.secret
    assert storage.get_endpoint(old.id) == rotated

    secret, previous = raw_secrets(db)[old.id]
    assert secret.startswith(PREFIX)
    assert previous is not None
    assert previous.startswith(PREFIX)
    for plain in (old.secret, rotated.secret):
        assert plain.encode() not in file_bytes(db)

    hooks.dispatch("user.created", {"user_id": "user_78451"})
    hooks.close()
    storage.close()
    [(request, _)] = httpserver.log
    body, headers = request.get_data(), dict(request.headers)
    assert len(headers["Webhook-Signature"].split()) == 2
    for plain in (rotated.secret, old.secret):
        Webhook(plain).verify(body, headers)
    assert hd.verify_signature(body, headers["X-Webhook-Signature"], old.secret)


# Key rotation and migration -----------------------------------------------------------


def test_key_rotation_new_key_first_reencrypt_then_drop_the_old_key(
    db: Path, hooks_url: str, httpserver: HTTPServer
) -> None:
    inner = hd.SQLiteStorage(db)
    before = EncryptedStorage(inner, keys=[OLD_KEY])
    hooks = hd.Dispatcher(storage=before, workers=0)
    plain = hooks.add_endpoint(hooks_url)
    rotating = hooks.add_endpoint(hooks_url)
    rotating = hooks.rotate_secret(rotating.id, grace=3600)
    hooks.close()
    stored_before = raw_secrets(db)

    # 1. The new key first, the old one after it: everything still reads.
    during = EncryptedStorage(inner, keys=[NEW_KEY, OLD_KEY])
    assert during.list_endpoints() == [plain, rotating]
    # 2. Re-encrypt with the new key; a second run has nothing left to do.
    assert during.reencrypt() == 2
    assert during.reencrypt() == 0
    stored_after = raw_secrets(db)
    for endpoint_id, (secret, previous) in stored_after.items():
        assert secret.startswith(PREFIX)
        assert secret != stored_before[endpoint_id][0]
        assert previous is None or previous.startswith(PREFIX)
    # 3. Drop the old key: the new one alone reads every secret, and delivers.
    after = EncryptedStorage(inner, keys=[NEW_KEY])
    assert after.list_endpoints() == [plain, rotating]
    hooks = hd.Dispatcher(storage=after, workers=0)
    hooks.dispatch("user.created", {})
    hooks.close()
    for request, _ in httpserver.log:
        signed_by = {plain.secret, rotating.secret, rotating.previous_secret}
        assert any(
            hd.verify_standard_webhook(request.get_data(), request.headers, s, now=time.time())
            for s in signed_by
            if s is not None
        )
    assert len(httpserver.log) == 2
    # The old key alone no longer reads them.
    with pytest.raises(hd.StorageError):
        EncryptedStorage(inner, keys=[OLD_KEY]).get_endpoint(plain.id)
    inner.close()


def test_a_plain_text_database_is_encrypted_by_reencrypt(
    db: Path, hooks_url: str, httpserver: HTTPServer
) -> None:
    inner = hd.SQLiteStorage(db)
    hooks = hd.Dispatcher(storage=inner, workers=0)  # before encryption was turned on
    first = hooks.add_endpoint(hooks_url)
    second = hooks.rotate_secret(hooks.add_endpoint(hooks_url).id, grace=3600)
    hooks.close()
    assert raw_secrets(db)[first.id][0] == first.secret

    storage = EncryptedStorage(inner, keys=[KEY])
    # Plain secrets still read, as they are, before the migration...
    assert storage.list_endpoints() == [first, second]
    # ...which encrypts them all, previous secrets included.
    assert storage.reencrypt() == 2
    assert storage.reencrypt() == 0
    for secret, previous in raw_secrets(db).values():
        assert secret.startswith(PREFIX)
        assert previous is None or previous.startswith(PREFIX)
    assert storage.list_endpoints() == [first, second]
    # The old plain-text rows linger in free pages and the WAL until a VACUUM.
    plain = [first.secret, second.secret, second.previous_secret]
    assert any(secret.encode() in file_bytes(db) for secret in plain if secret)
    vacuum(db)
    for secret in plain:
        assert secret is not None
        assert secret.encode() not in file_bytes(db)

    hooks = hd.Dispatcher(storage=storage, workers=0)
    hooks.dispatch("user.created", {})
    hooks.close()
    storage.close()
    requests = {request.headers["webhook-signature"]: request for request, _ in httpserver.log}
    assert len(requests) == 2
    verified = [
        endpoint.id
        for endpoint in (first, second)
        for request in requests.values()
        if hd.verify_standard_webhook(
            request.get_data(), request.headers, endpoint.secret, now=time.time()
        )
    ]
    assert sorted(verified) == sorted([first.id, second.id])


def test_reencrypt_on_memory_and_endpoints_added_meanwhile() -> None:
    inner = hd.MemoryStorage()
    now = datetime.now(UTC)
    legacy = hd.Endpoint.create("https://example.com/a", now=now)
    inner.add_endpoint(legacy)
    storage = EncryptedStorage(inner, keys=[KEY])
    fresh = hd.Endpoint.create("https://example.com/b", now=now)
    storage.add_endpoint(fresh)  # already encrypted with the first key
    assert storage.reencrypt() == 1
    assert storage.list_endpoints() == [legacy, fresh]


# Wrong keys, bad keys, and no wrapper -------------------------------------------------


def test_a_wrong_key_is_a_storage_error_that_quotes_nothing_secret(
    sqlite_inner: hd.SQLiteStorage, hooks_url: str, httpserver: HTTPServer
) -> None:
    storage = EncryptedStorage(sqlite_inner, keys=[KEY])
    endpoint = hd.Endpoint.create(hooks_url, now=datetime.now(UTC))
    storage.add_endpoint(endpoint)
    token = sqlite_inner.get_endpoint(endpoint.id).secret

    wrong = EncryptedStorage(sqlite_inner, keys=[OLD_KEY, NEW_KEY])
    calls = [
        lambda: wrong.get_endpoint(endpoint.id),
        wrong.list_endpoints,
        lambda: wrong.endpoints_for(hd.DEFAULT_TENANT, "user.created"),
        wrong.reencrypt,
        lambda: wrong.update_endpoint(sqlite_inner.get_endpoint(endpoint.id)),
    ]
    for call in calls:
        with pytest.raises(hd.StorageError) as caught:
            call()
        message = str(caught.value)
        expected = (
            f"no configured key (2 keys given) decrypts the secret of endpoint {endpoint.id!r}"
        )
        assert expected in message
        assert "reencrypt()" in message
        for secret in (endpoint.secret, token, token[len(PREFIX) :], KEY, OLD_KEY, NEW_KEY):
            assert secret not in message
            assert secret not in repr(caught.value)
        assert caught.value.__cause__ is None  # no chained cryptography error with the token
        assert caught.value.__suppress_context__

    # A dispatcher over the wrong key sends nothing, and loses nothing: the event is
    # stored (its fan-out reads no secret), its delivery waits for the right key.
    hooks = hd.Dispatcher(storage=wrong, workers=0)
    with pytest.raises(hd.StorageError, match="no configured key"):
        hooks.dispatch("user.created", {})
    hooks.close()
    assert httpserver.log == []
    [waiting] = storage.list_deliveries()
    assert waiting.status is hd.DeliveryStatus.PENDING
    assert waiting.attempt_count == 0


@pytest.mark.parametrize(
    ("keys", "says"),
    [
        ([], "at least one key"),
        ([KEY[:-4] + "!!!!"], "key 1 of 1 is not a Fernet key"),
        ([KEY, "not a key at all"], "key 2 of 2 is not a Fernet key"),
        ([KEY.encode()[:20]], "key 1 of 1 is not a Fernet key"),
        ([42], "key 1 of 1 must be a str or bytes, not int"),
        (KEY, "got one key"),
        (KEY.encode(), "got one key"),
        (None, "got a NoneType"),
    ],
    ids=["none", "not-base64", "second-bad", "short", "int", "str", "bytes", "None"],
)
def test_invalid_keys_are_refused_without_quoting_them(keys: Any, says: str) -> None:
    with pytest.raises(hd.InvalidInputError) as caught:
        EncryptedStorage(hd.MemoryStorage(), keys=keys)
    message = str(caught.value)
    assert says in message
    assert "generate_key()" in message or "list of Fernet keys" in message
    for key in keys if isinstance(keys, list) else [keys]:
        if isinstance(key, str | bytes) and key:
            text = key if isinstance(key, str) else key.decode()
            assert text not in message
    assert caught.value.__cause__ is None


def test_inner_must_be_a_storage_and_not_wrapped_twice() -> None:
    with pytest.raises(hd.InvalidInputError, match="must be a hookdispatch Storage"):
        EncryptedStorage("webhooks.db", keys=[KEY])  # type: ignore[arg-type]
    once = EncryptedStorage(hd.MemoryStorage(), keys=[KEY])
    with pytest.raises(hd.InvalidInputError, match="already an EncryptedStorage"):
        EncryptedStorage(once, keys=[NEW_KEY])


def test_an_encrypted_secret_cannot_be_given_as_a_secret(sqlite_inner: hd.SQLiteStorage) -> None:
    storage = EncryptedStorage(sqlite_inner, keys=[KEY])
    hooks = hd.Dispatcher(storage=storage, workers=0)
    endpoint = hooks.add_endpoint("https://example.com/hooks")
    token = sqlite_inner.get_endpoint(endpoint.id).secret
    for attempt in (
        lambda: hooks.add_endpoint("https://example.com/hooks", secret=token),
        lambda: hooks.rotate_secret(endpoint.id, secret=token),
        lambda: hd.Endpoint.create(
            "https://example.com/hooks", now=datetime.now(UTC), secret=token
        ),
    ):
        with pytest.raises(hd.InvalidEndpointError, match="encrypted at rest") as caught:
            attempt()
        assert token not in str(caught.value)
    hooks.close()


def test_without_the_wrapper_the_ciphertext_never_signs(db: Path) -> None:
    storage = EncryptedStorage(hd.SQLiteStorage(db), keys=[KEY])
    hd.Dispatcher(storage=storage, workers=0).add_endpoint("https://example.com/hooks")
    storage.close()

    plain = hd.SQLiteStorage(db)  # opened without the keys
    [stored] = plain.list_endpoints()
    assert stored.secret.startswith(PREFIX)
    sent = Recording()
    hooks = hd.Dispatcher(storage=plain, transport=sent, workers=0)
    try:
        with pytest.raises(hd.StorageError, match="encrypted") as caught:
            hooks.dispatch("user.created", {})
        assert "EncryptedStorage" in str(caught.value)
        assert stored.secret not in str(caught.value)
    finally:
        hooks.close()
        plain.close()
    assert sent.requests == []  # nothing left signed with the ciphertext


# Nothing secret in reprs and logs -----------------------------------------------------


def test_no_secret_token_or_key_in_reprs_or_logs(
    db: Path, httpserver: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    statuses = [500]  # one failed attempt, logged with its retry; then 200

    def answer(_: Request) -> Response:
        return Response("x", status=statuses.pop() if statuses else 200)

    httpserver.expect_request("/hooks", method="POST").respond_with_handler(answer)
    inner = hd.SQLiteStorage(db)
    storage = EncryptedStorage(inner, keys=[NEW_KEY, OLD_KEY])
    with caplog.at_level(logging.DEBUG):
        hooks = hd.Dispatcher(
            storage=storage,
            workers=2,
            poll_interval=0.05,
            retry=hd.RetryPolicy(initial_wait=0.01, jitter=0),
        )
        endpoint = hooks.add_endpoint(httpserver.url_for("/hooks"))
        rotated = hooks.rotate_secret(endpoint.id, grace=3600)
        event = hooks.dispatch("user.created", {})
        assert wait_for(
            lambda: hooks.deliveries(event_id=event.id)[0].status == "succeeded", timeout=10
        )
        hooks.close()
        with pytest.raises(hd.StorageError) as caught:
            EncryptedStorage(inner, keys=[KEY]).get_endpoint(endpoint.id)
        logging.getLogger("hookdispatch").exception("reading failed", exc_info=caught.value)
    tokens = [token for token in raw_secrets(db)[endpoint.id] if token]
    forbidden = [endpoint.secret, rotated.secret, NEW_KEY, OLD_KEY, KEY]
    forbidden += tokens + [token[len(PREFIX) :] for token in tokens]
    shown = [repr(storage), str(storage), repr(inner), repr(rotated), repr(hooks)]
    shown += [repr(storage.get_endpoint(endpoint.id)), repr(storage.list_endpoints())]
    shown += [record.getMessage() for record in caplog.records]
    shown += [record.exc_text or "" for record in caplog.records]
    assert len(caplog.records) >= 3  # the failed attempt, the success, the error
    for text in shown:
        for secret in forbidden:
            assert secret not in text
    assert repr(storage) == f"EncryptedStorage({inner!r}, 2 keys)"
    assert repr(EncryptedStorage(hd.MemoryStorage(), keys=[KEY])).endswith(", 1 key)")
    storage.close()


# The command line ---------------------------------------------------------------------


def run(db: Path, *args: str, **env: str) -> Result:
    runner = CliRunner(env={"HOOKDISPATCH_ALLOW_LOCAL": "1", **env})
    return runner.invoke(cli, ["--db", str(db), *args], catch_exceptions=False)


def clean_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Error: " in result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_the_command_line_encrypts_with_the_keys_in_the_environment(
    db: Path, hooks_url: str, httpserver: HTTPServer
) -> None:
    keys = {"HOOKDISPATCH_SECRET_KEYS": KEY}
    added = run(db, "endpoints", "add", hooks_url, "--json", **keys)
    assert added.exit_code == 0, added.output
    endpoint_id = json.loads(added.stdout)["id"]
    [(secret, _)] = raw_secrets(db).values()
    assert secret.startswith(PREFIX)
    plain = EncryptedStorage(hd.SQLiteStorage(db), keys=[KEY]).get_endpoint(endpoint_id).secret
    assert plain in added.stdout  # the generated secret, printed once, in plain text

    sent = run(db, "send", "user.created", "--data", "{}", **keys)
    assert sent.exit_code == 0, sent.output
    [(request, _)] = httpserver.log
    Webhook(plain).verify(request.get_data(), dict(request.headers))

    rotated = run(db, "endpoints", "rotate-secret", endpoint_id, "--json", **keys)
    assert rotated.exit_code == 0, rotated.output
    secret, previous = raw_secrets(db)[endpoint_id]
    assert secret.startswith(PREFIX)
    assert previous is not None
    assert previous.startswith(PREFIX)
    assert plain.encode() not in file_bytes(db)

    # Commands that read no secret work without the keys too.
    assert run(db, "endpoints", "list").exit_code == 0


def test_reencrypt_command_rotates_keys_and_migrates(db: Path, hooks_url: str) -> None:
    # A database written before encryption was turned on.
    for _ in range(2):
        assert run(db, "endpoints", "add", hooks_url).exit_code == 0
    plain = {s for s, _ in raw_secrets(db).values()}

    clean_error(run(db, "reencrypt"), "HOOKDISPATCH_SECRET_KEYS is not set")
    assert {s for s, _ in raw_secrets(db).values()} == plain  # nothing changed

    result = run(db, "reencrypt", HOOKDISPATCH_SECRET_KEYS=OLD_KEY)
    assert result.exit_code == 0, result.output
    assert "2 endpoints" in result.stdout
    assert all(s.startswith(PREFIX) for s, _ in raw_secrets(db).values())

    # Key rotation: the new key first, the old one after it (spaces are forgiven).
    rotated = run(db, "reencrypt", HOOKDISPATCH_SECRET_KEYS=f"{NEW_KEY}, {OLD_KEY}")
    assert rotated.exit_code == 0, rotated.output
    assert "2 endpoints" in rotated.stdout
    again = run(db, "reencrypt", HOOKDISPATCH_SECRET_KEYS=f"{NEW_KEY},{OLD_KEY}")
    assert "0 endpoints" in again.stdout
    after = EncryptedStorage(hd.SQLiteStorage(db), keys=[NEW_KEY])
    assert {e.secret for e in after.list_endpoints()} == plain
    after.close()

    # The old key alone cannot read them: a one-line error naming an endpoint, no secret.
    wrong = run(db, "send", "user.created", HOOKDISPATCH_SECRET_KEYS=OLD_KEY)
    clean_error(wrong, "no configured key (1 key given) decrypts the secret of endpoint")
    for secret in plain | {NEW_KEY, OLD_KEY}:
        assert secret not in wrong.output


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("", "names no key"),
        (" , ,", "names no key"),
        ("not-a-key", "key 1 of 1 is not a Fernet key"),
        (f"{KEY},nope", "key 2 of 2 is not a Fernet key"),
    ],
    ids=["empty", "commas", "bad", "second-bad"],
)
def test_bad_secret_keys_in_the_environment_are_clean_errors(
    db: Path, hooks_url: str, value: str, says: str
) -> None:
    assert run(db, "endpoints", "add", hooks_url).exit_code == 0
    for args in (("endpoints", "list"), ("reencrypt",), ("endpoints", "add", hooks_url)):
        result = run(db, *args, HOOKDISPATCH_SECRET_KEYS=value)
        clean_error(result, "HOOKDISPATCH_SECRET_KEYS", says)
        assert KEY not in result.output
    assert len(raw_secrets(db)) == 1  # the failed `endpoints add` stored nothing


def test_without_cryptography_the_command_names_the_extra(
    db: Path, hooks_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(db, "endpoints", "add", hooks_url).exit_code == 0
    for name in ("cryptography", "cryptography.fernet"):  # as if it were not installed
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "hookdispatch.storage._encrypted")
    monkeypatch.delitem(vars(hd.storage), "EncryptedStorage", raising=False)
    result = run(db, "endpoints", "list", HOOKDISPATCH_SECRET_KEYS=KEY)
    clean_error(result, "pip install 'hookdispatch[encryption]'")


# The conformance suite, through the wrapper ------------------------------------------


class TestEncryptedMemoryStorage(StorageConformance):
    def make_storage(self) -> hd.Storage:
        return EncryptedStorage(hd.MemoryStorage(), keys=[KEY])


class TestEncryptedSQLiteStorage(StorageConformance):
    supports_multiple_processes = True

    def make_storage(self) -> hd.Storage:
        return open_encrypted_sqlite(str(self.tmp_path / f"{uuid.uuid4().hex}.db"), KEY)

    def storage_factory_spec(self, storage: hd.Storage) -> FactorySpec:
        assert isinstance(storage, EncryptedStorage)
        assert isinstance(storage.inner, hd.SQLiteStorage)
        return FactorySpec(f"{__name__}:open_encrypted_sqlite", (str(storage.inner.path), KEY))


class TestEncryptedPostgresStorage(StorageConformance):
    supports_multiple_processes = True

    @pytest.fixture(autouse=True)
    def _database(self, postgres_dsn: str) -> None:  # noqa: F811 - the fixture
        self.dsn = postgres_dsn

    def make_storage(self) -> hd.Storage:
        return open_encrypted_postgres(self.dsn, new_schema(), KEY)

    def storage_factory_spec(self, storage: hd.Storage) -> FactorySpec:
        assert isinstance(storage, EncryptedStorage)
        assert isinstance(storage.inner, hd.PostgresStorage)
        spec = (self.dsn, storage.inner.schema, KEY)
        return FactorySpec(f"{__name__}:open_encrypted_postgres", spec)


def test_postgres_rows_hold_no_plain_secret(postgres_dsn: str, hooks_url: str) -> None:  # noqa: F811
    schema = new_schema()
    storage = EncryptedStorage(hd.PostgresStorage(postgres_dsn, schema=schema), keys=[KEY])
    hooks = hd.Dispatcher(storage=storage, workers=0)
    endpoint = hooks.rotate_secret(hooks.add_endpoint(hooks_url).id, grace=3600)
    event = hooks.dispatch("user.created", {})
    assert hooks.deliveries(event_id=event.id)[0].status == "succeeded"
    hooks.close()
    storage.close()
    with psycopg.connect(postgres_dsn) as conn:
        query = sql.SQL("SELECT secret, previous_secret FROM {}.endpoints").format(
            sql.Identifier(schema)
        )
        [(secret, previous)] = conn.execute(query).fetchall()
    assert secret.startswith(PREFIX)
    assert previous.startswith(PREFIX)
    assert endpoint.secret not in secret
    assert endpoint.previous_secret is not None
    assert endpoint.previous_secret not in previous
