"""The `hookdispatch` command, through click's CliRunner, on real SQLite files in tmp_path
and a real HTTP receiver (pytest-httpserver)."""

from __future__ import annotations

import io
import json
import os
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import httpx
import psycopg
import pytest
from click.testing import CliRunner, Result
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from pytest_httpserver import HTTPServer

import hookdispatch as hd
from hookdispatch.cli import main
from hookdispatch.cli._app import cli
from hookdispatch.cli._output import Progress
from pg_fixtures import postgres_admin_dsn  # noqa: F401 - fixture

from receivers import wait_for

FAST = ["--max-attempts", "2", "--retry-wait", "0.05"]
Run = Callable[..., Result]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "hooks.db"


@pytest.fixture
def run(db: Path) -> Run:
    """Invoke the command on ``db``, with http:// and 127.0.0.1 allowed (a local receiver)."""

    def invoke(*args: str, input: str | bytes | None = None, **env: str) -> Result:
        runner = CliRunner(env={"HOOKDISPATCH_ALLOW_LOCAL": "1", **env})
        return runner.invoke(cli, ["--db", str(db), *args], input=input, catch_exceptions=False)

    return invoke


@pytest.fixture
def hooks_url(httpserver: HTTPServer) -> str:
    httpserver.expect_request("/hooks", method="POST").respond_with_data("thanks")
    return httpserver.url_for("/hooks")


def add_endpoint(run: Run, url: str, *args: str) -> dict[str, Any]:
    result = run("endpoints", "add", url, "--json", *args)
    assert result.exit_code == 0, result.output
    endpoint: dict[str, Any] = json.loads(result.stdout)
    return endpoint


def deliveries_json(run: Run, *args: str) -> list[dict[str, Any]]:
    result = run("deliveries", "--json", *args)
    assert result.exit_code == 0, result.output
    found: list[dict[str, Any]] = json.loads(result.stdout)
    return found


def clean_error(result: Result, *fragments: str) -> None:
    """Exit status 2, one `Error:` line on stderr, no traceback."""
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: ") or "Error: " in result.stderr, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield prefix
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from all_commands(command, (*prefix, name))
        else:
            yield (*prefix, name)


# Help, version, errors -------------------------------------------------------------


@pytest.mark.parametrize("command", list(all_commands(cli)), ids=" ".join)
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_every_command_has_help(command: tuple[str, ...], flag: str) -> None:
    result = CliRunner().invoke(cli, [*command, flag])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: ")


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"hookdispatch, version {hd.__version__}"


