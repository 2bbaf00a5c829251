"""``hookdispatch events``: the events sent lately, and one event with its payload.

Events are read through the storage contract's existing methods only: the listing
pages through deliveries (``Storage.find_deliveries``, newest first) and keeps each
event id once, then reads each event (``Storage.get_event``). So an event that
matched no endpoint (it has no delivery) is not listed; ``events show ID`` still
shows it.
"""

from __future__ import annotations

import json
from typing import Any

import click
from attrs import evolve

import hookdispatch as hd

from ._context import open_storage
from ._options import scope_option
from ._output import echo_json, iso, plural, shorten, table, when

__all__ = ["events"]

_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
_DEFAULT_LIMIT = 20
_MAX_LIMIT = 200
_PAGE = 500
_MAX_PAGES = 20  # deliveries read at most: _PAGE * _MAX_PAGES, however many are stored


def recent_event_ids(
    storage: hd.Storage, *, tenant: str | None, event_type: str | None, limit: int
) -> list[str]:
    """Up to ``limit`` distinct event ids, newest first, from the newest deliveries
    (of ``tenant`` and ``event_type``, when given). Reads a bounded number of pages."""
    query = hd.DeliveryQuery(tenant=tenant, event_type=event_type, newest_first=True, limit=_PAGE)
    found: dict[str, None] = {}
    for _ in range(_MAX_PAGES):
        page = storage.find_deliveries(query)
        for delivery in page:
            found.setdefault(delivery.event_id, None)
            if len(found) >= limit:
                return list(found)
        if len(page) < _PAGE:
            break
        query = evolve(query, after=(page[-1].created_at, page[-1].id))
    return list(found)


def _event_json(event: hd.Event, deliveries: list[hd.Delivery] | None = None) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": event.id,
        "type": event.type,
        "tenant": event.tenant,
        "created_at": iso(event.created_at),
        "data": event.data,
    }
    if deliveries is not None:
        document["deliveries"] = [
            {
                "id": d.id,
                "endpoint_id": d.endpoint_id,
                "status": d.status.value,
                "attempts": d.attempt_count,
                "last_error": d.last_error,
            }
            for d in deliveries
        ]
    return document


@click.group(invoke_without_command=True)
@scope_option("Only this tenant's events (default: every tenant's).")
@click.option("--type", "event_type", metavar="NAME", help="Only events of this type.")
@click.option(
    "--limit",
    type=click.IntRange(min=1, max=_MAX_LIMIT),
    default=_DEFAULT_LIMIT,
    show_default=True,
    metavar="N",
    help=f"Show the N most recent events (1 to {_MAX_LIMIT}).",
)
@_json_option
@click.pass_context
def events(
    ctx: click.Context, tenant: str | None, event_type: str | None, limit: int, as_json: bool
) -> None:
    """List the most recent events, newest first: one page of --limit.

    Events are found through their deliveries, so an event that matched no enabled
    endpoint is not listed (`events show ID` shows it). `events show ID` prints one
    event with its payload and its deliveries.

    \b
        hookdispatch events --tenant acct_42 --type invoice.paid
        hookdispatch events show evt_0190a3b4c5d6a1b2c3d4e5f6a7b8
    """
    if ctx.invoked_subcommand is not None:
        return
    storage = open_storage()
    ids = recent_event_ids(storage, tenant=tenant, event_type=event_type, limit=limit)
    found = [storage.get_event(event_id) for event_id in ids]
    if as_json:
        echo_json([_event_json(event) for event in found])
        return
    if not found:
        click.echo("No events match.")
        return
    rows = [
        [
            event.id,
            shorten(event.tenant, 20),
            shorten(event.type, 32),
            when(event.created_at),
            shorten(json.dumps(event.data, ensure_ascii=False), 60),
        ]
        for event in found
    ]
    click.echo(table(["EVENT", "TENANT", "TYPE", "CREATED", "DATA"], rows))
    if len(found) == limit:
        click.echo(f"(the {plural(limit, 'most recent event')}; --limit shows more)")


@events.command()
@click.argument("event_id", metavar="ID")
@scope_option("The event's tenant: another tenant's event id reads as unknown.")
@_json_option
def show(event_id: str, tenant: str | None, as_json: bool) -> None:
    """One event: its type, tenant, time, payload (the data, as JSON) and deliveries."""
    storage = open_storage()
    with hd.Dispatcher(storage=storage, workers=0) as hooks:
        event = hooks.get_event(event_id, tenant=tenant)
    deliveries = storage.find_deliveries(hd.DeliveryQuery(event_id=event.id, limit=100))
    if as_json:
        echo_json(_event_json(event, deliveries))
        return
    click.echo(f"{event.id}: {event.type}, tenant {event.tenant}, created {when(event.created_at)}")
    click.echo(json.dumps(event.data, indent=2, ensure_ascii=False))
    if not deliveries:
        click.echo("No deliveries: it matched no enabled endpoint.")
        return
    click.echo(
        table(
            ["DELIVERY", "ENDPOINT", "STATUS", "ATTEMPTS", "LAST ERROR"],
            [
                [d.id, d.endpoint_id, d.status.value, str(d.attempt_count), d.last_error or "-"]
                for d in deliveries
            ],
        )
    )
