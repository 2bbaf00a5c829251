"""Secret rotation with overlap: the previous secret signs beside the new one for a
grace period, then stops (or stops early, by end_rotation)."""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

import hookdispatch as hd
from downgrade import postgres_back_to, result_columns, sqlite_back_to
from hookdispatch._core import Claim, prepare
from hookdispatch.storage._postgres import MIGRATIONS as PG_MIGRATIONS
from hookdispatch.storage._sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from pg_fixtures import new_schema, postgres_admin_dsn, postgres_dsn  # noqa: F401 - fixtures

from conftest import FakeTime

DAY = timedelta(hours=24)
OLD = hd.generate_secret()
NEW = hd.generate_secret()

MakeDispatcher = Callable[..., Any]


class Capture:
    """Answers each request with the next status (200 once they run out) and keeps it."""

    def __init__(self, *statuses: int, on_send: Callable[[], None] | None = None) -> None:
        self.requests: list[hd.Request] = []
        self.statuses = list(statuses)
        self.on_send = on_send

    def answer(self, request: hd.Request) -> hd.Response:
        self.requests.append(request)
        if self.on_send is not None:
            self.on_send()
        status = self.statuses.pop(0) if self.statuses else 200
        return hd.Response(status_code=status, headers={}, body=b"")

    def send(self, request: hd.Request) -> hd.Response:
        return self.answer(request)

    def close(self) -> None:
        pass


class AsyncCapture(Capture):
    async def send(self, request: hd.Request) -> hd.Response:  # type: ignore[override]
        return self.answer(request)

    async def aclose(self) -> None:
        pass


def capture(driver: str, *statuses: int, on_send: Callable[[], None] | None = None) -> Capture:
    kind = AsyncCapture if driver == "async" else Capture
    return kind(*statuses, on_send=on_send)


@pytest.fixture
def receiver(driver: str) -> Capture:
    return capture(driver)


@pytest.fixture
def hooks(
    make_dispatcher: MakeDispatcher, storage: hd.Storage, fake_time: FakeTime, receiver: Capture
) -> Any:
    return make_dispatcher(
        storage=storage,
        transport=receiver,
        workers=0,
        clock=fake_time.clock,
        sleep=fake_time.sleep,
    )


def signatures(request: hd.Request) -> list[str]:
    return request.headers["webhook-signature"].split()


def standard_ok(request: hd.Request, secret: str, fake_time: FakeTime) -> bool:
    return hd.verify_standard_webhook(
        request.body, request.headers, secret, now=fake_time.now.timestamp()
    )


def legacy_ok(request: hd.Request, secret: str) -> bool:
    return hd.verify_signature(request.body, request.headers["x-webhook-signature"], secret)


# The overlap -------------------------------------------------------------------------


def test_rotation_keeps_the_previous_secret_for_24_hours_by_default(
    hooks: Any, fake_time: FakeTime
) -> None:
    endpoint = hooks.add_endpoint("https://example.com/hooks", secret=OLD)
    rotated = hooks.rotate_secret(endpoint.id)
    assert rotated.secret.startswith("whsec_")
    assert rotated.secret != OLD
    assert rotated.previous_secret == OLD
    assert rotated.previous_secret_expires_at == fake_time.now + DAY
    assert DAY.total_seconds() == hd.DEFAULT_ROTATION_GRACE
    assert hooks.get_endpoint(endpoint.id) == rotated


def test_during_the_overlap_both_secrets_sign(
    hooks: Any, receiver: Capture, fake_time: FakeTime
) -> None:
    endpoint = hooks.add_endpoint("https://example.com/hooks", secret=OLD)
    hooks.rotate_secret(endpoint.id, secret=NEW, grace=3600)
    fake_time.now += timedelta(minutes=59)
    hooks.dispatch("user.created", {"n": 1})
    [request] = receiver.requests
    timestamp = int(request.headers["webhook-timestamp"])
    event_id = request.headers["webhook-id"]
    # One Standard Webhooks signature per live secret, the new one first.
    assert signatures(request) == [
        hd.sign_standard(request.body, NEW, msg_id=event_id, timestamp=timestamp),
        hd.sign_standard(request.body, OLD, msg_id=event_id, timestamp=timestamp),
    ]
    assert standard_ok(request, NEW, fake_time)
    assert standard_ok(request, OLD, fake_time)
    assert not standard_ok(request, hd.generate_secret(), fake_time)
    # X-Webhook-Signature holds one value: the previous secret's, until the overlap ends.
    assert legacy_ok(request, OLD)
    assert not legacy_ok(request, NEW)


