"""``hookdispatch verify``: check a signature against a body, as a receiver would."""

from __future__ import annotations

import sys
from typing import BinaryIO

import click

import hookdispatch as hd

__all__ = ["verify"]


@click.command()
@click.option(
    "--secret",
    required=True,
    envvar="HOOKDISPATCH_SECRET",
    help="The endpoint's secret [env: HOOKDISPATCH_SECRET, which keeps it out of `ps`].",
)
@click.option(
    "--signature",
    required=True,
    metavar="SIG",
    help="The X-Webhook-Signature header (hex), or a webhook-signature header (v1,...).",
)
@click.option("--webhook-id", metavar="ID", help="With a v1 signature: the webhook-id header.")
@click.option("--timestamp", type=int, help="With a v1 signature: the webhook-timestamp header.")
@click.option(
    "--file",
    "body_file",
    type=click.File("rb"),
    metavar="PATH",
    help="The body, as received; - reads stdin (the default), as `send --file` does.",
)
@click.argument("body", type=click.File("rb"), required=False, metavar="[FILE]")
def verify(
    *,
    secret: str,
    signature: str,
    webhook_id: str | None,
    timestamp: int | None,
    body_file: BinaryIO | None,
    body: BinaryIO | None,
) -> None:
    """Check that SIG signs the body in --file PATH (default: stdin) with the secret.

    FILE, given without --file, is read the same way (the older spelling).

    The body must be the exact bytes received: an editor's trailing newline or
    re-formatted JSON no longer matches. For a Standard Webhooks signature give the
    webhook-id and webhook-timestamp headers too; the timestamp's age is not checked
    here. Exit status 0 when the signature matches, 1 when it does not.

    \b
        hookdispatch verify --secret "$SECRET" --signature 3f1c... --file body.json
    """
    if body_file is not None and body is not None:
        raise click.UsageError("give the body once: --file PATH (or FILE), not both")
    stream: BinaryIO = sys.stdin.buffer
    if body_file is not None:
        stream = body_file
    elif body is not None:
        stream = body
    payload = stream.read()
    if signature.startswith("v1,"):
        if webhook_id is None or timestamp is None:
            raise click.UsageError("a v1 signature needs --webhook-id and --timestamp")
        headers = {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature,
        }
        valid = hd.verify_standard_webhook(payload, headers, secret, now=timestamp)
    else:
        valid = hd.verify_signature(payload, signature, secret)
    if valid:
        click.echo(f"Signature verified ({len(payload)} bytes).")
        return
    click.echo(f"Signature does NOT match this body ({len(payload)} bytes) and secret.", err=True)
    click.get_current_context().exit(1)
