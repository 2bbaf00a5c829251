"""``hookdispatch prune``: delete finished deliveries, their attempts and their events
once they are older than the retention period."""

from __future__ import annotations

from datetime import datetime

import click

from ._context import open_storage
from ._options import parse_since
from ._output import when

__all__ = ["prune"]


@click.command()
@click.option(
    "--older-than",
    "older_than",
    required=True,
    callback=parse_since,
    metavar="DURATION|TIME",
    help="Delete what finished before this long ago (30d, 12h, 2w) or this time.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    metavar="N",
    help="Rows deleted per transaction: small batches keep the database free for"
    " dispatch and workers.",
)
def prune(*, older_than: datetime, batch_size: int) -> None:
    """Delete finished deliveries (succeeded, failed, or cancelled when their endpoint
    was deleted), with their attempts, that last changed before --older-than, then the
    events older than that with no delivery left.

    Pending deliveries (waiting for an attempt or a retry, or in flight) and their
    events are never deleted, however old. It deletes in batches of --batch-size
    rows, one short transaction each, so it can run while workers deliver. Run it
    daily, from cron or your scheduler:

    \b
        hookdispatch prune --older-than 30d
    """
    storage = open_storage()
    total = 0
    while deleted := storage.prune(older_than=older_than, limit=batch_size):
        total += deleted
    click.echo(
        f"Deleted {total} finished deliveries and events from before {when(older_than)}"
        " (attempts went with their deliveries)."
    )
