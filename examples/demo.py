"""hookdispatch demo: signed webhooks, retries and durable storage, end to end.

What it shows, in about two seconds and without leaving this machine:

* a receiver on 127.0.0.1 that checks BOTH signatures on every request, the way your
  customers would: ``X-Webhook-Signature`` with ``hookdispatch.verify_signature`` and
  the Standard Webhooks headers with ``hookdispatch.verify_standard_webhook``;
* a background Dispatcher (4 worker threads) storing everything in an SQLite file,
  with an event catalog: the four event types it sends, each with a description, a
  JSON Schema its data must match and an example (schemas need the ``catalog`` extra,
  jsonschema; without it the catalog has names and descriptions only);
* two endpoints: ``healthy`` answers 200, ``flaky`` answers 500 twice per event before
  it accepts, so its deliveries succeed on the third attempt, after persisted retries;
* the delivery history read back from storage: every attempt, its status and duration.

Run it with ``make demo``. It exits 0 when every delivery succeeded and every request
carried two valid signatures, else 1.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import hookdispatch as hd


def record(**fields: dict) -> dict:
    """The JSON Schema of an object with these fields, every one required."""
    return {"type": "object", "properties": fields, "required": list(fields)}


TEXT = {"type": "string", "minLength": 1}
# The event catalog: every type the host sends, declared once.
EVENT_TYPES = [
    hd.EventType(
        "user.created",
        "Triggered when a new user signs up",
        schema=record(user_id=TEXT, email=TEXT),
        example={"user_id": "user_78451", "email": "ada@example.com"},
    ),
    hd.EventType(
        "user.subscription.updated",
        "Triggered when a user's subscription changes",
        schema=record(user_id=TEXT, plan=TEXT, status={"enum": ["trialing", "active", "canceled"]}),
        example={"user_id": "user_78451", "plan": "Pro", "status": "active"},
    ),
    hd.EventType(
        "user.deleted",
        "Triggered when a user account is deleted",
        schema=record(user_id=TEXT),
        example={"user_id": "user_78451"},
    ),
    hd.EventType(
        "invoice.paid",
        "Triggered when an invoice is paid",
        schema=record(
            invoice_id=TEXT,
            amount={"type": "integer", "minimum": 0},  # in cents
            currency={"type": "string", "pattern": "^[a-z]{3}$"},
        ),
        example={"invoice_id": "in_1", "amount": 4900, "currency": "usd"},
    ),
]
EVENTS = [(event_type.name, event_type.example) for event_type in EVENT_TYPES]  # one of each
FLAKY_FAILURES = 2  # the flaky endpoint answers 500 this many times per event
TIME_LIMIT = 20.0  # seconds; the demo normally needs about two
# The table's headings and column widths.
COLUMNS = {
    "EVENT": 26,
    "ENDPOINT": 9,
    "DELIVERY": 14,
    "ATTEMPT": 8,
    "HTTP": 5,
    "TIME": 9,
    "SIGNED": 7,
}


class Receiver(BaseHTTPRequestHandler):
    """A webhook receiver: verify both signatures, then answer (flaky: 500 twice per event)."""

    protocol_version = "HTTP/1.1"  # keep-alive, as real receivers do
    disable_nagle_algorithm = True  # answer at once, not after a delayed ACK
    server: ReceiverServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))  # the raw bytes
        secret = self.server.secrets[self.path]
        hex_ok = hd.verify_signature(body, self.headers.get("X-Webhook-Signature", ""), secret)
        std_ok = hd.verify_standard_webhook(body, dict(self.headers), secret, now=time.time())
        event = json.loads(body)
        with self.server.lock:  # one list of requests per (endpoint path, event id)
            seen = self.server.requests[self.path, event["id"]]
            flaky = self.path == "/hooks/flaky" and len(seen) < FLAKY_FAILURES
            status = 401 if not (hex_ok and std_ok) else 500 if flaky else 200
            seen.append({"type": event["event"], "hex": hex_ok, "std": std_ok, "status": status})
        answer = b"ok" if status == 200 else b"try again later"
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the demo's output to the table


class ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # socketserver's default backlog of 5 is too small for a pool

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Receiver)  # port 0: any free port
        self.secrets: dict[str, str] = {}  # path -> the endpoint's secret
        self.requests: dict[tuple[str, str], list[dict]] = defaultdict(list)
        self.lock = threading.Lock()


def event_catalog() -> hd.Catalog:
    """The catalog, its schemas checked when jsonschema is installed (the extra)."""
    try:
        return hd.Catalog(EVENT_TYPES)
    except hd.MissingDependencyError:  # `make demo` installs no extras: names only
        return hd.Catalog(hd.EventType(t.name, t.description) for t in EVENT_TYPES)


def deliver_all(hooks: hd.Dispatcher) -> None:
    """Dispatch the events, then wait until no delivery is pending (retries included)."""
    for event_type, data in EVENTS:
        hooks.dispatch(event_type, data)
    give_up = time.monotonic() + TIME_LIMIT
    # drain() waits for work that is due now; retries scheduled later need another round.
    while hooks.deliveries(status="pending") and time.monotonic() < give_up:
        hooks.drain(timeout=give_up - time.monotonic())
        time.sleep(0.05)


def paint(text: str, colour: str) -> str:
    """Colour for terminals only; plain text when piped to a file or CI log."""
    codes = {"green": "32", "yellow": "33", "red": "31", "bold": "1"}
    return f"\033[{codes[colour]}m{text}\033[0m" if sys.stdout.isatty() else text


def row(*cells: str) -> str:
    return "  ".join(f"{c:<{w}}" for c, w in zip(cells, COLUMNS.values(), strict=True)).rstrip()


def signed(received: dict | None) -> str:
    if received is None:
        return "not seen"
    return {(True, True): "both ok", (True, False): "hex only", (False, True): "std only"}.get(
        (received["hex"], received["std"]), "NEITHER"
    )


def print_delivery(hooks: hd.Dispatcher, d: hd.Delivery, name: str, seen: list[dict]) -> None:
    """One row per attempt, as stored, next to what the receiver saw for that request."""
    event = hooks.get_event(d.event_id)
    for attempt in hooks.attempts(d.id):
        first = attempt.number == 1
        received = seen[attempt.number - 1] if attempt.number <= len(seen) else None
        line = row(
            event.type if first else "",
            name if first else "",
            f"{d.status} ({d.attempt_count})" if first else "",
            f"#{attempt.number}",
            str(attempt.status_code or attempt.failure),
            f"{attempt.duration * 1000:.1f} ms",
            signed(received),
        )
        print(paint(line, "green" if attempt.succeeded else "yellow"))


def report(hooks: hd.Dispatcher, server: ReceiverServer, names: dict[str, str]) -> bool:
    """Print the deliveries; return whether all succeeded with verified signatures."""
    print(paint(row(*COLUMNS), "bold"))
    deliveries = hooks.deliveries()
    requests, verified = 0, True
    for d in deliveries:
        seen = server.requests["/hooks/" + names[d.endpoint_id], d.event_id]
        print_delivery(hooks, d, names[d.endpoint_id], seen)
        requests += len(seen)
        verified &= len(seen) == d.attempt_count and all(r["hex"] and r["std"] for r in seen)
    statuses = ("succeeded", "failed", "pending")
    counts = {s: sum(d.status == s for d in deliveries) for s in statuses}
    ok = verified and counts["succeeded"] == len(EVENTS) * len(names)
    summary = (
        f"{len(deliveries)} deliveries: "
        + ", ".join(f"{n} {status}" for status, n in counts.items())
        + f"; {requests} requests, "
        + ("both signatures verified on every request." if verified else "SIGNATURES FAILED.")
    )
    print("\n" + paint(summary, "green" if ok else "red"))
    return ok


def main() -> int:
    db_path = Path(tempfile.mkdtemp(prefix="hookdispatch-demo-")) / "webhooks.db"
    server = ReceiverServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    storage = hd.SQLiteStorage(db_path)
    retry = hd.RetryPolicy(initial_wait=0.2, max_wait=1.0, jitter=0.1)  # quick, for the demo
    # The receiver is local and plain http, which the default target policy refuses
    # (SSRF protection); TargetPolicy.local() is the switch for development.
    local = hd.TargetPolicy.local()
    catalog = event_catalog()  # dispatch() refuses a type or data it does not describe
    try:
        with hd.Dispatcher(
            storage=storage, workers=4, retry=retry, targets=local, catalog=catalog
        ) as hooks:
            names: dict[str, str] = {}  # endpoint id -> name
            for name in ("healthy", "flaky"):
                endpoint = hooks.add_endpoint(f"{base}/{name}")  # all events; secret generated
                server.secrets[f"/hooks/{name}"] = endpoint.secret  # handed to the receiver
                names[endpoint.id] = name
            print(f"Receiver listening on {base}/...; sending {len(EVENTS)} events.\n")
            deliver_all(hooks)
            ok = report(hooks, server, names)
    finally:
        storage.close()
        server.shutdown()
        server.server_close()
    print(f"SQLite file: {db_path}\n  try: sqlite3 {db_path} 'select * from attempts'")
    print(
        f"  or browse it: hookdispatch --db {db_path} portal  (pip install 'hookdispatch[portal]')"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
