"""The CLI tells the whole truth: a forgotten --allow-local stops `send` before anything
is stored, progress and summaries count every outcome and name what is pending,
Ctrl-C prints the summary and loses nothing, `listen --secret` refuses what does not
verify, events can be listed and shown. Run as the real command (click's CliRunner,
or the installed executable in a subprocess) against real local receivers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result
from pytest_httpserver import HTTPServer

import hookdispatch as hd
import hookdispatch._targets
from hookdispatch.cli._app import cli
from hookdispatch.cli._batch import Tally, status_line

from receivers import unused_port as free_port
from receivers import wait_for

EXECUTABLE = Path(sys.executable).parent / "hookdispatch"
SECRET = "whsec_MfKQ9r8GKYqrTvWQ7yoGxZwLQq6yOGa9tNvG6K3tG1U="
Run = Callable[..., Result]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "hooks.db"


@pytest.fixture
def run(db: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    """The command on ``db`` as a user runs it: the real default target policy (not the
    tests' local one), and no HOOKDISPATCH_ALLOW_LOCAL unless a test passes it."""
    monkeypatch.setattr(hookdispatch._targets, "_default", hd.TargetPolicy())
    monkeypatch.delenv("HOOKDISPATCH_ALLOW_LOCAL", raising=False)

    def invoke(*args: str, input: str | bytes | None = None, **env: str) -> Result:
        runner = CliRunner(env=env)
        return runner.invoke(cli, ["--db", str(db), *args], input=input, catch_exceptions=False)

    return invoke


def stored(db: Path) -> tuple[int, int]:
    """How many events and deliveries the database holds."""
    storage = hd.SQLiteStorage(db)
    try:
        deliveries = storage.list_deliveries()
        return len({d.event_id for d in deliveries}), len(deliveries)
    finally:
        storage.close()


# A forgotten --allow-local ------------------------------------------------------------


def test_send_without_allow_local_refuses_before_storing_anything(
    run: Run, db: Path, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/hooks").respond_with_data("ok")
    url = httpserver.url_for("/hooks") + "?token=not-shown"
    added = run("endpoints", "add", url, "--secret", SECRET, "--allow-local")
    assert added.exit_code == 0, added.output

    refused = run("send", "user.created", "--data", "{}")
    assert refused.exit_code == 2, refused.output
    message = refused.stderr
    assert message.startswith("Error: nothing was sent:")
    assert "--allow-local" in message
    assert "HOOKDISPATCH_ALLOW_LOCAL=1" in message
    assert "TargetPolicy" not in message
    assert "targets=" not in message
    assert "not-shown" not in message  # scheme and host only, never the query
    assert message.rstrip().endswith(".")  # whole, not cut mid-sentence
    assert stored(db) == (0, 0)
    assert httpserver.log == []

    sent = run("send", "user.created", "--data", "{}", "--allow-local")
    assert sent.exit_code == 0, sent.output
    assert stored(db) == (1, 1)


def test_replay_without_allow_local_refuses_too(run: Run, db: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hooks").respond_with_data("", status=500)
    run("endpoints", "add", httpserver.url_for("/hooks"), "--allow-local")
    failed = run("send", "user.created", "--allow-local", "--max-attempts", "1")
    assert failed.exit_code == 1, failed.output
    refused = run("replay", "--failed")
    assert refused.exit_code == 2
    assert "--allow-local" in refused.stderr
    assert stored(db) == (1, 1)  # no replay was stored


def test_errors_speak_of_flags_not_python(run: Run) -> None:
    result = run("endpoints", "add", "http://127.0.0.1:8000/hooks")
    assert result.exit_code == 2
    assert "--allow-local" in result.stderr
    assert "TargetPolicy" not in result.stderr
    assert "allow_http" not in result.stderr
    private = run("endpoints", "add", "https://10.1.2.3/hooks")
    assert "--allow-network CIDR" in private.stderr
    assert "allowed_networks" not in private.stderr


# Progress and summary -----------------------------------------------------------------


def test_the_progress_line_counts_every_outcome_and_names_the_endpoint_that_is_down() -> None:
    line = status_line(
        "Sending",
        done=3,
        total=10,
        noun="event",
        counts=Counter(delivered=3, retrying=5, failed=1),
        down=["ep_crm 5 retrying (HTTP 503)"],
        elapsed=2.0,
    )
    assert line.startswith("Sending: 3/10 events finished, 3 delivered, 5 retrying, 1 failed")
    assert "about 5 s left" in line
    assert line.endswith("; ep_crm 5 retrying (HTTP 503)")


def test_no_time_left_of_zero_while_work_is_pending() -> None:
    def line(done: int, elapsed: float) -> str:
        return status_line(
            "Sending", done=done, total=2, noun="event", counts=Counter(), down=[], elapsed=elapsed
        )

    assert "time left unknown" in line(0, 5.0)  # nothing finished yet: no guess
    assert "about 1 s left" in line(1, 0.001)  # fast, but something is left: never 0
    assert "left" not in line(2, 1.0)  # done: no time left shown
    assert "00:00:00" not in line(1, 0.001)


def test_the_tally_moves_while_an_endpoint_is_down(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/down").respond_with_data("", status=503)
    tally = Tally()
    hooks = hd.Dispatcher(
        storage=hd.MemoryStorage(),
        workers=2,
        retry=hd.RetryPolicy(max_attempts=5, initial_wait=0.05, jitter=0),
        on_attempt=tally,
    )
    endpoint = hooks.add_endpoint(httpserver.url_for("/down"))
    events = [hooks.dispatch("user.created", {}) for _ in range(3)]
    keys = {event.id for event in events}
    seen: list[tuple[int, int]] = []

    def moving() -> bool:
        counts, down = tally.counts(keys, by_event=True)
        if down:
            assert down[0].startswith(f"{endpoint.id} ")
            assert down[0].endswith("(HTTP 503)")
        seen.append((counts["retrying"], counts["failed"]))
        return counts["failed"] == 3

    assert wait_for(moving, timeout=15)
    assert any(retrying for retrying, _ in seen)  # the outage showed as retries first
    assert tally.counts(keys, by_event=True)[0]["retrying"] == 0
    hooks.close(timeout=0)


def test_summary_of_a_failure_reads_in_full(run: Run, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/down").respond_with_data("", status=503)
    run("endpoints", "add", httpserver.url_for("/down"), "--allow-local")
    result = run("send", "user.created", "--allow-local", "--max-attempts", "1")
    assert result.exit_code == 1
    assert "after 1 attempt: HTTP 503" in result.stdout  # "1 attempt", not "1 attempts"
    [delivery] = json.loads(run("deliveries", "--json").stdout)
    shown = run("attempts", delivery["id"])
    assert "failed after 1 attempt" in shown.stdout


@pytest.mark.slow  # a fresh interpreter, then a signal
def test_ctrl_c_prints_the_summary_and_loses_nothing(db: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/down").respond_with_data("", status=503)
    storage = hd.SQLiteStorage(db)
    storage.add_endpoint(hd.Endpoint.create(httpserver.url_for("/down"), now=datetime.now(UTC)))
    storage.close()
    batch = "".join(
        json.dumps({"event": "user.created", "data": {"n": n}}) + "\n" for n in range(5)
    )
    process = subprocess.Popen(
        [str(EXECUTABLE), "--db", str(db), "send", "--file", "-", "--retry-wait", "60"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HOOKDISPATCH_ALLOW_LOCAL": "1", "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdin is not None
    process.stdin.write(batch)
    process.stdin.close()
    process.stdin = None  # communicate() must not flush it again

    def attempted() -> bool:
        if not db.exists():
            return False
        check = hd.SQLiteStorage(db)
        try:
            found = check.list_deliveries()
            return len(found) == 5 and all(d.attempt_count == 1 for d in found)
        finally:
            check.close()

    assert wait_for(attempted, timeout=20)
    time.sleep(0.3)  # waiting for the retries now
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=20)
    assert process.returncode == 130, out + err
    assert "Aborted!" not in out + err
    assert "Traceback" not in err
    assert "Interrupted" in out
    assert "5 events in" in out
    assert "0 delivered, 0 failed, 5 pending" in out
    assert "  pending: dlv_" in out
    assert "last error: HTTP 503" in out
    assert "worker` delivers them" in out
    check = hd.SQLiteStorage(db)
    pending = check.list_deliveries(status=hd.DeliveryStatus.PENDING)
    check.close()
    assert len(pending) == 5  # nothing lost: each waits for its retry, in the database


# listen --secret ----------------------------------------------------------------------


def _listen(port: int, *args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [str(EXECUTABLE), "listen", "--port", str(port), "--secret", SECRET, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    assert process.stdout.readline().startswith("Listening on")
    return process


def _signed(secret: str) -> tuple[bytes, dict[str, str]]:
    event = hd.Event.create("user.created", {"user_id": "u1"}, now=datetime.now(UTC))
    timestamp = int(time.time())
    return event.body, {
        "X-Webhook-Signature": hd.sign_hex(event.body, secret),
        "webhook-id": event.id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": hd.sign_standard(
            event.body, secret, msg_id=event.id, timestamp=timestamp
        ),
    }


def test_listen_answers_401_to_what_does_not_verify(unused_port: int) -> None:
    process = _listen(unused_port)
    try:
        url = f"http://127.0.0.1:{unused_port}/hooks"
        body, headers = _signed(SECRET)
        good = httpx.post(url, content=body, headers=headers)
        headers["X-Webhook-Signature"] = "0" * 64  # only the hex signature is wrong
        half = httpx.post(url, content=body, headers=headers)
        forged = httpx.post(url, content=body, headers=_signed(hd.generate_secret())[1])
    finally:
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=10)
    assert good.status_code == 200
    assert half.status_code == 401
    assert half.text == "X-Webhook-Signature did not verify\n"
    assert forged.status_code == 401
    assert forged.text == "X-Webhook-Signature and webhook-signature did not verify\n"
    assert "answered 401" in out


def test_listen_accept_all_keeps_accepting(unused_port: int) -> None:
    process = _listen(unused_port, "--accept-all")
    try:
        body, headers = _signed(hd.generate_secret())
        answer = httpx.post(f"http://127.0.0.1:{unused_port}/hooks", content=body, headers=headers)
    finally:
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=10)
    assert answer.status_code == 200
    assert "INVALID" in out
    assert "answered 200" in out


@pytest.fixture
def unused_port() -> int:
    return free_port()


# events -------------------------------------------------------------------------------


def test_events_lists_newest_first_and_shows_one(run: Run, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hooks").respond_with_data("ok")
    run("endpoints", "add", httpserver.url_for("/hooks"), "--allow-local")
    run("endpoints", "add", httpserver.url_for("/hooks"), "--allow-local", "--tenant", "acct_42")
    for event_type, data, tenant in (
        ("user.created", {"n": 1}, "default"),
        ("invoice.paid", {"n": 2}, "default"),
        ("user.created", {"n": 3}, "acct_42"),
    ):
        sent = run(
            "send", event_type, "--data", json.dumps(data), "--tenant", tenant, "--allow-local"
        )
        assert sent.exit_code == 0, sent.output

    listed = json.loads(run("events", "--json").stdout)
    assert [e["data"]["n"] for e in listed] == [3, 2, 1]  # newest first
    only = json.loads(
        run("events", "--json", "--type", "user.created", "--tenant", "default").stdout
    )
    assert [e["data"]["n"] for e in only] == [1]
    assert len(json.loads(run("events", "--json", "--limit", "1").stdout)) == 1
    table = run("events")
    assert table.exit_code == 0
    assert table.stdout.splitlines()[0].split() == ["EVENT", "TENANT", "TYPE", "CREATED", "DATA"]

    shown = run("events", "show", listed[0]["id"])
    assert shown.exit_code == 0, shown.output
    assert '"n": 3' in shown.stdout
    assert "succeeded" in shown.stdout
    unknown = run("events", "show", listed[0]["id"], "--tenant", "default")
    assert unknown.exit_code == 2
    assert "no event" in unknown.stderr


# verify -------------------------------------------------------------------------------


def test_verify_takes_its_body_as_send_does(run: Run, tmp_path: Path) -> None:
    body, headers = _signed(SECRET)
    path = tmp_path / "body.json"
    path.write_bytes(body)
    signature = ["--secret", SECRET, "--signature", headers["X-Webhook-Signature"]]
    assert run("verify", *signature, "--file", str(path)).exit_code == 0
    assert run("verify", *signature, "--file", "-", input=body).exit_code == 0
    assert run("verify", *signature, input=body).exit_code == 0  # stdin by default
    both = run("verify", *signature, "--file", str(path), str(path))
    assert both.exit_code == 2
