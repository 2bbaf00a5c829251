"""The installed `hookdispatch` executable, run as processes: `send` and `worker` against
`hookdispatch listen`, which must see the webhook and verify both signatures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import hookdispatch as hd

EXECUTABLE = Path(sys.executable).parent / "hookdispatch"
# The processes see no test fixture: http:// on 127.0.0.1 must be allowed explicitly.
ENV = {**os.environ, "HOOKDISPATCH_ALLOW_LOCAL": "1", "PYTHONUNBUFFERED": "1"}


def hookdispatch(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXECUTABLE), "--db", str(db), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=ENV,
        check=False,
    )


@pytest.fixture
def listener() -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    """`hookdispatch listen` on a free port, for one webhook: (process, URL, secret)."""
    secret = hd.generate_secret()
    process = subprocess.Popen(
        [str(EXECUTABLE), "listen", "--port", "0", "--count", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**ENV, "HOOKDISPATCH_SECRET": secret},
    )
    assert process.stdout is not None
    first = process.stdout.readline()  # Listening on http://127.0.0.1:PORT/, answering 200
    assert first.startswith("Listening on http://127.0.0.1:"), first
    url = first.split()[2].rstrip(",") + "hooks"
    yield process, url, secret
    if process.poll() is None:
        process.kill()
    process.wait()


def add_endpoint(db: Path, url: str, secret: str) -> hd.Endpoint:
    storage = hd.SQLiteStorage(db)
    endpoint = hd.Endpoint.create(url, now=datetime.now(UTC), secret=secret)
    storage.add_endpoint(endpoint)
    storage.close()
    return endpoint


def test_the_executable_is_installed() -> None:
    assert EXECUTABLE.exists(), "pip install -e '.[test]' installs the console script"
    result = subprocess.run(
        [str(EXECUTABLE), "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == f"hookdispatch, version {hd.__version__}"


def test_send_to_listen(tmp_path: Path, listener: tuple[subprocess.Popen[str], str, str]) -> None:
    process, url, secret = listener
    db = tmp_path / "hooks.db"
    add_endpoint(db, url, secret)  # in-process: each start of the executable takes ~1 s

    sent = hookdispatch(db, "send", "user.created", "--data", '{"user_id": "user_78451"}')
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "1 delivered, 0 failed, 0 pending" in sent.stdout

    out, err = process.communicate(timeout=10)  # --count 1: it exits after the webhook
    assert process.returncode == 0, err
    [event_id] = [d.event_id for d in hd.SQLiteStorage(db).list_deliveries()]
    assert f"POST /hooks user.created {event_id}: both signatures verified, answered 200" in out
    assert '{"user_id": "user_78451"}' in out
    assert secret not in out + err + sent.stdout + sent.stderr


def test_worker_process_delivers_then_stops_on_sigterm(
    tmp_path: Path, listener: tuple[subprocess.Popen[str], str, str]
) -> None:
    process, url, secret = listener
    db = tmp_path / "hooks.db"
    endpoint = add_endpoint(db, url, secret)
    now = datetime.now(UTC)
    storage = hd.SQLiteStorage(db)  # the application stores; the worker delivers
    event = hd.Event.create("invoice.paid", {"invoice_id": "in_1"}, now=now)
    storage.add_event(event, [hd.Delivery.create(event, endpoint, now=now)])
    storage.close()

    worker = subprocess.Popen(
        [str(EXECUTABLE), "--db", str(db), "worker", "--workers", "2", "--poll-interval", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        out, _ = process.communicate(timeout=10)
        assert f"invoice.paid {event.id}: both signatures verified" in out
    finally:
        worker.send_signal(signal.SIGTERM)
        _, log = worker.communicate(timeout=20)
    assert worker.returncode == 0, log
    assert f"(event {event.id}) to endpoint {endpoint.id} on attempt 1: HTTP 200" in log
    assert "SIGTERM: stopping" in log
    assert log.rstrip().endswith("worker stopped")
    assert url not in log
    assert secret not in log
    [delivery] = hd.SQLiteStorage(db).list_deliveries()
    assert delivery.status is hd.DeliveryStatus.SUCCEEDED


def test_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    result = hookdispatch(tmp_path / "missing.db", "attempts", "dlv_x")
    assert result.returncode == 2
    assert result.stderr.startswith("Error: no database at")
    assert len(result.stderr.strip().splitlines()) == 1
