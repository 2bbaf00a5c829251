"""``hookdispatch listen``: a local receiver for developers that checks both signatures."""

from __future__ import annotations

import json
import signal
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

import click

import hookdispatch as hd

from ._context import CliError
from ._output import plural

__all__ = ["failed_schemes", "listen", "signature_report"]

_SHOWN_DATA = 1000  # characters of the event data printed per webhook


def failed_schemes(body: bytes, headers: Any, secret: str) -> list[str]:
    """The signature headers that do not verify with ``secret``: ``X-Webhook-Signature``
    (hex HMAC of the body) and ``webhook-signature`` (Standard Webhooks, its timestamp
    within 5 minutes)."""
    failed = []
    if not hd.verify_signature(body, headers.get("X-Webhook-Signature", ""), secret):
        failed.append("X-Webhook-Signature")
    if not hd.verify_standard_webhook(body, dict(headers.items()), secret, now=time.time()):
        failed.append("webhook-signature")
    return failed


def signature_report(body: bytes, headers: Any, secret: str | None) -> str:
    """Whether ``X-Webhook-Signature`` and the Standard Webhooks signature verify."""
    if secret is None:
        return "signatures not checked (no --secret)"
    failed = failed_schemes(body, headers, secret)
    if not failed:
        return "both signatures verified"
    return (
        f"X-Webhook-Signature {'INVALID' if 'X-Webhook-Signature' in failed else 'ok'},"
        f" webhook-signature {'INVALID' if 'webhook-signature' in failed else 'ok'}"
    )


class _Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: a worker with more threads than that
    # connecting at once would see some connections reset.
    request_queue_size = 128
    secret: str | None
    answer: int
    accept_all: bool
    count: int | None
    received = 0
    done: threading.Event
    lock: threading.Lock


class _Receiver(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        report = signature_report(body, self.headers, self.server.secret)
        secret = self.server.secret
        failed = [] if secret is None else failed_schemes(body, self.headers, secret)
        answer, reply = self.server.answer, b""
        if failed and not self.server.accept_all:
            # As a receiver must: an unverified request is refused, before its body
            # is trusted. The answer says which scheme failed, for the developer.
            answer = 401
            reply = (" and ".join(failed) + " did not verify\n").encode()
        try:
            document = json.loads(body)
            event = f"{document['event']} {document['id']}"
            data = json.dumps(document["data"], ensure_ascii=False)
        except (ValueError, TypeError, KeyError):
            event, data = "(not a hookdispatch event)", body[:_SHOWN_DATA].decode(errors="replace")
        if len(data) > _SHOWN_DATA:
            data = data[:_SHOWN_DATA] + "…"
        self.send_response(answer)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)
        self.wfile.flush()
        with self.server.lock:
            self.server.received += 1
            clock = datetime.now(UTC).strftime("%H:%M:%S")
            click.echo(f"{clock} POST {self.path} {event}: {report}, answered {answer}")
            click.echo(f"  {data}")
            if self.server.count is not None and self.server.received >= self.server.count:
                self.server.done.set()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: each webhook is printed by do_POST instead."""


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to bind.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="The port (0: any free port, printed at start).",
)
@click.option(
    "--secret",
    envvar="HOOKDISPATCH_SECRET",
    help="The endpoint's secret, to verify signatures [env: HOOKDISPATCH_SECRET].",
)
@click.option(
    "--status",
    type=click.IntRange(100, 599),
    default=200,
    show_default=True,
    help="The status to answer: 500 rehearses retries, 302 a misconfigured URL.",
)
@click.option(
    "--accept-all",
    is_flag=True,
    help="With --secret: answer --status even when a signature does not verify (for"
    " debugging; a real receiver must refuse such a request).",
)
@click.option("--count", type=click.IntRange(min=1), help="Exit after this many webhooks.")
def listen(
    *, host: str, port: int, secret: str | None, status: int, accept_all: bool, count: int | None
) -> None:
    """Receive webhooks locally and print each one: its event, its data, and whether
    both signatures verify. Stops on Ctrl-C (or SIGTERM).

    With --secret it behaves as a receiver must: a request whose X-Webhook-Signature
    or webhook-signature does not verify is answered 401, with the failing scheme
    named in the answer and in the line printed (--accept-all answers --status
    anyway). Without --secret nothing is checked.

    \b
        hookdispatch listen --port 8000 --secret "$SECRET"
        hookdispatch endpoints add http://127.0.0.1:8000/hooks --secret "$SECRET" --allow-local
    """
    try:
        server = _Server((host, port), _Receiver)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    server.secret, server.answer, server.count = secret, status, count
    server.accept_all = accept_all
    server.done, server.lock = threading.Event(), threading.Lock()
    serving = threading.Thread(target=server.serve_forever, name="hookdispatch-listen")
    serving.start()
    bound_host, bound_port = server.server_address[:2]
    checks = ""
    if secret is not None:
        checks = " (accepting all)" if accept_all else " (401 when a signature does not verify)"
    click.echo(f"Listening on http://{bound_host!s}:{bound_port}/, answering {status}{checks}")
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while not server.done.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.shutdown()
        serving.join()
        server.server_close()
    click.echo(f"Stopped after {plural(server.received, 'webhook')}.", err=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