def test_after_the_grace_period_only_the_new_secret_signs(
    hooks: Any, receiver: Capture, fake_time: FakeTime
) -> None:
    endpoint = hooks.add_endpoint("https://example.com/hooks", secret=OLD)
    hooks.rotate_secret(endpoint.id, secret=NEW, grace=3600)
    fake_time.now += timedelta(seconds=3600)  # the expiry itself is past the overlap
    hooks.dispatch("user.created", {"n": 1})
    [request] = receiver.requests
    assert len(signatures(request)) == 1
    assert standard_ok(request, NEW, fake_time)
    assert not standard_ok(request, OLD, fake_time)
    assert legacy_ok(request, NEW)
    assert not legacy_ok(request, OLD)
    # The expired secret stays stored (nothing is written at expiry) but no longer signs.
    stored = hooks.get_endpoint(endpoint.id)
    assert stored.previous_secret == OLD
    assert stored.previous_secret_live(fake_time.now) is None


def test_end_rotation_stops_the_previous_secret_at_once(
    hooks: Any, receiver: Capture, fake_time: FakeTime
) -> None:
    endpoint = hooks.add_endpoint("https://example.com/hooks", secret=OLD)
    hooks.rotate_secret(endpoint.id, secret=NEW)
    ended = hooks.end_rotation(endpoint.id)
    assert (ended.secret, ended.previous_secret, ended.previous_secret_expires_at) == (
        NEW,
        None,
        None,
    )
    assert hooks.get_endpoint(endpoint.id) == ended
    hooks.dispatch("user.created", {"n": 1})
    [request] = receiver.requests
    assert len(signatures(request)) == 1
    assert standard_ok(request, NEW, fake_time)
    assert not standard_ok(request, OLD, fake_time)
    assert legacy_ok(request, NEW)
    # Nothing to end is fine, and changes nothing.
    assert hooks.end_rotation(endpoint.id) == ended
    with pytest.raises(hd.UnknownEndpointError):
        hooks.end_rotation("ep_nope")


def test_grace_zero_is_no_overlap(hooks: Any, receiver: Capture, fake_time: FakeTime) -> None:
    endpoint = hooks.add_endpoint("https://example.com/hooks", secret=OLD)
    rotated = hooks.rotate_secret(endpoint.id, grace=0)
    assert rotated.previous_secret is None
    assert rotated.previous_secret_expires_at is None
    hooks.dispatch("user.created", {"n": 1})
    [request] = receiver.requests
    assert len(signatures(request)) == 1
    assert standard_ok(request, rotated.secret, fake_time)
    assert legacy_ok(request, rotated.secret)
    assert not standard_ok(request, OLD, fake_time)


def test_a_retry_after_the_rotation_is_signed_with_both(
    make_dispatcher: MakeDispatcher, driver: str, storage: hd.Storage, fake_time: FakeTime
) -> None:
    """The claim carries the previous secret: a retry of an event dispatched before
    the rotation goes out under both secrets, read from storage."""
    endpoint = hd.Endpoint.create("https://example.com/hooks", now=fake_time.now, secret=OLD)

    def rotate_once() -> None:
        if len(transport.requests) == 1:
            current = storage.get_endpoint(endpoint.id)
            storage.update_endpoint(current.rotated(now=fake_time.now, grace=3600, secret=NEW))

    transport = capture(driver, 500, on_send=rotate_once)
    hooks = make_dispatcher(
        storage=storage,
        transport=transport,
        workers=0,
        clock=fake_time.clock,
        sleep=fake_time.sleep,
        retry=hd.RetryPolicy(max_attempts=2, jitter=0.0),
    )
    storage.add_endpoint(endpoint)
    hooks.dispatch("user.created", {"n": 1})
    first, retry = transport.requests
    assert len(signatures(first)) == 1
    assert legacy_ok(first, OLD)
    assert len(signatures(retry)) == 2
    assert standard_ok(retry, NEW, fake_time)
    assert standard_ok(retry, OLD, fake_time)
    assert legacy_ok(retry, OLD)


