"""Endpoint secrets never leak: not into logs (ours, httpx's, httpcore's), not into
repr()/str() of any object, not into any error message, whatever happens to a delivery."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

import hookdispatch as hd
from hookdispatch._core import Claim, conclude, prepare

KEY = b"Pr1vate-K3y:never-log-me/0123456789"
SECRET = "whsec_" + base64.b64encode(KEY).decode("ascii")
# Every form the secret could leak in: the string, its base64 part, the key bytes as
# text and as hex (upper and lower), and the repr of the key bytes.
FORBIDDEN = [
    SECRET,
    SECRET.removeprefix("whsec_"),
    KEY.decode(),
    KEY.hex(),
    KEY.hex().upper(),
    repr(KEY),
]

MakeDispatcher = Callable[..., hd.Dispatcher]


def assert_no_secret(*texts: object) -> None:
    for text in texts:
        rendered = text if isinstance(text, str) else repr(text)
        for forbidden in FORBIDDEN:
            assert forbidden not in rendered, f"secret leaked into: {rendered[:300]}"


def assert_clean_records(records: Iterable[logging.LogRecord]) -> None:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    for record in records:
        args = record.args if isinstance(record.args, tuple) else (record.args,)
        assert_no_secret(
            formatter.format(record),  # message, plus any traceback and stack
            str(record.msg),
            *(repr(arg) for arg in args),
            *(str(arg) for arg in args),
        )


def refused_url() -> str:
    """A URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def test_the_secret_is_accepted_as_given() -> None:
    endpoint = hd.Endpoint.create("https://example.com/", now=datetime.now(UTC), secret=SECRET)
    assert endpoint.secret == SECRET
    assert base64.b64decode(SECRET[6:]) == KEY


@pytest.mark.parametrize("workers", [0, 2], ids=["inline", "workers=2"])
def test_no_secret_anywhere_in_a_full_run(
    storage: hd.Storage,
    make_dispatcher: MakeDispatcher,
    httpserver: HTTPServer,
    caplog: pytest.LogCaptureFixture,
    workers: int,
    driver: str,
) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger: ours, httpx, httpcore, everyone
    for name in ("hookdispatch", "httpx", "httpcore", "aiohttp", "asyncio"):
        caplog.set_level(logging.DEBUG, logger=name)
    httpserver.expect_request("/ok").respond_with_data("ok")
    httpserver.expect_request("/fail").respond_with_data("boom", status=500)

    hooks = make_dispatcher(
        storage=storage, workers=workers, retry=hd.RetryPolicy(initial_wait=0, jitter=0)
    )
    endpoints = [
        hooks.add_endpoint(httpserver.url_for("/ok"), secret=SECRET, id="ep_ok"),
        hooks.add_endpoint(httpserver.url_for("/fail"), secret=SECRET, id="ep_fail"),
        hooks.add_endpoint(refused_url(), secret=SECRET, id="ep_refused"),
    ]
    events = [hooks.dispatch("user.created", {"user_id": f"user_{i}"}) for i in range(2)]
    assert hooks.drain(timeout=10)

    deliveries = hooks.deliveries()
    by_endpoint = {d.endpoint_id: d for d in deliveries}
    assert len(deliveries) == 6
    assert by_endpoint["ep_ok"].status is hd.DeliveryStatus.SUCCEEDED
    assert by_endpoint["ep_fail"].status is hd.DeliveryStatus.FAILED
    assert by_endpoint["ep_refused"].status is hd.DeliveryStatus.FAILED
    attempts = [a for d in deliveries for a in hooks.attempts(d.id)]
    assert len(attempts) == 2 * (1 + 4 + 4)
    kinds = {a.failure for a in attempts}
    assert kinds == {None, hd.FailureKind.HTTP_STATUS, hd.FailureKind.CONNECT}

    # Errors that surface to the caller during the run, with the secret in play.
    errors: list[BaseException] = []
    for call in (
        lambda: hooks.add_endpoint(httpserver.url_for("/ok"), secret=SECRET, id="ep_ok"),
        lambda: hooks.add_endpoint("ftp://example.com/", secret=SECRET),
        lambda: hooks.add_endpoint("https://example.com/", secret=SECRET, events=[]),
        lambda: hooks.add_endpoint("https://example.com/", secret=SECRET + " \x00"),
        lambda: hooks.add_endpoint("https://example.com/", secret="whsec_" + SECRET + "!"),
        lambda: hooks.dispatch("user.created", {"secret": {1, 2}}),
        lambda: hooks.redeliver("dlv_missing"),
        lambda: hooks.get_endpoint("ep_missing"),
    ):
        with pytest.raises(hd.HookDispatchError) as info:
            call()
        errors.append(info.value)
    redelivered = hooks.redeliver(by_endpoint["ep_fail"].id)
    assert hooks.drain(timeout=10)
    final_deliveries = [*hooks.deliveries(), redelivered]
    attempts += hooks.attempts(redelivered.id)
    stored_endpoints = hooks.endpoints()
    hooks.close()
    with pytest.raises(hd.DispatcherClosedError) as info:
        hooks.dispatch("user.created", {})
    errors.append(info.value)

    # The default transports log nothing of their own; httpx's and httpcore's debug
    # logs are checked below with HttpxTransport (test_no_secret_in_sync_transport_errors).
    assert caplog.records, "expected the run to log something"
    assert_clean_records(caplog.records)
    assert_no_secret(caplog.text)
    for error in errors:
        assert_no_secret(str(error), repr(error), *(repr(arg) for arg in error.args))
    for attempt in attempts:
        assert_no_secret(attempt.error or "", attempt.response_body)
    for delivery in final_deliveries:
        assert_no_secret(delivery.last_error or "")
    assert_no_secret(
        *endpoints,
        *(str(e) for e in endpoints),
        *stored_endpoints,
        *events,
        *(str(e) for e in events),
        *final_deliveries,
        *(str(d) for d in final_deliveries),
        *attempts,
        *(str(a) for a in attempts),
        hooks,
        str(hooks),
        storage,
        str(storage),
    )
    # The stored endpoints still carry the secret, so the checks above had something to miss.
    assert {e.secret for e in stored_endpoints} == {SECRET}


