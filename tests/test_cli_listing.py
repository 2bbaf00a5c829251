"""The command line's tenants, pages, endpoint deletion and header files, through
click's CliRunner, on a real SQLite file in tmp_path and a real local receiver."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Protocol

import pytest
from click.testing import CliRunner, Result
from pytest_httpserver import HTTPServer

import hookdispatch as hd
from hookdispatch.cli import _endpoints
from hookdispatch.cli._app import cli

ONCE = ["--max-attempts", "1"]
TOKEN = "Bearer tok_9f8e7d6c5b4a"
CURSOR = re.compile(r"--(?:before|after) (\S+)\)$")


class Run(Protocol):
    def __call__(self, *args: str, input: str | None = None) -> Result: ...


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "hooks.db"


@pytest.fixture
def run(db: Path) -> Run:
    """The command on ``db``, with http:// and 127.0.0.1 allowed (a local receiver)."""

    def invoke(*args: str, input: str | None = None) -> Result:
        runner = CliRunner(env={"HOOKDISPATCH_ALLOW_LOCAL": "1"})
        return runner.invoke(cli, ["--db", str(db), *args], input=input, catch_exceptions=False)

    return invoke


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def clean_error(result: Result, *fragments: str) -> None:
    """Exit status 2, one `Error:` line on stderr, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Error: " in result.stderr, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def add(run: Run, url: str, *args: str) -> dict[str, Any]:
    endpoint: dict[str, Any] = json.loads(ok(run("endpoints", "add", url, "--json", *args)).stdout)
    return endpoint


def listed(run: Run, *args: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(ok(run(*args, "--json")).stdout)
    return rows


def cursor_of(text: str) -> str | None:
    """The cursor of the hint under a page, or None when there is no hint."""
    lines = [line for line in text.splitlines() if "run the same command with" in line]
    if not lines:
        return None
    [line] = lines
    match = CURSOR.search(line)
    assert match is not None, line
    return match.group(1)


@pytest.fixture
def two_tenants(run: Run, httpserver: HTTPServer) -> dict[str, str]:
    """Receivers /a (tenant acct_a) and /b (acct_b) that answer 200; one event each."""
    httpserver.expect_request("/a").respond_with_data("ok")
    httpserver.expect_request("/b").respond_with_data("ok")
    a = add(run, httpserver.url_for("/a"), "--tenant", "acct_a")
    b = add(run, httpserver.url_for("/b"), "--tenant", "acct_b")
    ok(run("send", "user.created", "--tenant", "acct_a", *ONCE))
    ok(run("send", "invoice.paid", "--tenant", "acct_b", *ONCE))
    return {"a": a["id"], "b": b["id"]}


# deliveries --tenant ------------------------------------------------------------------


def test_deliveries_of_one_tenant(run: Run, two_tenants: dict[str, str]) -> None:
    [mine] = listed(run, "deliveries", "--tenant", "acct_a")
    assert (mine["tenant"], mine["endpoint_id"], mine["event"]) == (
        "acct_a",
        two_tenants["a"],
        "user.created",
    )
    assert [d["tenant"] for d in listed(run, "deliveries", "--tenant", "acct_b")] == ["acct_b"]
    assert listed(run, "deliveries", "--tenant", "acct_nobody") == []

    # Every tenant's: the TENANT column says whose; with --tenant it is left out.
    header, *rows = ok(run("deliveries")).stdout.splitlines()
    assert header.split()[:3] == ["DELIVERY", "TENANT", "EVENT"]
    assert sorted(row.split()[1] for row in rows) == ["acct_a", "acct_b"]
    assert "TENANT" not in ok(run("deliveries", "--tenant", "acct_a")).stdout

    # Another tenant's endpoint reads as an unknown one.
    clean_error(
        run("deliveries", "--tenant", "acct_a", "--endpoint", two_tenants["b"]),
        f"no endpoint with id {two_tenants['b']!r}",
    )
    assert listed(run, "deliveries", "--tenant", "acct_b", "--endpoint", two_tenants["b"])
    # The event type is a column of the delivery now: a filter of the listing.
    assert listed(run, "deliveries", "--tenant", "acct_a", "--event", "invoice.paid") == []
    # attempts refuses another tenant's delivery as an unknown one.
    assert listed(run, "attempts", mine["id"], "--tenant", "acct_a")[0]["status_code"] == 200
    clean_error(
        run("attempts", mine["id"], "--tenant", "acct_b"), f"no delivery with id {mine['id']!r}"
    )


def test_deliveries_page_with_a_cursor(run: Run, httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request("/hooks").respond_with_data("ok")
    add(run, httpserver.url_for("/hooks"))
    batch = tmp_path / "events.jsonl"
    batch.write_text(
        "".join(f'{{"event": "user.created", "data": {{}}, "id": "evt_{n}"}}\n' for n in range(7))
    )
    ok(run("send", "--file", str(batch), *ONCE))

    # The 3 most recent, printed oldest first; the hint (on stderr with --json) goes back.
    first = ok(run("deliveries", "--limit", "3", "--json"))
    page = json.loads(first.stdout)
    assert [d["event_id"] for d in page] == ["evt_4", "evt_5", "evt_6"]
    cursor = cursor_of(first.stderr)
    assert cursor is not None
    assert "--before" in first.stderr

    seen = [d["event_id"] for d in page]
    pages = 1
    while cursor is not None:
        result = ok(run("deliveries", "--limit", "3", "--json", "--before", cursor))
        page = json.loads(result.stdout)
        seen = [d["event_id"] for d in page] + seen
        cursor = cursor_of(result.stderr)
        pages += 1
    assert seen == [f"evt_{n}" for n in range(7)]  # every one once, in order
    assert pages == 3

    # The table prints the hint under the rows, on stdout; the last page has none.
    table = ok(run("deliveries", "--limit", "5")).stdout
    cursor = cursor_of(table)
    assert cursor is not None
    rest = ok(run("deliveries", "--limit", "5", "--before", cursor)).stdout
    assert len(rest.splitlines()) == 3  # the header and the two oldest
    assert cursor_of(rest) is None
    assert cursor_of(ok(run("deliveries", "--limit", "7")).stdout) is None


def test_deliveries_refuses_bad_pages(run: Run, two_tenants: dict[str, str]) -> None:
    clean_error(run("deliveries", "--before", "not-a-cursor"), "--before", "cursor")
    clean_error(run("deliveries", "--limit", "0"), "--limit")
    clean_error(run("deliveries", "--limit", "1001"), "--limit")


# replay --tenant --------------------------------------------------------------------


@pytest.fixture
def failing(run: Run, httpserver: HTTPServer) -> dict[str, str]:
    """Receivers /a (tenant acct_a) and /b (acct_b), both down: one failed delivery each."""
    httpserver.expect_request("/a").respond_with_data("down", status=503)
    httpserver.expect_request("/b").respond_with_data("down", status=503)
    a = add(run, httpserver.url_for("/a"), "--tenant", "acct_a")
    b = add(run, httpserver.url_for("/b"), "--tenant", "acct_b")
    assert run("send", "user.created", "--tenant", "acct_a", *ONCE).exit_code == 1
    assert run("send", "user.created", "--tenant", "acct_b", *ONCE).exit_code == 1
    return {"a": a["id"], "b": b["id"]}


def back_up(httpserver: HTTPServer) -> None:
    httpserver.clear()
    httpserver.expect_request("/a").respond_with_data("ok")
    httpserver.expect_request("/b").respond_with_data("ok")


def test_replay_failed_of_one_tenant_sends_each_failure_once(
    run: Run, db: Path, failing: dict[str, str], httpserver: HTTPServer
) -> None:
    # acct_a's failure is replayed while its receiver is still down: two failed
    # deliveries of one event to one endpoint, the older one superseded.
    assert run("replay", "--failed", "--tenant", "acct_a", *ONCE).exit_code == 1
    assert len(listed(run, "deliveries", "--tenant", "acct_a", "--status", "failed")) == 2

    back_up(httpserver)
    result = ok(run("replay", "--failed", "--tenant", "acct_a", *ONCE))
    assert "1 delivery replayed" in result.stdout
    assert [request.path for request, _ in httpserver.log] == ["/a"]  # once, never /b
    assert "Nothing to replay." in ok(run("replay", "--failed", "--tenant", "acct_a")).stdout

    # acct_b's failure is still there for its own replay.
    [b_failed] = listed(run, "deliveries", "--tenant", "acct_b", "--status", "failed")
    result = ok(run("replay", "--failed", "--tenant", "acct_b", *ONCE))
    assert "1 delivery replayed" in result.stdout
    assert [request.path for request, _ in httpserver.log] == ["/a", "/b"]
    storage = hd.SQLiteStorage(db)
    assert storage.get_delivery(b_failed["id"]).status is hd.DeliveryStatus.FAILED  # history
    storage.close()


def test_replay_by_id_refuses_another_tenants_delivery_before_replaying(
    run: Run, failing: dict[str, str], httpserver: HTTPServer
) -> None:
    [a_failed] = listed(run, "deliveries", "--tenant", "acct_a")
    [b_failed] = listed(run, "deliveries", "--tenant", "acct_b")
    back_up(httpserver)
    clean_error(
        run("replay", a_failed["id"], b_failed["id"], "--tenant", "acct_a", *ONCE),
        f"no delivery with id {b_failed['id']!r}",
    )
    assert httpserver.log == []  # checked before anything was replayed
    clean_error(
        run("replay", "--failed", "--tenant", "acct_a", "--endpoint", failing["b"]),
        f"no endpoint with id {failing['b']!r}",
    )
    assert len(listed(run, "deliveries")) == 2
    result = ok(run("replay", a_failed["id"], "--tenant", "acct_a", *ONCE))
    assert "1 delivery replayed" in result.stdout


def test_cancelled_deliveries_are_never_replayed(
    run: Run, db: Path, failing: dict[str, str], httpserver: HTTPServer
) -> None:
    # A pending delivery to acct_a's endpoint (stored as a worker would find it).
    storage = hd.SQLiteStorage(db)
    endpoint = storage.get_endpoint(failing["a"])
    event = hd.Event.create("user.created", {}, now=endpoint.created_at, tenant="acct_a")
    storage.add_event(event, [hd.Delivery.create(event, endpoint, now=endpoint.created_at)])
    storage.close()

    result = ok(run("endpoints", "delete", failing["a"], "--yes"))
    assert f"Deleted endpoint {failing['a']}: 1 pending delivery cancelled" in result.stdout
    [cancelled] = listed(run, "deliveries", "--status", "cancelled")
    assert cancelled["event_id"] == event.id
    clean_error(run("replay", cancelled["id"]), "cancelled", "deleted")

    # The failed delivery to the deleted endpoint is not replayed either.
    [old_failure] = listed(run, "deliveries", "--tenant", "acct_a", "--status", "failed")
    clean_error(run("replay", old_failure["id"]), "deleted")
    back_up(httpserver)
    result = ok(run("replay", "--failed", *ONCE))
    assert "Skipping 1 to deleted endpoints" in result.stderr
    assert "1 delivery replayed" in result.stdout  # acct_b's only
    assert [request.path for request, _ in httpserver.log] == ["/b"]
    # Its deliveries stay listed under its id.
    assert len(listed(run, "deliveries", "--endpoint", failing["a"])) == 2


# endpoints delete --------------------------------------------------------------------


@pytest.fixture
def interactive(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if stdin were a terminal: CliRunner's input is not one."""
    monkeypatch.setattr(_endpoints, "_stdin_is_terminal", lambda: True)