def test_the_standardwebhooks_package_verifies_either_secret(
    make_dispatcher: MakeDispatcher, driver: str, storage: hd.Storage
) -> None:
    """The real clock: the package checks the timestamp against its own."""
    receiver = capture(driver)
    hooks = make_dispatcher(storage=storage, transport=receiver, workers=0)
    endpoint = hooks.add_endpoint("https://example.com/hooks", secret=OLD)
    hooks.rotate_secret(endpoint.id, secret=NEW)
    hooks.dispatch("invoice.paid", {"amount": 4900})
    [request] = receiver.requests
    for secret in (OLD, NEW):
        payload = Webhook(secret).verify(request.body, dict(request.headers))
        assert payload["data"] == {"amount": 4900}
    with pytest.raises(WebhookVerificationError):
        Webhook(hd.generate_secret()).verify(request.body, dict(request.headers))
    # And once the rotation ends, only the new one.
    hooks.end_rotation(endpoint.id)
    hooks.dispatch("invoice.paid", {"amount": 1})
    later = receiver.requests[-1]
    Webhook(NEW).verify(later.body, dict(later.headers))
    with pytest.raises(WebhookVerificationError):
        Webhook(OLD).verify(later.body, dict(later.headers))


def test_prepare_signs_with_the_previous_secret_only_before_its_expiry() -> None:
    now = datetime(2024, 6, 30, 15, 41, 23, tzinfo=UTC)
    endpoint = hd.Endpoint.create("https://example.com/hooks", now=now, secret=OLD)
    event = hd.Event.create("user.created", {}, now=now)
    rotated = endpoint.rotated(now=now, grace=10, secret=NEW)

    def sent(endpoint: hd.Endpoint, at: datetime) -> hd.Request:
        claim = Claim(
            delivery=hd.Delivery.create(event, endpoint, now=now),
            endpoint=endpoint,
            event_type=event.type,
            body=event.body,
            lease="lse_1",
        )
        return prepare(claim, now=at, timeout=5.0)

    assert len(signatures(sent(rotated, now + timedelta(seconds=9.999)))) == 2
    assert len(signatures(sent(rotated, now + timedelta(seconds=10)))) == 1
    # A previous secret without an expiry never signs.
    unbounded = attrs.evolve(rotated, previous_secret_expires_at=None)
    assert len(signatures(sent(unbounded, now))) == 1


# Refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "grace", [-1, -0.001, math.nan, math.inf, 90 * 86400 + 1, True, "24h", None, timedelta(1)]
)
def test_invalid_graces_are_refused(hooks: Any, grace: object) -> None:
    endpoint = hooks.add_endpoint("https://example.com/hooks", secret=OLD)
    with pytest.raises(hd.InvalidInputError, match="grace"):
        hooks.rotate_secret(endpoint.id, grace=grace)
    assert hooks.get_endpoint(endpoint.id) == endpoint
    with pytest.raises(hd.InvalidInputError, match="grace"):
        hooks.rotate_secret("ep_nope", grace=grace)  # refused before the lookup


def test_the_longest_grace_and_fractional_ones_are_taken(hooks: Any, fake_time: FakeTime) -> None:
    endpoint = hooks.add_endpoint("https://example.com/hooks")
    rotated = hooks.rotate_secret(endpoint.id, grace=90 * 86400)
    assert rotated.previous_secret_expires_at == fake_time.now + timedelta(days=90)
    hooks.end_rotation(endpoint.id)
    rotated = hooks.rotate_secret(endpoint.id, grace=0.5)
    assert rotated.previous_secret_expires_at == fake_time.now + timedelta(seconds=0.5)


def test_a_given_secret_is_checked_and_never_repeated(hooks: Any) -> None:
    endpoint = hooks.add_endpoint("https://example.com/hooks", secret=OLD)
    with pytest.raises(hd.InvalidEndpointError) as same:
        hooks.rotate_secret(endpoint.id, secret=OLD)
    with pytest.raises(hd.InvalidEndpointError) as short:
        hooks.rotate_secret(endpoint.id, secret="hunter2")
    for error in (same, short):
        assert OLD not in str(error.value)
        assert "hunter2" not in str(error.value)
    assert hooks.get_endpoint(endpoint.id) == endpoint
    with pytest.raises(hd.UnknownEndpointError):
        hooks.rotate_secret("ep_nope")