def test_no_secret_in_core_values() -> None:
    now = datetime.now(UTC)
    endpoint = hd.Endpoint.create("https://example.com/hooks", now=now, secret=SECRET)
    event = hd.Event.create("user.created", {"user_id": "u1"}, now=now)
    delivery = hd.Delivery.create(event, endpoint, now=now)
    claim = Claim(
        delivery=delivery, endpoint=endpoint, event_type=event.type, body=event.body, lease="tok"
    )
    request = prepare(claim, now=now, timeout=5.0)
    response = hd.Response(status_code=500, headers={"x": "y"}, body=b"no")
    attempt, concluded = conclude(
        claim, response, started_at=now, duration=0.1, now=now, policy=hd.RetryPolicy()
    )
    _, timed_out = conclude(
        claim,
        hd.DeliveryTimeout("total deadline exceeded"),
        started_at=now,
        duration=5.0,
        now=now,
        policy=hd.RetryPolicy(),
    )
    values = [endpoint, claim, request, response, attempt, concluded, timed_out, delivery]
    assert_no_secret(*values, *(str(v) for v in values), *(f"{v!r:>10}" for v in values))
    # The headers carry signatures made with the secret, never the secret itself.
    assert_no_secret(dict(request.headers))


def test_no_secret_in_storage_and_dispatcher_reprs(
    tmp_path: Path, make_dispatcher: MakeDispatcher
) -> None:
    for storage in (hd.MemoryStorage(), hd.SQLiteStorage(tmp_path / "hooks.db")):
        hooks = make_dispatcher(storage=storage, workers=0)
        hooks.add_endpoint("https://example.invalid/hooks", secret=SECRET)
        assert_no_secret(storage, str(storage), hooks, str(hooks), hooks.endpoints())
        hooks.close()
        assert_no_secret(hooks, str(hooks))
        storage.close()


def refused_request() -> hd.Request:
    now = datetime.now(UTC)
    endpoint = hd.Endpoint.create(refused_url(), now=now, secret=SECRET)
    event = hd.Event.create("user.created", {}, now=now)
    claim = Claim(
        delivery=hd.Delivery.create(event, endpoint, now=now),
        endpoint=endpoint,
        event_type=event.type,
        body=event.body,
        lease="tok",
    )
    return prepare(claim, now=now, timeout=2.0)


def assert_clean_outcome(outcome: object, transport: object) -> None:
    assert isinstance(outcome, hd.ConnectError)
    assert_no_secret(
        str(outcome), repr(outcome), transport, repr(outcome.__cause__), repr(outcome.__context__)
    )


@pytest.mark.parametrize("make_transport", [hd.SocketTransport, hd.HttpxTransport])
def test_no_secret_in_sync_transport_errors(
    caplog: pytest.LogCaptureFixture, make_transport: Callable[[], hd.Transport]
) -> None:
    caplog.set_level(logging.DEBUG)
    transport = make_transport()
    try:
        outcome = transport.send(refused_request())
    finally:
        transport.close()
    assert_clean_outcome(outcome, transport)
    assert_clean_records(caplog.records)


@pytest.mark.parametrize(
    "make_transport", [hd.AsyncioTransport, hd.AiohttpTransport, hd.AsyncHttpxTransport]
)
def test_no_secret_in_async_transport_errors(
    caplog: pytest.LogCaptureFixture, make_transport: Callable[[], hd.AsyncTransport]
) -> None:
    caplog.set_level(logging.DEBUG)

    async def attempt() -> tuple[object, hd.AsyncTransport]:
        transport = make_transport()
        try:
            return await transport.send(refused_request()), transport
        finally:
            await transport.aclose()

    outcome, transport = asyncio.run(attempt())
    assert_clean_outcome(outcome, transport)
    assert_clean_records(caplog.records)


@pytest.mark.parametrize("leak", FORBIDDEN)
def test_the_leak_checks_catch_each_form(caplog: pytest.LogCaptureFixture, leak: str) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger("some.library").debug("headers: %r", {"authorization": leak})
    with pytest.raises(AssertionError, match="secret leaked"):
        assert_clean_records(caplog.records)
    with pytest.raises(AssertionError, match="secret leaked"):
        assert_no_secret(ValueError(f"bad key {leak}"))