def deleted(db: Path, endpoint_id: str) -> bool:
    storage = hd.SQLiteStorage(db)
    try:
        storage.get_endpoint(endpoint_id)
    except hd.UnknownEndpointError:
        return True
    finally:
        storage.close()
    return False


def test_delete_asks_and_no_keeps_the_endpoint(
    run: Run, db: Path, httpserver: HTTPServer, tmp_path: Path, interactive: None
) -> None:
    headers = tmp_path / "headers.txt"
    headers.write_text(f"Authorization: {TOKEN}\n")
    url = httpserver.url_for("/hooks/path-token?key=qs-token")
    made = add(run, url, "--description", "Billing of Acme", "--header", f"@{headers}")

    result = run("endpoints", "delete", made["id"], input="n\n")
    assert result.exit_code == 1, result.output
    assert "Billing of Acme" in result.stderr
    assert "Deleting it erases its secrets" in result.stderr  # no delivery is pending
    assert "nothing was deleted" in result.stderr
    for secret in (made["secret"], TOKEN, "path-token", "qs-token"):
        assert secret not in result.output
    assert not deleted(db, made["id"])

    result = run("endpoints", "delete", made["id"], input="y\n")
    assert result.exit_code == 0, result.output
    assert f"Deleted endpoint {made['id']}: 0 pending deliveries cancelled" in result.stdout
    assert deleted(db, made["id"])
    assert listed(run, "endpoints", "list") == []
    clean_error(run("endpoints", "delete", made["id"], "--yes"), made["id"])


