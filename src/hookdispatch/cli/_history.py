"""``hookdispatch deliveries`` and ``hookdispatch attempts``: what was sent, and how it went."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

import hookdispatch as hd
from hookdispatch._listing import ReplayLinks
from hookdispatch._operations import stored_replay_links

from .._listing import Key
from ._context import open_storage, owned_delivery, owned_endpoint
from ._options import parse_since, scope_option
from ._output import duration, echo_json, iso, plural, shorten, table, when
from ._paging import cursor_option, delivery_page, more_hint

__all__ = ["attempts", "check_endpoint_listed", "deliveries"]

_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
_DEFAULT_LIMIT = 50


def check_endpoint_listed(storage: hd.Storage, endpoint_id: str, tenant: str | None) -> None:
    """Raise UnknownEndpointError unless ``endpoint_id`` names an endpoint of ``tenant``
    (any tenant's for ``None``), or one deleted since whose deliveries are still kept.

    For an ``--endpoint`` filter that matched nothing: a typo is an error, not an
    empty listing."""
    if storage.find_deliveries(hd.DeliveryQuery(tenant=tenant, endpoint_id=endpoint_id, limit=1)):
        return
    owned_endpoint(storage, endpoint_id, tenant)


def _status_text(status: str, links: ReplayLinks) -> str:
    """The status, and its place among the replays: a replayed failure is not open."""
    if links.replayed_by is not None:
        return f"{status}, replayed"
    return f"{status} (replay)" if links.replay_of is not None else status


def _delivery_json(
    delivery: hd.Delivery, event_type: str, last: hd.Attempt | None, links: ReplayLinks
) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "tenant": delivery.tenant,
        "event_id": delivery.event_id,
        "event": event_type,
        "endpoint_id": delivery.endpoint_id,
        "status": delivery.status.value,
        "attempts": delivery.attempt_count,
        "last_error": delivery.last_error,
        "last_status_code": None if last is None else last.status_code,
        "last_duration": None if last is None else last.duration,
        "next_attempt_at": iso(delivery.next_attempt_at),
        "created_at": iso(delivery.created_at),
        "updated_at": iso(delivery.updated_at),
        "replay_of": links.replay_of,
        "replayed_by": links.replayed_by,
    }


def _event_type(storage: hd.Storage, delivery: hd.Delivery) -> str:
    """The delivery's event type, stored beside it; looked up only from a custom
    backend that does not keep it."""
    return delivery.event_type or storage.get_event(delivery.event_id).type


@click.command()
@scope_option("Only this tenant's deliveries (default: every tenant's).")
@click.option(
    "--status",
    type=click.Choice([status.value for status in hd.DeliveryStatus]),
    help="Only deliveries in this state (cancelled: their endpoint was deleted).",
)
@click.option("--endpoint", "endpoint_id", metavar="ID", help="Only deliveries to this endpoint.")
@click.option("--event", "event_type", metavar="NAME", help="Only events of this type.")
@click.option(
    "--since",
    callback=parse_since,
    metavar="DURATION|TIME",
    help="Only deliveries created since 30m, 1h, 2d, or a time (a delivery is created when"
    " its event is dispatched, or when it is replayed; its retries do not count).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1, max=hd.MAX_PAGE_SIZE),
    default=_DEFAULT_LIMIT,
    show_default=True,
    metavar="N",
    help=f"Show the N most recent matches (1 to {hd.MAX_PAGE_SIZE}).",
)
@cursor_option(
    "--before",
    "Show the page of older matches: CURSOR is the one printed under the previous page"
    " (give the same filters).",
)
@_json_option
def deliveries(
    *,
    tenant: str | None,
    status: str | None,
    endpoint_id: str | None,
    event_type: str | None,
    since: datetime | None,
    limit: int,
    cursor: Key | None,
    as_json: bool,
) -> None:
    """List the most recent deliveries, oldest first: status, attempts, last response
    and error.

    One page of --limit deliveries is read, never the whole table. When older ones
    match too, a last line (on stderr with --json) gives the --before CURSOR that shows
    the page before this one:

    \b
        hookdispatch deliveries --status failed --since 1h
        hookdispatch deliveries --status failed --since 1h --before MXwyMDI2LTEy...
    """
    storage = open_storage()
    query = hd.DeliveryQuery(
        tenant=tenant,
        endpoint_id=endpoint_id,
        event_type=event_type,
        status=None if status is None else hd.DeliveryStatus(status),
        since=since,
        after=cursor,
        newest_first=True,
        limit=limit,
    )
    page = delivery_page(storage, query)
    if not page and endpoint_id is not None:
        check_endpoint_listed(storage, endpoint_id, tenant)
    shown = page[::-1]  # the most recent, printed oldest first
    records, chain = [], []
    for delivery in shown:
        tries = storage.list_attempts(delivery.id)  # a handful: the retry policy bounds them
        last = tries[-1] if tries else None
        links = stored_replay_links(storage, delivery)
        chain.append(links)
        records.append(_delivery_json(delivery, _event_type(storage, delivery), last, links))
    hint = None
    if page.next_cursor is not None:
        hint = more_hint("older deliveries match too", "--before", page.next_cursor)
    if as_json:
        echo_json(records)
        if hint is not None:
            click.echo(hint, err=True)
        return
    if not records:
        click.echo("No deliveries match.")
        return
    # The tenant column only when it tells something: no --tenant, another tenant seen.
    tenants = tenant is None and any(d.tenant != hd.DEFAULT_TENANT for d in shown)
    rows = [
        [
            r["id"],
            *([shorten(r["tenant"], 20)] if tenants else []),
            shorten(r["event"], 28),
            r["endpoint_id"],
            _status_text(r["status"], links),
            str(r["attempts"]),
            str(r["last_status_code"] or "-"),
            duration(r["last_duration"]),
            when(delivery.updated_at),
            shorten(r["last_error"], 40),
        ]
        for r, delivery, links in zip(records, shown, chain, strict=True)
    ]
    headers = ["DELIVERY", *(["TENANT"] if tenants else []), "EVENT", "ENDPOINT", "STATUS"]
    headers += ["ATTEMPTS", "HTTP", "TIME", "UPDATED", "LAST ERROR"]
    click.echo(table(headers, rows))
    if hint is not None:
        click.echo(hint)


@click.command()
@click.argument("delivery_id")
@scope_option("The delivery's tenant: another tenant's delivery id reads as unknown.")
@_json_option
def attempts(delivery_id: str, tenant: str | None, as_json: bool) -> None:
    """Every attempt of one delivery: when, how long, the answer, the error."""
    storage = open_storage()
    delivery = owned_delivery(storage, delivery_id, tenant)
    tries = storage.list_attempts(delivery_id)
    if as_json:
        echo_json(
            [
                {
                    "number": a.number,
                    "started_at": iso(a.started_at),
                    "duration": a.duration,
                    "status_code": a.status_code,
                    "failure": None if a.failure is None else a.failure.value,
                    "error": a.error,
                    "response_body": a.response_body.decode("utf-8", errors="replace"),
                }
                for a in tries
            ]
        )
        return
    event = storage.get_event(delivery.event_id)
    click.echo(
        f"{delivery.id}: event {event.id} ({event.type}) to endpoint {delivery.endpoint_id},"
        f" {delivery.status.value} after {plural(delivery.attempt_count, 'attempt')}"
    )
    if delivery.next_attempt_at is not None:
        click.echo(f"next attempt due at {when(delivery.next_attempt_at)}")
    if not tries:
        click.echo("No attempts yet.")
        return
    rows = [
        [
            str(a.number),
            when(a.started_at),
            duration(a.duration),
            str(a.status_code or "-"),
            "ok" if a.failure is None else a.failure.value,
            shorten(a.error, 40),
            shorten(a.response_body.decode("utf-8", errors="replace"), 40),
        ]
        for a in tries
    ]
    click.echo(table(["#", "STARTED", "TIME", "HTTP", "RESULT", "ERROR", "RESPONSE"], rows))
