"""``hookdispatch deliveries`` and ``hookdispatch attempts``: what was sent, and how it went."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

import hookdispatch as hd

from ._context import open_storage
from ._options import parse_since
from ._output import duration, echo_json, iso, shorten, table, when

__all__ = ["attempts", "deliveries"]

_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")


def select_deliveries(
    storage: hd.Storage,
    *,
    status: str | None = None,
    endpoint_id: str | None = None,
    event_type: str | None = None,
    since: datetime | None = None,
) -> list[hd.Delivery]:
    """Deliveries matching every filter, oldest first. ``since`` is compared with the
    delivery's last change (created, attempted). An unknown endpoint id is an error."""
    if endpoint_id is not None:
        storage.get_endpoint(endpoint_id)
    found = storage.list_deliveries(
        endpoint_id=endpoint_id, status=None if status is None else hd.DeliveryStatus(status)
    )
    if since is not None:
        found = [d for d in found if d.updated_at >= since]
    if event_type is not None:
        types: dict[str, str] = {}
        for delivery in found:
            if delivery.event_id not in types:
                types[delivery.event_id] = storage.get_event(delivery.event_id).type
        found = [d for d in found if types[d.event_id] == event_type]
    return found


def _delivery_json(
    delivery: hd.Delivery, event: hd.Event, last: hd.Attempt | None
) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "event_id": delivery.event_id,
        "event": event.type,
        "endpoint_id": delivery.endpoint_id,
        "status": delivery.status.value,
        "attempts": delivery.attempt_count,
        "last_error": delivery.last_error,
        "last_status_code": None if last is None else last.status_code,
        "last_duration": None if last is None else last.duration,
        "next_attempt_at": iso(delivery.next_attempt_at),
        "created_at": iso(delivery.created_at),
        "updated_at": iso(delivery.updated_at),
    }


@click.command()
@click.option("--status", type=click.Choice([status.value for status in hd.DeliveryStatus]))
@click.option("--endpoint", "endpoint_id", metavar="ID", help="Only deliveries to this endpoint.")
@click.option("--event", "event_type", metavar="NAME", help="Only events of this type.")
@click.option(
    "--since",
    callback=parse_since,
    metavar="DURATION|TIME",
    help="Only deliveries changed since: 30m, 1h, 2d, or a time.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Show the N most recent (0: all).",
)
@_json_option
def deliveries(
    *,
    status: str | None,
    endpoint_id: str | None,
    event_type: str | None,
    since: datetime | None,
    limit: int,
    as_json: bool,
) -> None:
    """List deliveries, oldest first: status, attempts, last response and error."""
    storage = open_storage()
    found = select_deliveries(
        storage, status=status, endpoint_id=endpoint_id, event_type=event_type, since=since
    )
    shown = found[-limit:] if limit else found
    records = []
    for delivery in shown:
        tries = storage.list_attempts(delivery.id)
        event = storage.get_event(delivery.event_id)
        records.append(_delivery_json(delivery, event, tries[-1] if tries else None))
    if as_json:
        echo_json(records)
        return
    if not records:
        click.echo("No deliveries match.")
        return
    rows = [
        [
            r["id"],
            shorten(r["event"], 28),
            r["endpoint_id"],
            r["status"],
            str(r["attempts"]),
            str(r["last_status_code"] or "-"),
            duration(r["last_duration"]),
            when(delivery.updated_at),
            shorten(r["last_error"], 40),
        ]
        for r, delivery in zip(records, shown, strict=True)
    ]
    headers = ["DELIVERY", "EVENT", "ENDPOINT", "STATUS", "ATTEMPTS", "HTTP", "TIME"]
    click.echo(table([*headers, "UPDATED", "LAST ERROR"], rows))
    if len(shown) < len(found):
        click.echo(f"(the {len(shown)} most recent of {len(found)}; --limit 0 shows all)")


@click.command()
@click.argument("delivery_id")
@_json_option
def attempts(delivery_id: str, as_json: bool) -> None:
    """Every attempt of one delivery: when, how long, the answer, the error."""
    storage = open_storage()
    delivery = storage.get_delivery(delivery_id)
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
        f" {delivery.status.value} after {delivery.attempt_count} attempts"
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