def test_delete_shows_the_pending_count(
    run: Run, db: Path, httpserver: HTTPServer, interactive: None
) -> None:
    made = add(run, httpserver.url_for("/hooks"))
    storage = hd.SQLiteStorage(db)
    endpoint = storage.get_endpoint(made["id"])
    for n in range(3):
        event = hd.Event.create("user.created", {"n": n}, now=endpoint.created_at)
        storage.add_event(event, [hd.Delivery.create(event, endpoint, now=endpoint.created_at)])
    storage.close()
    result = run("endpoints", "delete", made["id"], input="y\n")
    assert result.exit_code == 0, result.output
    assert "cancels its 3 pending deliveries" in result.stderr
    assert "3 pending deliveries cancelled" in result.stdout
    assert [d["status"] for d in listed(run, "deliveries")] == ["cancelled"] * 3
    assert httpserver.log == []


def test_delete_without_a_terminal_needs_yes(run: Run, db: Path, httpserver: HTTPServer) -> None:
    made = add(run, httpserver.url_for("/hooks"))
    clean_error(run("endpoints", "delete", made["id"], input="y\n"), "--yes", "not a terminal")
    assert not deleted(db, made["id"])
    assert (
        "0 pending deliveries cancelled" in ok(run("endpoints", "delete", made["id"], "-y")).stdout
    )
    clean_error(run("endpoints", "delete", "ep_nope", "--yes"), "ep_nope")


