"""``hookdispatch replay``: send finished deliveries again, as new deliveries."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import click

import hookdispatch as hd

from ._batch import BatchOptions, batch_options, deliver_batch, print_summary
from ._context import CliError, open_storage
from ._history import select_deliveries
from ._options import parse_since
from ._output import plural

__all__ = ["replay"]


def latest_failed(
    storage: hd.Storage, *, endpoint_id: str | None, since: datetime | None
) -> list[hd.Delivery]:
    """For each (event, endpoint), its latest delivery if that one failed.

    A failed delivery that was replayed since (successfully or not yet finished) is not
    picked again: running ``replay --failed`` twice does not send anything twice.
    """
    latest: dict[tuple[str, str], hd.Delivery] = {}
    for delivery in select_deliveries(storage, endpoint_id=endpoint_id):
        latest[delivery.event_id, delivery.endpoint_id] = delivery  # oldest first
    return [
        d
        for d in latest.values()
        if d.status is hd.DeliveryStatus.FAILED and (since is None or d.updated_at >= since)
    ]


def _check_replayable(storage: hd.Storage, chosen: list[hd.Delivery]) -> None:
    for delivery in chosen:
        if delivery.status is hd.DeliveryStatus.PENDING:
            raise CliError(f"delivery {delivery.id} is still pending; it is attempted as scheduled")
        if not storage.get_endpoint(delivery.endpoint_id).enabled:
            raise CliError(
                f"endpoint {delivery.endpoint_id} of {delivery.id} is disabled;"
                f" enable it first (hookdispatch endpoints enable {delivery.endpoint_id})"
            )


@click.command()
@click.argument("delivery_ids", nargs=-1, metavar="[DELIVERY_ID]...")
@click.option("--failed", is_flag=True, help="Replay every delivery whose latest try failed.")
@click.option("--endpoint", "endpoint_id", metavar="ID", help="With --failed: to this endpoint.")
@click.option(
    "--since",
    callback=parse_since,
    metavar="DURATION|TIME",
    help="With --failed: failed since 30m, 1h, 2d, or a time.",
)
@batch_options("Replaying")
def replay(
    *,
    delivery_ids: tuple[str, ...],
    failed: bool,
    endpoint_id: str | None,
    since: datetime | None,
    options: BatchOptions,
) -> None:
    """Send finished deliveries again, and wait until the new ones are done.

    Each replay is a new delivery of the same event (same id and body, so receivers
    can still drop duplicates) to the same endpoint, with a full set of attempts; the
    old one keeps its history. Every delivery named is checked before any is replayed.
    The exit status is 1 when a replay failed.

    \b
        hookdispatch replay dlv_0190a3b4c5d6a1b2c3d4e5f6a7b8
        hookdispatch replay --failed --endpoint ep_0190a3b4 --since 1h
    """
    if bool(delivery_ids) == failed:
        raise click.UsageError("give DELIVERY_IDs or --failed, not both")
    if not failed and (endpoint_id or since):
        raise click.UsageError("--endpoint and --since select deliveries for --failed")
    storage = open_storage()
    if failed:
        enabled = {e.id for e in storage.list_endpoints() if e.enabled}
        candidates = latest_failed(storage, endpoint_id=endpoint_id, since=since)
        chosen = [d for d in candidates if d.endpoint_id in enabled]
        if len(chosen) < len(candidates):
            click.echo(f"Skipping {len(candidates) - len(chosen)} to disabled endpoints.", err=True)
    else:
        chosen = [storage.get_delivery(delivery_id) for delivery_id in dict.fromkeys(delivery_ids)]
        _check_replayable(storage, chosen)
    if not chosen:
        click.echo("Nothing to replay.")
        return

    def start(hooks: hd.Dispatcher) -> Iterator[str]:
        for old in chosen:
            yield hooks.redeliver(old.id).id

    outcome = deliver_batch(storage, start, by_event=False, total=len(chosen), options=options)
    headline = f"{plural(len(outcome.keys), 'delivery')} replayed in {outcome.elapsed:.1f} s"
    if print_summary(outcome.deliveries, outcome.endpoints, headline=headline):
        click.get_current_context().exit(1)
