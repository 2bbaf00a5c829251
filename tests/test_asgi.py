"""examples/asgi_app.py under a real ASGI server: uvicorn on 127.0.0.1, lifespan on.

The app reads its configuration at startup, so each test points it at its own SQLite
file and at a pytest-httpserver receiver before starting the server.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import httpx
import pytest
import uvicorn
from pytest_httpserver import HTTPServer

import hookdispatch as hd

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(30)


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("asgi_app", ROOT / "examples" / "asgi_app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


asgi_app = load_example()


@contextmanager
def serving() -> Iterator[str]:
    """Run the example app under uvicorn in a thread; yield its base URL; then shut it down."""
    config = uvicorn.Config(
        asgi_app.app, host="127.0.0.1", port=0, lifespan="on", log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    give_up = time.monotonic() + 5
    while not server.started:
        assert thread.is_alive(), "uvicorn exited during startup (lifespan startup failed?)"
        assert time.monotonic() < give_up, "uvicorn did not start within 5 s"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]  # port=0: the OS picked a free one
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True  # what SIGTERM does: stop serving, then lifespan shutdown
        thread.join(timeout=10)
    assert not thread.is_alive(), "uvicorn did not shut down within 10 s"


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, httpserver: HTTPServer) -> Path:
    """The app's SQLite file; WEBHOOK_URL points at the local receiver."""
    path = tmp_path / "webhooks.db"
    monkeypatch.setenv("HOOKDISPATCH_DB", str(path))
    monkeypatch.setenv("WEBHOOK_URL", httpserver.url_for("/hook"))
    monkeypatch.setenv("HOOKDISPATCH_ALLOW_LOCAL", "1")  # the receiver is local http
    return path


def stored(db: Path) -> tuple[list[hd.Endpoint], list[hd.Delivery]]:
    """What the app left in its SQLite file, read by a storage of our own."""
    storage = hd.SQLiteStorage(db)
    try:
        return storage.list_endpoints(), storage.list_deliveries()
    finally:
        storage.close()


def wait_for(condition: Callable[[], bool], seconds: float) -> None:
    give_up = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < give_up, "timed out"
        time.sleep(0.01)


def sign_up(client: httpx.Client, emails: list[str]) -> list[str]:
    """POST /signup for each address; the event ids the app answered with."""
    event_ids = []
    for email in emails:
        response = client.post("/signup", json={"email": email})
        assert response.status_code == 201, response.text
        event_ids.append(response.json()["event_id"])
    return event_ids


EMAILS = ["ada@example.com", "grace@example.com", "edsger@example.com"]


def test_signups_send_signed_webhooks_and_shutdown_drains(db: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    with serving() as base_url, httpx.Client(base_url=base_url) as client:
        event_ids = sign_up(client, EMAILS)
        assert client.post("/signup", json={"name": "no email"}).status_code == 400
        assert client.post("/signup", content=b"not json").status_code == 400
        assert client.get("/signup").status_code == 404
        assert client.post("/elsewhere").status_code == 404
    # The server is down: whatever was due when it stopped was delivered first.

    [endpoint], deliveries = stored(db)
    assert endpoint.url == httpserver.url_for("/hook")
    assert [d.event_id for d in deliveries] == event_ids
    assert {d.status for d in deliveries} == {hd.DeliveryStatus.SUCCEEDED}
    assert [d.attempt_count for d in deliveries] == [1, 1, 1]

    received = {}
    for request, response in httpserver.log:
        body = request.get_data()
        assert response.status_code == 200
        assert hd.verify_signature(body, request.headers["X-Webhook-Signature"], endpoint.secret)
        webhook = request.get_json()
        assert webhook["event"] == "user.created"
        assert webhook["data"]["user_id"].startswith("user_")
        received[webhook["id"]] = webhook["data"]["email"]
    assert received == dict(zip(event_ids, EMAILS, strict=True))


def test_shutdown_keeps_failed_deliveries_pending_for_the_next_start(
    db: Path, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/hook", method="POST").respond_with_data("down", status=500)
    with serving() as base_url, httpx.Client(base_url=base_url) as client:
        event_ids = sign_up(client, EMAILS[:2])
    # Shutdown drained what was due: the first 500 put the endpoint in backoff, so a
    # delivery is either attempted or moved to the retry time without an attempt; both
    # stay stored for later, none is lost.
    _, deliveries = stored(db)
    assert [d.event_id for d in deliveries] == event_ids
    assert any(d.attempt_count >= 1 for d in deliveries)
    for delivery in deliveries:
        assert delivery.status == hd.DeliveryStatus.PENDING
        assert delivery.next_attempt_at is not None
    attempts_before = [d.attempt_count for d in deliveries]
    assert len(httpserver.log) == sum(attempts_before)

    # The next start reuses the endpoint and sends the stored retries when they are due
    # (about 1 to 2 s after the failed attempt, with the default policy).
    httpserver.clear()
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    with serving():
        wait_for(lambda: len(httpserver.log) == 2, seconds=4)
    endpoints, deliveries = stored(db)
    assert len(endpoints) == 1
    assert {d.status for d in deliveries} == {hd.DeliveryStatus.SUCCEEDED}
    assert [d.attempt_count for d in deliveries] == [n + 1 for n in attempts_before]
    assert sorted(request.get_json()["id"] for request, _ in httpserver.log) == sorted(event_ids)