def test_a_second_rotation_during_the_overlap(hooks: Any, fake_time: FakeTime) -> None:
    endpoint = hooks.add_endpoint("https://example.com/hooks", secret=OLD)
    first = hooks.rotate_secret(endpoint.id, secret=NEW, grace=3600)
    # With a grace period, refused: the oldest secret would stop signing at once.
    with pytest.raises(hd.InvalidStateError, match="end_rotation") as refused:
        hooks.rotate_secret(endpoint.id)
    assert OLD not in str(refused.value)
    assert NEW not in str(refused.value)
    assert hooks.get_endpoint(endpoint.id) == first
    # Once it expired, a new rotation keeps the current secret as the previous one.
    fake_time.now += timedelta(hours=1)
    second = hooks.rotate_secret(endpoint.id, grace=60)
    assert second.previous_secret == NEW
    # grace=0 always works: both older secrets stop at once (a leak).
    third = hooks.rotate_secret(endpoint.id, grace=0)
    assert third.previous_secret is None
    assert third.secret not in (OLD, NEW, second.secret)


# Secrets stay secret -------------------------------------------------------------------


def test_no_secret_in_reprs_logs_or_errors(
    hooks: Any, receiver: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    endpoint = hooks.add_endpoint("https://example.com/hooks", secret=OLD)
    rotated = hooks.rotate_secret(endpoint.id, secret=NEW)
    hooks.dispatch("user.created", {"n": 1})
    texts = [repr(rotated), str(rotated), repr(hooks.get_endpoint(endpoint.id)), repr(hooks)]
    texts += [repr(request) for request in receiver.requests]
    for endpoint_id in (endpoint.id, "ep_x"):  # an overlap still live; an unknown id
        with pytest.raises(hd.HookDispatchError) as error:
            hooks.rotate_secret(endpoint_id)
        texts.append(str(error.value))
    texts += [record.getMessage() for record in caplog.records]
    for text in texts:
        for secret in (OLD, NEW, OLD.removeprefix("whsec_"), NEW.removeprefix("whsec_")):
            assert secret not in text, text


# Migrations ----------------------------------------------------------------------------


def test_a_version_4_sqlite_file_migrates_and_keeps_its_endpoints(tmp_path: Path) -> None:
    path = tmp_path / "hooks.db"
    now = datetime(2024, 6, 30, 15, 41, 23, tzinfo=UTC)
    endpoint = hd.Endpoint.create("https://example.com/hooks", now=now, secret=OLD)
    store = hd.SQLiteStorage(path)
    store.add_endpoint(endpoint)
    store.close()
    with sqlite3.connect(path) as conn:  # back to version 4, as the previous release wrote it
        sqlite_back_to(conn, 4)
    conn.close()
    store = hd.SQLiteStorage(path)
    try:
        assert store.get_endpoint(endpoint.id) == endpoint
        assert store.get_endpoint(endpoint.id).previous_secret is None
        rotated = endpoint.rotated(now=now, grace=60, secret=NEW)
        store.update_endpoint(rotated)
        assert store.get_endpoint(endpoint.id) == rotated
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(SQLITE_MIGRATIONS)
    conn.close()


@pytest.fixture
def pg_schema() -> str:
    return new_schema()


def test_a_version_5_postgres_schema_migrates_and_claims_carry_the_previous_secret(
    postgres_dsn: str,  # noqa: F811
    pg_schema: str,
) -> None:
    now = datetime(2024, 6, 30, 15, 41, 23, tzinfo=UTC)
    endpoint = hd.Endpoint.create("https://example.com/hooks", now=now, secret=OLD)
    event = hd.Event.create("user.created", {}, now=now)
    store = hd.PostgresStorage(postgres_dsn, schema=pg_schema)
    store.add_endpoint(endpoint)
    store.add_event(event, [hd.Delivery.create(event, endpoint, now=now)])
    store.close()
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:  # back to version 5
        postgres_back_to(conn, pg_schema, 5)
    store = hd.PostgresStorage(postgres_dsn, schema=pg_schema)
    try:
        assert store.get_endpoint(endpoint.id) == endpoint
        rotated = endpoint.rotated(now=now, grace=60, secret=NEW)
        store.update_endpoint(rotated)
        [claim] = store.claim(now=now, lease_until=now + timedelta(minutes=1), limit=1)
        assert claim.endpoint == rotated
        assert claim.endpoint.previous_secret == OLD
    finally:
        store.close()
    with psycopg.connect(postgres_dsn) as conn:
        [(version,)] = conn.execute(f'SELECT version FROM "{pg_schema}".schema_version').fetchall()
        # The claim function of the previous release stays, unchanged, for processes
        # still running it during a rolling upgrade.
        outs = {
            name: result_columns(conn, pg_schema, name) for name in ("claim_due_v4", "claim_due_v5")
        }
    assert version == len(PG_MIGRATIONS)
    assert outs == {"claim_due_v4": 19, "claim_due_v5": 21}