# endpoints list ----------------------------------------------------------------------


def test_endpoints_list_shows_descriptions_and_rotations_never_secrets(
    run: Run, db: Path, httpserver: HTTPServer
) -> None:
    plain = add(run, httpserver.url_for("/plain"))
    table = ok(run("endpoints", "list")).stdout
    assert "DESCRIPTION" not in table
    assert "ROTATION" not in table

    described = add(run, httpserver.url_for("/described"), "--description", "x" * 80)
    rotated = json.loads(ok(run("endpoints", "rotate-secret", plain["id"], "--json")).stdout)
    stored = hd.SQLiteStorage(db).get_endpoint(plain["id"])
    assert stored.previous_secret_expires_at is not None

    table = ok(run("endpoints", "list")).stdout
    header, *rows = table.splitlines()
    assert "DESCRIPTION" in header
    assert "ROTATION" in header
    [plain_row] = [row for row in rows if row.startswith(plain["id"])]
    until = f"rotating until {stored.previous_secret_expires_at:%Y-%m-%d %H:%M} UTC"
    assert until in plain_row
    [described_row] = [row for row in rows if row.startswith(described["id"])]
    assert "x" * 29 + "…" in described_row
    assert "x" * 31 not in described_row
    for secret in (plain["secret"], rotated["secret"], described["secret"]):
        assert secret not in table

    by_id = {e["id"]: e for e in listed(run, "endpoints", "list")}
    assert by_id[plain["id"]]["rotation_ends_at"] == rotated["rotation_ends_at"] is not None
    assert by_id[described["id"]]["rotation_ends_at"] is None
    assert "secret" not in by_id[plain["id"]]

    ok(run("endpoints", "end-rotation", plain["id"]))
    assert "rotating" not in ok(run("endpoints", "list")).stdout