def test_without_click_the_command_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in sys.modules if name.startswith("hookdispatch.cli.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "click", None)  # as if click were not installed
    with pytest.raises(SystemExit, match=r"pip install 'hookdispatch\[cli\]'"):
        main()


def test_a_missing_database_is_an_error_not_a_new_file(run: Run, db: Path) -> None:
    clean_error(run("deliveries"), "no database at")
    assert not db.exists()


def test_db_from_the_environment_then_the_default(
    tmp_path: Path, hooks_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner(env={"HOOKDISPATCH_ALLOW_LOCAL": "1"})
    assert runner.invoke(cli, ["endpoints", "add", hooks_url]).exit_code == 0
    assert (tmp_path / "hookdispatch.db").exists()
    env = {"HOOKDISPATCH_DB": str(tmp_path / "other.db")}
    assert runner.invoke(cli, ["endpoints", "add", hooks_url], env=env).exit_code == 0
    assert len(hd.SQLiteStorage(tmp_path / "other.db").list_endpoints()) == 1


# Endpoints -------------------------------------------------------------------------


def test_add_prints_the_generated_secret_once(run: Run, db: Path, hooks_url: str) -> None:
    result = run("endpoints", "add", hooks_url, "--events", "user.created, invoice.paid")
    assert result.exit_code == 0, result.output
    [stored] = hd.SQLiteStorage(db).list_endpoints()
    assert stored.events == ("user.created", "invoice.paid")
    assert stored.secret in result.stdout

    listing = run("endpoints", "list")
    assert stored.id in listing.stdout
    assert hooks_url in listing.stdout
    assert stored.secret not in listing.output
    [listed] = json.loads(run("endpoints", "list", "--json").stdout)
    assert listed["id"] == stored.id
    assert "secret" not in listed


def test_add_with_a_secret_does_not_print_it(run: Run, hooks_url: str) -> None:
    secret = hd.generate_secret()
    result = run("endpoints", "add", hooks_url, "--secret", secret, "--id", "ep_billing")
    assert result.exit_code == 0
    assert "ep_billing" in result.stdout
    assert secret not in result.output


def test_invalid_endpoints_are_one_line_errors_without_the_secret(run: Run) -> None:
    clean_error(run("endpoints", "add", "ftp://example.com/x"), "https://")
    clean_error(run("endpoints", "add", "https://example.com/x", "--secret", "tiny-secret!"))
    assert "tiny-secret!" not in run("endpoints", "add", "https://x.test", "--secret", "s!").output


def test_http_needs_allow_local_or_an_allowed_network(db: Path, hooks_url: str) -> None:
    runner = CliRunner()
    args = ["--db", str(db), "endpoints", "add", hooks_url]
    result = runner.invoke(cli, [*args, "--allow-network", "127.0.0.0/8"])
    clean_error(result, "http")
    assert runner.invoke(cli, [*args, "--allow-local"]).exit_code == 0
    clean_error(runner.invoke(cli, [*args, "--allow-network", "nonsense"]), "nonsense")


def test_disable_enable_and_unknown_ids(run: Run, db: Path, hooks_url: str) -> None:
    endpoint = add_endpoint(run, hooks_url)
    assert run("endpoints", "disable", endpoint["id"]).exit_code == 0
    assert not hd.SQLiteStorage(db).get_endpoint(endpoint["id"]).enabled
    assert "no" in run("endpoints", "list").stdout
    assert run("endpoints", "enable", endpoint["id"]).exit_code == 0
    assert hd.SQLiteStorage(db).get_endpoint(endpoint["id"]).enabled
    for action in ("disable", "enable", "rotate-secret"):
        clean_error(run("endpoints", action, "ep_nope"), "ep_nope")


def test_rotate_secret_prints_the_new_one_once(
    run: Run, db: Path, hooks_url: str, httpserver: HTTPServer
) -> None:
    old = add_endpoint(run, hooks_url)
    result = run("endpoints", "rotate-secret", old["id"], "--json")
    assert result.exit_code == 0
    rotated = json.loads(result.stdout)
    new_secret = rotated["secret"]
    assert new_secret != old["secret"]
    assert new_secret.startswith("whsec_")
    stored = hd.SQLiteStorage(db).get_endpoint(old["id"])
    assert stored.secret == new_secret
    assert stored.previous_secret == old["secret"]
    # The default grace: the old secret signs for 24 hours more.
    assert stored.previous_secret_expires_at is not None
    left = stored.previous_secret_expires_at - datetime.now(UTC)
    assert timedelta(hours=23, minutes=59) < left <= timedelta(hours=24)
    assert rotated["rotation_ends_at"] == stored.previous_secret_expires_at.isoformat().replace(
        "+00:00", "Z"
    )
    listing = run("endpoints", "list").output + run("endpoints", "list", "--json").output
    assert new_secret not in listing
    assert old["secret"] not in listing
    # What is sent during the overlap carries a Standard Webhooks signature for each
    # secret, and X-Webhook-Signature stays the old secret's.
    assert run("send", "user.created").exit_code == 0
    [(request, _)] = httpserver.log
    for secret in (new_secret, old["secret"]):
        assert hd.verify_standard_webhook(request.data, request.headers, secret, now=time.time())
    assert hd.verify_signature(request.data, request.headers["X-Webhook-Signature"], old["secret"])


def test_rotate_secret_says_until_when_the_old_one_signs_and_end_rotation_stops_it(
    run: Run, db: Path, hooks_url: str, httpserver: HTTPServer
) -> None:
    old = add_endpoint(run, hooks_url)
    result = run("endpoints", "rotate-secret", old["id"], "--grace", "1h30m")
    assert result.exit_code == 0, result.output
    stored = hd.SQLiteStorage(db).get_endpoint(old["id"])
    assert stored.secret in result.stdout  # shown once
    assert old["secret"] not in result.output  # the old one is never printed
    assert stored.previous_secret_expires_at is not None
    assert f"until {stored.previous_secret_expires_at:%Y-%m-%d %H:%M:%S}Z" in result.stdout
    assert f"end-rotation {old['id']}" in result.stdout

    # A second rotation with a grace period while this one overlaps is refused.
    clean_error(run("endpoints", "rotate-secret", old["id"]), "end-rotation")

    ended = run("endpoints", "end-rotation", old["id"])
    assert ended.exit_code == 0, ended.output
    assert stored.secret not in ended.output
    after = hd.SQLiteStorage(db).get_endpoint(old["id"])
    assert (after.secret, after.previous_secret, after.previous_secret_expires_at) == (
        stored.secret,
        None,
        None,
    )
    assert run("send", "user.created").exit_code == 0
    [(request, _)] = httpserver.log
    assert not hd.verify_standard_webhook(
        request.data, request.headers, old["secret"], now=time.time()
    )
    assert hd.verify_signature(request.data, request.headers["X-Webhook-Signature"], after.secret)
    clean_error(run("endpoints", "end-rotation", "ep_nope"), "ep_nope")


def test_rotate_secret_with_no_grace_and_bad_graces(run: Run, db: Path, hooks_url: str) -> None:
    old = add_endpoint(run, hooks_url)
    result = run("endpoints", "rotate-secret", old["id"], "--grace", "0")
    assert result.exit_code == 0, result.output
    assert "no longer signs" in result.stdout
    stored = hd.SQLiteStorage(db).get_endpoint(old["id"])
    assert stored.previous_secret is None
    assert stored.secret != old["secret"]
    for bad in ("soon", "-1h", "24", "1y"):
        clean_error(run("endpoints", "rotate-secret", old["id"], "--grace", bad), "--grace")
    clean_error(run("endpoints", "rotate-secret", old["id"], "--grace", "100d"), "grace")
    assert hd.SQLiteStorage(db).get_endpoint(old["id"]).secret == stored.secret


# send ------------------------------------------------------------------------------


def test_send_one_event_signed_both_ways(run: Run, hooks_url: str, httpserver: HTTPServer) -> None:
    endpoint = add_endpoint(run, hooks_url, "--events", "user.created")
    result = run("send", "user.created", "--data", '{"user_id": "user_78451"}', "--id", "evt_1")
    assert result.exit_code == 0, result.output
    assert "1 event" in result.stdout
    assert "1 delivered, 0 failed, 0 pending" in result.stdout
    [(request, _)] = httpserver.log
    body = request.data
    assert json.loads(body)["data"] == {"user_id": "user_78451"}
    assert hd.verify_signature(body, request.headers["X-Webhook-Signature"], endpoint["secret"])
    assert hd.verify_standard_webhook(body, request.headers, endpoint["secret"], now=time.time())
    # The id makes it idempotent: sending it again sends nothing.
    assert run("send", "user.created", "--id", "evt_1").exit_code == 0
    assert len(httpserver.log) == 1


def test_send_refuses_bad_input(run: Run, hooks_url: str) -> None:
    add_endpoint(run, hooks_url)
    assert run("send", "user.created", "--data", "{nope").exit_code == 2
    clean_error(run("send", "bad type!"), "event type")
    assert run("send").exit_code == 2  # neither EVENT nor --file
    assert run("send", "x", "--file", "-", input="").exit_code == 2


def batch(*lines: object) -> str:
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)


def test_send_a_file_with_a_summary_per_endpoint(
    run: Run, tmp_path: Path, hooks_url: str, httpserver: HTTPServer
) -> None:
    users = add_endpoint(run, hooks_url, "--events", "user.created")
    everything = add_endpoint(run, hooks_url)
    path = tmp_path / "events.jsonl"
    path.write_text(
        batch(
            {"event": "user.created", "data": {"n": 1}},
            "",
            {"event": "user.created", "data": {"n": 2}, "id": "evt_two"},
            {"event": "invoice.paid", "data": [1, 2]},
        )
    )
    result = run("send", "--file", str(path))
    assert result.exit_code == 0, result.output
    assert "3 events" in result.stdout
    assert "5 deliveries, 5 delivered" in result.stdout
    lines = result.stdout.splitlines()
    assert any(users["id"] in line and line.split()[-3:] == ["2", "0", "0"] for line in lines)
    assert any(everything["id"] in line and line.split()[-3:] == ["3", "0", "0"] for line in lines)
    assert len(httpserver.log) == 5


def test_send_reads_stdin(run: Run, hooks_url: str, httpserver: HTTPServer) -> None:
    add_endpoint(run, hooks_url)
    lines = batch(*({"event": "tick", "data": {"n": n}} for n in range(20)))
    result = run("send", "--file", "-", "--workers", "4", input=lines)
    assert result.exit_code == 0, result.output
    assert "20 events" in result.stdout
    assert sorted(json.loads(r.data)["data"]["n"] for r, _ in httpserver.log) == list(range(20))


MALFORMED = batch(
    {"event": "user.created", "data": {}},
    "not json",
    {"event": "user.created"},
    {"event": "user.created", "data": {}, "extra": 1},
    {"event": "bad type!", "data": {}},
    [1, 2],
    {"event": "user.created", "data": {}, "id": "evt_ok"},
)


def test_malformed_lines_abort_before_anything_is_sent(
    run: Run, db: Path, hooks_url: str, httpserver: HTTPServer
) -> None:
    add_endpoint(run, hooks_url)
    result = run("send", "--file", "-", input=MALFORMED)
    clean_error(result, "5 malformed lines", "nothing was sent")
    for number in (2, 3, 4, 5, 6):
        assert f"line {number}:" in result.stderr
    assert "line 1:" not in result.stderr
    assert "line 7:" not in result.stderr
    assert httpserver.log == []
    assert hd.SQLiteStorage(db).list_deliveries() == []


def test_malformed_lines_can_be_skipped(run: Run, hooks_url: str, httpserver: HTTPServer) -> None:
    add_endpoint(run, hooks_url)
    result = run("send", "--file", "-", "--on-error", "skip", input=MALFORMED)
    assert result.exit_code == 0, result.output
    assert "line 2:" in result.stderr
    assert "5 malformed lines skipped" in result.stdout
    assert len(httpserver.log) == 2


def test_an_oversized_event_is_a_malformed_line(run: Run, hooks_url: str) -> None:
    add_endpoint(run, hooks_url)
    lines = batch({"event": "a", "data": 1}, {"event": "big", "data": "x" * 300_000})
    result = run("send", "--file", "-", input=lines)
    clean_error(result, "1 malformed line")
    assert "line 2: event body is" in result.stderr


def test_a_failed_delivery_fails_the_command(run: Run, httpserver: HTTPServer, db: Path) -> None:
    httpserver.expect_request("/down").respond_with_data("nope", status=503)
    endpoint = add_endpoint(run, httpserver.url_for("/down"))
    result = run("send", "user.created", *FAST)
    assert result.exit_code == 1, result.output
    assert "0 delivered, 1 failed" in result.stdout
    assert "HTTP 503" in result.stdout
    assert f"hookdispatch --db {db} replay --failed" in result.stdout  # the same database
    [delivery] = hd.SQLiteStorage(db).list_deliveries()
    assert delivery.attempt_count == 2
    assert endpoint["secret"] not in result.output


def test_wait_leaves_slow_retries_pending(run: Run, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/down").respond_with_data("", status=500)
    add_endpoint(run, httpserver.url_for("/down"))
    result = run("send", "user.created", "--retry-wait", "30", "--wait", "0.3")
    assert result.exit_code == 3, result.output  # nothing failed, something is pending
    assert "0 failed, 1 pending" in result.stdout
    assert "  pending: dlv_" in result.stdout
    assert "last error: HTTP 500" in result.stdout
    assert "worker` delivers them" in result.stdout


def test_verbose_logs_one_line_per_attempt(run: Run, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/down").respond_with_data("", status=500)
    add_endpoint(run, httpserver.url_for("/down"))
    result = run("send", "user.created", "-v", *FAST)
    assert result.exit_code == 1
    attempt_lines = [line for line in result.stderr.splitlines() if " dlv_" in line]
    assert len(attempt_lines) == 2, result.stderr
    assert httpserver.url_for("/down") not in result.stderr


# deliveries and attempts -----------------------------------------------------------


@pytest.fixture
def history(run: Run, httpserver: HTTPServer) -> dict[str, Any]:
    """One endpoint that answers 200 and one that answers 500; two events sent to both."""
    httpserver.expect_request("/ok").respond_with_data("fine")
    httpserver.expect_request("/down").respond_with_data("try later", status=500)
    ok = add_endpoint(run, httpserver.url_for("/ok"))
    down = add_endpoint(run, httpserver.url_for("/down"))
    run("send", "user.created", "--data", '{"n": 1}', *FAST)
    run("send", "invoice.paid", "--data", '{"n": 2}', *FAST)
    return {"ok": ok["id"], "down": down["id"]}


def test_deliveries_table_and_filters(run: Run, history: dict[str, Any]) -> None:
    table = run("deliveries")
    assert table.exit_code == 0
    header, *rows = table.stdout.splitlines()
    assert header.split()[:4] == ["DELIVERY", "EVENT", "ENDPOINT", "STATUS"]
    assert len(rows) == 4
    assert any("failed" in row and "HTTP 500" in row and "500" in row.split() for row in rows)

    assert {d["status"] for d in deliveries_json(run, "--status", "failed")} == {"failed"}
    down = deliveries_json(run, "--endpoint", history["down"])
    assert [d["attempts"] for d in down] == [2, 2]
    assert [d["last_status_code"] for d in down] == [500, 500]
    assert {d["event"] for d in deliveries_json(run, "--event", "invoice.paid")} == {"invoice.paid"}
    assert len(deliveries_json(run, "--since", "1h")) == 4
    assert deliveries_json(run, "--since", "2999-01-01T00:00:00Z") == []
    assert len(deliveries_json(run, "--limit", "1")) == 1
    assert "No deliveries match." in run("deliveries", "--event", "nothing.here").stdout
    # One page, never the whole table: a hint gives the cursor of the older ones.
    assert "older deliveries match too" in run("deliveries", "--limit", "1").stdout
    assert run("deliveries", "--limit", "0").exit_code == 2  # no more "0: all"


def test_deliveries_rejects_bad_filters(run: Run, history: dict[str, Any]) -> None:
    clean_error(run("deliveries", "--endpoint", "ep_nope"), "ep_nope")
    assert run("deliveries", "--since", "yesterday").exit_code == 2
    assert run("deliveries", "--status", "lost").exit_code == 2


def test_attempts_of_a_delivery(run: Run, history: dict[str, Any]) -> None:
    [failed, *_] = deliveries_json(run, "--endpoint", history["down"])
    result = run("attempts", failed["id"])
    assert result.exit_code == 0
    assert f"{failed['id']}: event {failed['event_id']} (user.created)" in result.stdout
    rows = [line for line in result.stdout.splitlines() if line[:1].isdigit()]
    assert len(rows) == 2
    assert all("http_status" in row and "try later" in row for row in rows)
    attempts = json.loads(run("attempts", failed["id"], "--json").stdout)
    assert [a["number"] for a in attempts] == [1, 2]
    assert attempts[0]["status_code"] == 500
    assert attempts[0]["response_body"] == "try later"
    clean_error(run("attempts", "dlv_nope"), "dlv_nope")


# replay ----------------------------------------------------------------------------


def test_replay_by_id_and_failed(run: Run, history: dict[str, Any], httpserver: HTTPServer) -> None:
    failed = deliveries_json(run, "--status", "failed")
    assert len(failed) == 2
    httpserver.clear_all_handlers()
    httpserver.expect_request("/down").respond_with_data("back up")  # the receiver is fixed

    result = run("replay", failed[0]["id"], *FAST)
    assert result.exit_code == 0, result.output
    assert "1 delivery replayed" in result.stdout
    assert "1 delivered" in result.stdout

    # --failed takes the latest delivery per event and endpoint: only the other one.
    result = run("replay", "--failed", "--endpoint", history["down"], "--since", "1h", *FAST)
    assert result.exit_code == 0, result.output
    assert "1 delivery replayed" in result.stdout
    assert "Nothing to replay." in run("replay", "--failed").stdout
    replays = [d for d in deliveries_json(run, "--endpoint", history["down"]) if d["attempts"] == 1]
    assert sorted(d["event_id"] for d in replays) == sorted(d["event_id"] for d in failed)


def test_replay_that_fails_again_exits_1(run: Run, history: dict[str, Any]) -> None:
    result = run("replay", "--failed", *FAST)
    assert result.exit_code == 1
    assert "2 deliveries replayed" in result.stdout
    assert "2 failed" in result.stdout


def test_replay_checks_every_id_first(run: Run, db: Path, history: dict[str, Any]) -> None:
    [failed, *_] = deliveries_json(run, "--status", "failed")
    before = len(hd.SQLiteStorage(db).list_deliveries())
    clean_error(run("replay", failed["id"], "dlv_nope"), "dlv_nope")
    run("endpoints", "disable", history["down"])
    clean_error(run("replay", failed["id"]), "disabled")
    assert len(hd.SQLiteStorage(db).list_deliveries()) == before
    assert "Skipping 2" in run("replay", "--failed").stderr
    assert run("replay").exit_code == 2
    assert run("replay", failed["id"], "--failed").exit_code == 2
    assert run("replay", failed["id"], "--since", "1h").exit_code == 2


def store_pending(db: Path, url: str) -> tuple[hd.Endpoint, hd.Event]:
    """An endpoint and an event whose delivery is pending and due: work for a worker."""
    now = datetime.now(UTC)
    storage = hd.SQLiteStorage(db)
    endpoint = hd.Endpoint.create(url, now=now)
    storage.add_endpoint(endpoint)
    event = hd.Event.create("user.created", {"user_id": "user_78451"}, now=now)
    storage.add_event(event, [hd.Delivery.create(event, endpoint, now=now)])
    storage.close()
    return endpoint, event


def test_replay_refuses_a_pending_delivery(run: Run, db: Path, hooks_url: str) -> None:
    _, event = store_pending(db, hooks_url)
    [pending] = hd.SQLiteStorage(db).list_deliveries(event_id=event.id)
    clean_error(run("replay", pending.id), "still pending")


# worker ----------------------------------------------------------------------------


def signal_when(condition: Callable[[], bool], signum: int) -> threading.Thread:
    """Send ``signum`` to this process once ``condition`` holds (or after 10 s)."""

    def watch() -> None:
        wait_for(condition, timeout=10)
        os.kill(os.getpid(), signum)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_worker_delivers_until_a_signal(
    run: Run, db: Path, hooks_url: str, httpserver: HTTPServer, signum: int
) -> None:
    endpoint, event = store_pending(db, hooks_url)
    previous = signal.getsignal(signum)
    watcher = signal_when(lambda: len(httpserver.log) == 1, signum)
    result = run("worker", "--workers", "2", "--poll-interval", "0.05")
    watcher.join()
    assert result.exit_code == 0, result.output
    assert signal.getsignal(signum) is previous  # handlers restored
    log = result.stderr
    assert "worker started" in log
    assert f"{signal.Signals(signum).name}: stopping" in log
    assert f"(event {event.id}) to endpoint {endpoint.id} on attempt 1: HTTP 200" in log
    assert log.rstrip().endswith("worker stopped")
    assert hooks_url not in log
    assert endpoint.secret not in log
    [delivery] = hd.SQLiteStorage(db).list_deliveries()
    assert delivery.status is hd.DeliveryStatus.SUCCEEDED


# listen and verify -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def post_when_up(port: int, body: bytes, headers: dict[str, str]) -> list[httpx.Response]:
    """POST to the listener from a thread, once it accepts connections."""
    answers: list[httpx.Response] = []

    def post() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                answers.append(
                    httpx.post(f"http://127.0.0.1:{port}/hooks", content=body, headers=headers)
                )
                return
            except httpx.ConnectError:
                time.sleep(0.02)

    threading.Thread(target=post, daemon=True).start()
    return answers


def signed(secret: str, event_type: str = "user.created") -> tuple[bytes, dict[str, str]]:
    event = hd.Event.create(event_type, {"user_id": "user_78451"}, now=datetime.now(UTC))
    timestamp = int(time.time())
    headers = {
        "X-Webhook-Signature": hd.sign_hex(event.body, secret),
        "webhook-id": event.id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": hd.sign_standard(
            event.body, secret, msg_id=event.id, timestamp=timestamp
        ),
    }
    return event.body, headers


def test_listen_prints_and_verifies(run: Run) -> None:
    secret, port = hd.generate_secret(), free_port()
    answers = post_when_up(port, *signed(secret))
    result = run("listen", "--port", str(port), "--secret", secret, "--count", "1")
    assert result.exit_code == 0, result.output
    assert f"Listening on http://127.0.0.1:{port}/, answering 200" in result.stdout
    assert "POST /hooks user.created evt_" in result.stdout
    assert "both signatures verified, answered 200" in result.stdout
    assert '{"user_id": "user_78451"}' in result.stdout
    assert secret not in result.output
    assert wait_for(lambda: bool(answers), timeout=5)
    assert answers[0].status_code == 200


def test_listen_reports_bad_signatures_and_answers_the_status(run: Run) -> None:
    """With --accept-all, a request that does not verify gets --status all the same
    (without it, 401: see test_cli_receiver.py)."""
    port = free_port()
    answers = post_when_up(port, *signed(hd.generate_secret()))
    result = run(
        "listen",
        "--port",
        str(port),
        "--secret",
        hd.generate_secret(),
        "--status",
        "500",
        "--accept-all",
        "--count",
        "1",
    )
    assert "X-Webhook-Signature INVALID, webhook-signature INVALID, answered 500" in result.stdout
    assert wait_for(lambda: bool(answers), timeout=5)
    assert answers[0].status_code == 500


def test_listen_without_a_secret_and_on_a_busy_port(run: Run) -> None:
    port = free_port()
    post_when_up(port, b"not json", {})
    result = run("listen", "--port", str(port), "--count", "1")
    assert "(not a hookdispatch event): signatures not checked (no --secret)" in result.stdout
    with socket.create_server(("127.0.0.1", 0)) as busy:
        clean_error(run("listen", "--port", str(busy.getsockname()[1])), "cannot listen")


def test_verify(run: Run, tmp_path: Path) -> None:
    secret = hd.generate_secret()
    body, headers = signed(secret)
    path = tmp_path / "body.json"
    path.write_bytes(body)
    good = run(
        "verify", "--secret", secret, "--signature", headers["X-Webhook-Signature"], str(path)
    )
    assert good.exit_code == 0
    assert "Signature verified" in good.stdout
    from_stdin = run("verify", "--signature", headers["X-Webhook-Signature"], input=body,
                     HOOKDISPATCH_SECRET=secret)  # fmt: skip
    assert from_stdin.exit_code == 0
    changed = run("verify", "--secret", secret, "--signature", headers["X-Webhook-Signature"],
                  input=body + b"\n")  # fmt: skip
    assert changed.exit_code == 1
    assert "does NOT match" in changed.stderr
    v1 = ["--signature", headers["webhook-signature"], "--webhook-id", headers["webhook-id"]]
    standard = run("verify", "--secret", secret, *v1, "--timestamp", headers["webhook-timestamp"],
                   input=body)  # fmt: skip
    assert standard.exit_code == 0
    assert run("verify", "--secret", secret, *v1, input=body).exit_code == 2
    assert secret not in changed.output


# PostgreSQL and the progress bar ---------------------------------------------------


@pytest.fixture
def postgres_url(postgres_admin_dsn: str) -> Iterator[str]:  # noqa: F811
    """A fresh database of its own (the CLI uses the default schema), as a URL."""
    name = f"hd_cli_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(postgres_admin_dsn)
    user, host = params.get("user", "postgres"), params.get("host", "127.0.0.1")
    yield f"postgresql://{user}@{host}:{params.get('port', 5432)}/{name}"
    with psycopg.connect(postgres_admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def test_a_postgresql_dsn(postgres_url: str, hooks_url: str, httpserver: HTTPServer) -> None:
    runner = CliRunner(env={"HOOKDISPATCH_DB": postgres_url, "HOOKDISPATCH_ALLOW_LOCAL": "1"})
    assert runner.invoke(cli, ["endpoints", "add", hooks_url]).exit_code == 0
    result = runner.invoke(cli, ["send", "user.created", "--data", "{}"])
    assert result.exit_code == 0, result.output
    assert len(httpserver.log) == 1
    [delivery] = json.loads(runner.invoke(cli, ["deliveries", "--json"]).stdout)
    assert delivery["status"] == "succeeded"


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_shows_count_rate_and_eta_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert Progress.wanted(quiet=False)
    assert not Progress.wanted(quiet=True)
    with Progress(10, label="Sending", enabled=True) as progress:
        progress.advance_to(4)
        progress.advance_to(10)
    shown = terminal.getvalue()
    assert "Sending" in shown
    assert "10/10" in shown
    assert "/s" in shown


def test_no_progress_bar_off_a_terminal(run: Run, hooks_url: str) -> None:
    add_endpoint(run, hooks_url)
    result = run("send", "--file", "-", input=batch({"event": "a", "data": 1}))
    assert "Sending" not in result.output
