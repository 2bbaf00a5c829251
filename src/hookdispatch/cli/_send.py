"""``hookdispatch send``: one event, or a batch from a JSON Lines file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Any

import click

import hookdispatch as hd

from ..exceptions import InvalidInputError
from ._batch import (
    BatchOptions,
    batch_options,
    deliver_batch,
    print_summary,
    refuse_blocked_targets,
)
from ._context import CliError, open_storage
from ._options import parse_json, tenant_option
from ._output import plural

__all__ = ["send"]

Item = tuple[str, Any, str | None]

_CHUNK = 500  # events per dispatch_many call: one storage transaction each
_REQUIRED = ("event", "data")
_KEYS = {"event", "data", "id"}
_LISTED_ERRORS = 20


def check_event(event_type: Any, data: Any, event_id: Any, *, now: datetime) -> Item:
    """Validate an event as ``dispatch`` would; raises InvalidEventError (a ValueError)."""
    hd.Event.create(event_type, data, now=now, id=event_id)
    return event_type, data, event_id


def parse_line(line: str, *, now: datetime) -> Item:
    """One line of a batch file: ``{"event": ..., "data": ..., "id"?: ...}``."""
    try:
        document = json.loads(line)
    except ValueError as exc:
        raise InvalidInputError(f"not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise InvalidInputError('expected an object such as {"event": "user.created", "data": {}}')
    missing = [key for key in _REQUIRED if key not in document]
    unknown = sorted(document.keys() - _KEYS)
    if missing or unknown:
        problems = [f"no {key!r}" for key in missing] + [f"unknown key {k!r}" for k in unknown]
        raise InvalidInputError(
            ", ".join(problems) + ' (keys: "event", "data" and optionally "id")'
        )
    return check_event(document["event"], document["data"], document.get("id"), now=now)


def read_batch(stream: IO[str]) -> tuple[list[Item], list[tuple[int, str]]]:
    """Every valid event of ``stream``, and (line number, problem) for the others."""
    items: list[Item] = []
    errors: list[tuple[int, str]] = []
    now = datetime.now(UTC)
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            items.append(parse_line(line, now=now))
        except ValueError as exc:
            errors.append((number, str(exc)))
    return items, errors


@click.command()
@click.argument("event_type", metavar="[EVENT]", required=False)
@click.option(
    "--data", callback=parse_json, metavar="JSON", help="The event's data, as JSON (default: {})."
)
@click.option(
    "--id", "event_id", metavar="ID", help="The event id; an id already stored is not sent again."
)
@click.option(
    "--file",
    "batch_file",
    type=click.File("r", encoding="utf-8"),
    metavar="PATH",
    help='A batch: one {"event": ..., "data": ..., "id"?: ...} per line; - reads stdin.',
)
@click.option(
    "--on-error",
    type=click.Choice(["abort", "skip"]),
    default="abort",
    show_default=True,
    help="A malformed line in --file: abort before sending anything, or skip it.",
)
@tenant_option("The tenant whose endpoints get the events.")
@batch_options("Sending")
def send(
    *,
    event_type: str | None,
    data: Any,
    event_id: str | None,
    batch_file: IO[str] | None,
    on_error: str,
    tenant: str,
    options: BatchOptions,
) -> None:
    """Send an event, or a batch of them, and wait until they are delivered.

    Every enabled endpoint of the tenant (--tenant; the default tenant if not given)
    subscribed to an event's type gets it, signed and retried as
    a Dispatcher would (the options below). A batch file is read and checked completely
    before anything is sent: a malformed line is reported with its number and aborts
    the batch, or with --on-error skip is left out. An endpoint that would get an event
    but is refused by the target policy (added with --allow-local, sent without it)
    stops the command before anything is stored.

    On a terminal a progress line shows the deliveries delivered, retrying and failed,
    and the endpoints that are failing. Then a summary per endpoint, with what failed
    and what is still pending. Exit status: 1 when a delivery failed, 3 when none
    failed but some are still pending (--wait ran out), 130 when stopped by Ctrl-C
    (the summary is printed, nothing is lost: attempts in flight are recorded and
    pending deliveries stay stored for `hookdispatch worker`).

    \b
        hookdispatch send user.created --data '{"user_id": "user_78451"}'
        hookdispatch send --file events.jsonl
    """
    if (event_type is None) == (batch_file is None):
        raise click.UsageError("give an EVENT type (with --data) or --file, not both")
    errors: list[tuple[int, str]] = []
    if batch_file is None:
        assert event_type is not None
        now = datetime.now(UTC)
        items = [check_event(event_type, {} if data is None else data, event_id, now=now)]
    elif data is not None or event_id is not None:
        raise click.UsageError("--data and --id go with EVENT; in a file each line has its own")
    else:
        items, errors = read_batch(batch_file)
        for number, problem in errors[:_LISTED_ERRORS]:
            click.echo(f"{batch_file.name}, line {number}: {problem}", err=True)
        if len(errors) > _LISTED_ERRORS:
            click.echo(f"... and {len(errors) - _LISTED_ERRORS} more malformed lines", err=True)
        if errors and on_error == "abort":
            raise CliError(
                f"{plural(len(errors), 'malformed line')} in {batch_file.name}; nothing was sent"
                " (--on-error skip sends the valid lines)"
            )
    if not items:
        click.echo("No events to send.")
        return

    storage = open_storage()
    # Before anything is stored: an endpoint the target policy refuses (added with
    # --allow-local, sent without it) would only collect deliveries failed as blocked.
    refuse_blocked_targets(
        (
            endpoint
            for event_type in dict.fromkeys(item[0] for item in items)
            for endpoint in storage.endpoints_for(tenant, event_type)
        ),
        options.delivery.policy,
    )

    def start(hooks: hd.Dispatcher) -> Iterator[list[str]]:
        for first in range(0, len(items), _CHUNK):
            events = hooks.dispatch_many(items[first : first + _CHUNK], tenant=tenant)
            yield [event.id for event in events]

    outcome = deliver_batch(
        storage, start, by_event=True, total=len(items), noun="event", options=options
    )
    headline = f"{plural(len(outcome.keys), 'event')} in {outcome.elapsed:.1f} s"
    if errors:
        headline += f", {plural(len(errors), 'malformed line')} skipped"
    unstarted = None
    if outcome.unstarted:
        unstarted = (
            f"{plural(outcome.unstarted, 'event')} of {len(items)} were not sent: run the"
            " command again for them (events with an id already stored are not sent twice)."
        )
    status = print_summary(
        outcome.deliveries,
        outcome.endpoints,
        headline=headline,
        interrupted=outcome.interrupted,
        unstarted=unstarted,
    )
    unmatched = len(set(outcome.keys) - {delivery.event_id for delivery in outcome.deliveries})
    if unmatched:
        click.echo(f"{plural(unmatched, 'event')} matched no enabled endpoint: not sent.")
    if status:
        click.get_current_context().exit(status)