def test_endpoints_list_pages(run: Run, httpserver: HTTPServer) -> None:
    made = [add(run, httpserver.url_for(f"/e{n}"), "--tenant", "acct_a")["id"] for n in range(5)]
    add(run, httpserver.url_for("/other"), "--tenant", "acct_b")

    seen: list[str] = []
    cursor: str | None = None
    while True:
        args = ["endpoints", "list", "--tenant", "acct_a", "--limit", "2", "--json"]
        result = ok(run(*args, *(["--after", cursor] if cursor else [])))
        seen += [e["id"] for e in json.loads(result.stdout)]
        cursor = cursor_of(result.stderr)
        if cursor is None:
            break
        assert "--after" in result.stderr
    assert seen == made

    table = ok(run("endpoints", "list", "--limit", "4")).stdout
    assert table.count("ep_") == 4
    assert "TENANT" in table
    cursor = cursor_of(table)
    assert cursor is not None
    rest = ok(run("endpoints", "list", "--limit", "4", "--after", cursor)).stdout
    assert rest.count("ep_") == 2
    assert cursor_of(rest) is None
    clean_error(run("endpoints", "list", "--after", "nonsense"), "--after")
    assert (
        "No endpoints of tenant acct_c."
        in ok(run("endpoints", "list", "--tenant", "acct_c")).stdout
    )


# --header @FILE ----------------------------------------------------------------------


def test_headers_from_a_file_are_sent_and_never_printed(
    run: Run, db: Path, httpserver: HTTPServer, tmp_path: Path
) -> None:
    httpserver.expect_request("/hooks").respond_with_data("ok")
    headers = tmp_path / "headers.txt"
    headers.write_text(f"Authorization: {TOKEN}\r\n\nX-Customer:acct 42\n")
    result = run("endpoints", "add", httpserver.url_for("/hooks"), "--header", f"@{headers}")
    assert result.exit_code == 0, result.output
    outputs = [result.output]
    [stored] = hd.SQLiteStorage(db).list_endpoints()
    assert stored.headers == {"Authorization": TOKEN, "X-Customer": "acct 42"}

    outputs.append(ok(run("send", "user.created", *ONCE)).output)
    [(request, _)] = httpserver.log
    assert request.headers["Authorization"] == TOKEN
    assert request.headers["X-Customer"] == "acct 42"

    # From stdin, beside one on the command line; the file replaces every header too.
    token = "Bearer tok_from_stdin_1234"
    stdin = f"Authorization: {token}\n"
    args = ["--header", "@-", "--header", "X-Plain: 1"]
    result = run("endpoints", "update", stored.id, *args, input=stdin)
    assert result.exit_code == 0, result.output
    outputs.append(result.output)
    assert hd.SQLiteStorage(db).get_endpoint(stored.id).headers == {
        "Authorization": token,
        "X-Plain": "1",
    }
    outputs += [ok(run("endpoints", "list")).output, ok(run("endpoints", "list", "--json")).output]
    for output in outputs:
        assert "tok_" not in output


