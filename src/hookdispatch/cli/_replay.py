"""``hookdispatch replay``: send finished deliveries again, as new deliveries."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import click
from attrs import evolve

import hookdispatch as hd

from ._batch import (
    BatchOptions,
    batch_options,
    deliver_batch,
    print_summary,
    refuse_blocked_targets,
)
from ._context import CliError, open_storage, owned_delivery
from ._history import check_endpoint_listed
from ._options import parse_since, scope_option
from ._output import plural

__all__ = ["replay"]

_PAGE = 500


def latest_failed(
    storage: hd.Storage, *, tenant: str | None, endpoint_id: str | None, since: datetime | None
) -> list[hd.Delivery]:
    """For each (event, endpoint), its latest delivery if that one failed, oldest first.

    A failed delivery that was replayed since (successfully or not yet finished) is not
    picked again: running ``replay --failed`` twice does not send anything twice, and
    one run replays each (event, endpoint) once. It pages through the failed deliveries
    matching the filters, newest first, and looks up, for each (event, endpoint), its
    latest delivery (an indexed lookup of one row): it never reads the whole table.
    ``since`` bounds when a delivery was created.
    """
    query = hd.DeliveryQuery(
        tenant=tenant,
        endpoint_id=endpoint_id,
        status=hd.DeliveryStatus.FAILED,
        since=since,
        newest_first=True,
        limit=_PAGE,
    )
    seen: set[tuple[str, str]] = set()
    found: list[hd.Delivery] = []
    while True:
        page = storage.find_deliveries(query)
        for delivery in page:
            pair = (delivery.event_id, delivery.endpoint_id)
            if pair in seen:
                continue  # an older failure of a pair already decided
            seen.add(pair)
            latest = storage.find_deliveries(
                hd.DeliveryQuery(
                    event_id=delivery.event_id,
                    endpoint_id=delivery.endpoint_id,
                    newest_first=True,
                    limit=1,
                )
            )
            if latest and latest[0].id == delivery.id:
                found.append(delivery)
        if len(page) < _PAGE:
            break
        query = evolve(query, after=(page[-1].created_at, page[-1].id))
    found.reverse()
    return found


def _endpoint_or_none(storage: hd.Storage, endpoint_id: str) -> hd.Endpoint | None:
    """The endpoint; ``None`` once it is deleted."""
    try:
        return storage.get_endpoint(endpoint_id)
    except hd.UnknownEndpointError:
        return None


def _check_replayable(storage: hd.Storage, chosen: list[hd.Delivery]) -> None:
    for delivery in chosen:
        if delivery.status is hd.DeliveryStatus.PENDING:
            raise CliError(f"delivery {delivery.id} is still pending; it is attempted as scheduled")
        if delivery.status is hd.DeliveryStatus.CANCELLED:
            raise CliError(
                f"delivery {delivery.id} was cancelled because its endpoint"
                f" {delivery.endpoint_id} was deleted; it cannot be sent again"
            )
        endpoint = _endpoint_or_none(storage, delivery.endpoint_id)
        if endpoint is None:
            raise CliError(
                f"endpoint {delivery.endpoint_id} of {delivery.id} was deleted;"
                " its deliveries cannot be sent again"
            )
        if not endpoint.enabled:
            raise CliError(
                f"endpoint {delivery.endpoint_id} of {delivery.id} is disabled;"
                f" enable it first (hookdispatch endpoints enable {delivery.endpoint_id})"
            )


def _to_live_endpoints(storage: hd.Storage, candidates: list[hd.Delivery]) -> list[hd.Delivery]:
    """The candidates whose endpoint is enabled; says on stderr how many were left out."""
    endpoints: dict[str, hd.Endpoint | None] = {}
    chosen: list[hd.Delivery] = []
    disabled = deleted = 0
    for delivery in candidates:
        if delivery.endpoint_id not in endpoints:
            endpoints[delivery.endpoint_id] = _endpoint_or_none(storage, delivery.endpoint_id)
        endpoint = endpoints[delivery.endpoint_id]
        if endpoint is None:
            deleted += 1
        elif not endpoint.enabled:
            disabled += 1
        else:
            chosen.append(delivery)
    if disabled:
        click.echo(
            f"Skipping {disabled} to disabled endpoints (hookdispatch endpoints enable ID first).",
            err=True,
        )
    if deleted:
        click.echo(f"Skipping {deleted} to deleted endpoints: they are never sent again.", err=True)
    return chosen


@click.command()
@click.argument("delivery_ids", nargs=-1, metavar="[DELIVERY_ID]...")
@click.option("--failed", is_flag=True, help="Replay every delivery whose latest try failed.")
@scope_option(
    "Only this tenant's deliveries: with --failed, its failures only; with DELIVERY_IDs,"
    " another tenant's id is refused as unknown."
)
@click.option("--endpoint", "endpoint_id", metavar="ID", help="With --failed: to this endpoint.")
@click.option(
    "--since",
    callback=parse_since,
    metavar="DURATION|TIME",
    help="With --failed: deliveries created since 30m, 1h, 2d, or a time.",
)
@batch_options("Replaying")
def replay(
    *,
    delivery_ids: tuple[str, ...],
    failed: bool,
    tenant: str | None,
    endpoint_id: str | None,
    since: datetime | None,
    options: BatchOptions,
) -> None:
    """Send finished deliveries again, and wait until the new ones are done.

    Each replay is a new delivery of the same event (same id and body, so receivers
    can still drop duplicates) to the same endpoint, with a full set of attempts; the
    old one keeps its history. Every delivery named is checked before any is replayed.
    Cancelled deliveries (their endpoint was deleted) are never replayed. The exit
    status is 1 when a replay failed, 3 when some are still pending, 130 after Ctrl-C
    (as for `send`).

    \b
        hookdispatch replay dlv_0190a3b4c5d6a1b2c3d4e5f6a7b8
        hookdispatch replay --failed --endpoint ep_0190a3b4 --since 1h
        hookdispatch replay --failed --tenant acct_42
    """
    if bool(delivery_ids) == failed:
        raise click.UsageError("give DELIVERY_IDs or --failed, not both")
    if not failed and (endpoint_id or since):
        raise click.UsageError("--endpoint and --since select deliveries for --failed")
    storage = open_storage()
    if failed:
        candidates = latest_failed(storage, tenant=tenant, endpoint_id=endpoint_id, since=since)
        if not candidates and endpoint_id is not None:
            check_endpoint_listed(storage, endpoint_id, tenant)
        chosen = _to_live_endpoints(storage, candidates)
    else:
        chosen = [
            owned_delivery(storage, delivery_id, tenant)
            for delivery_id in dict.fromkeys(delivery_ids)
        ]
        _check_replayable(storage, chosen)
    if not chosen:
        click.echo("Nothing to replay.")
        return
    endpoints = {d.endpoint_id: _endpoint_or_none(storage, d.endpoint_id) for d in chosen}
    refuse_blocked_targets(
        (endpoint for endpoint in endpoints.values() if endpoint is not None),
        options.delivery.policy,
    )

    def start(hooks: hd.Dispatcher) -> Iterator[list[str]]:
        for old in chosen:
            yield [hooks.redeliver(old.id).id]

    outcome = deliver_batch(
        storage, start, by_event=False, total=len(chosen), noun="delivery", options=options
    )
    headline = f"{plural(len(outcome.keys), 'delivery')} replayed in {outcome.elapsed:.1f} s"
    unstarted = None
    if outcome.unstarted:
        unstarted = f"{plural(outcome.unstarted, 'delivery')} of {len(chosen)} were not replayed."
    status = print_summary(
        outcome.deliveries,
        outcome.endpoints,
        headline=headline,
        interrupted=outcome.interrupted,
        unstarted=unstarted,
    )
    if status:
        click.get_current_context().exit(status)