def test_header_files_that_cannot_be_used_are_clear_errors(
    run: Run, db: Path, httpserver: HTTPServer, tmp_path: Path
) -> None:
    made = add(run, httpserver.url_for("/hooks"))

    def update_from(path: str) -> Result:
        result = run("endpoints", "update", made["id"], "--header", f"@{path}")
        assert "tok_" not in result.output  # the file's content is never quoted
        return result

    clean_error(update_from(str(tmp_path / "missing.txt")), "--header", "no such file", "missing")
    clean_error(update_from(""), "--header", "@-")
    clean_error(update_from(str(tmp_path)), "--header", "directory")
    files = {
        "malformed.txt": (f"X-Ok: 1\nAuthorization {TOKEN}\n", ["line 2 of", "'Name: value'"]),
        "empty.txt": ("\n\n", ["no header"]),
        "large.txt": ("X-Big: " + "a" * 20_000 + "\n", ["16 KiB"]),
        "binary.txt": ("", ["not text"]),
        "invalid.txt": (f"Host: {TOKEN}\n", ["'Host'"]),  # refused by the library
    }
    for name, (content, fragments) in files.items():
        path = tmp_path / name
        path.write_text(content)
        if name == "binary.txt":
            path.write_bytes(b"X-Token: \xff\xfe\n")
        clean_error(update_from(str(path)), *fragments)
    assert hd.SQLiteStorage(db).get_endpoint(made["id"]).headers == {}  # nothing changed


# --tenant on endpoint commands -------------------------------------------------------


def test_endpoint_commands_refuse_another_tenants_endpoint(
    run: Run, db: Path, httpserver: HTTPServer
) -> None:
    theirs = add(run, httpserver.url_for("/b"), "--tenant", "acct_b")
    unknown = f"no endpoint with id {theirs['id']!r}"
    for args in (
        ["update", theirs["id"], "--description", "mine now"],
        ["disable", theirs["id"]],
        ["enable", theirs["id"]],
        ["rotate-secret", theirs["id"]],
        ["end-rotation", theirs["id"]],
        ["delete", theirs["id"], "--yes"],
    ):
        clean_error(run("endpoints", *args, "--tenant", "acct_a"), unknown)
    storage = hd.SQLiteStorage(db)
    stored = storage.get_endpoint(theirs["id"])  # untouched
    assert (stored.description, stored.enabled, stored.secret) == ("", True, theirs["secret"])
    storage.close()

    # Its own tenant may.
    ok(run("endpoints", "update", theirs["id"], "--description", "B", "--tenant", "acct_b"))
    ok(run("endpoints", "disable", theirs["id"], "--tenant", "acct_b"))
    ok(run("endpoints", "enable", theirs["id"], "--tenant", "acct_b"))
    ok(run("endpoints", "rotate-secret", theirs["id"], "--tenant", "acct_b"))
    ok(run("endpoints", "end-rotation", theirs["id"], "--tenant", "acct_b"))
    ok(run("endpoints", "delete", theirs["id"], "--tenant", "acct_b", "--yes"))
    assert deleted(db, theirs["id"])


def test_deliveries_show_both_sides_of_a_replay(
    run: Run, failing: dict[str, str], httpserver: HTTPServer
) -> None:
    [failed] = listed(run, "deliveries", "--tenant", "acct_a")
    assert (failed["replay_of"], failed["replayed_by"]) == (None, None)
    back_up(httpserver)
    ok(run("replay", "--failed", "--tenant", "acct_a", *ONCE))
    first, replay = listed(run, "deliveries", "--tenant", "acct_a")  # oldest first
    assert first["id"] == failed["id"]
    assert (first["status"], first["replayed_by"]) == ("failed", replay["id"])
    assert (replay["status"], replay["replay_of"]) == ("succeeded", failed["id"])
    table = ok(run("deliveries", "--tenant", "acct_a")).stdout
    assert "failed, replayed" in table  # a replayed failure is not an open failure
    assert "succeeded (replay)" in table
