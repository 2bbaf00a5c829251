"""``hookdispatch endpoints``: add, update, list, delete, disable, enable, rotate-secret,
end-rotation."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import click

import hookdispatch as hd

from .._listing import Key
from ._context import CliError, open_storage, owned_endpoint
from ._options import parse_duration, scope_option, target_options, tenant_option
from ._output import echo_json, iso, plural, shorten, table, when
from ._paging import count_deliveries, cursor_option, endpoint_page, more_hint

__all__ = ["endpoints"]

_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")


def _event_names(events: str) -> list[str]:
    """``--events user.created, invoice.paid`` as a list of names."""
    return [name.strip() for name in events.split(",") if name.strip()]


def endpoint_json(endpoint: hd.Endpoint) -> dict[str, Any]:
    """An endpoint for ``--json``; the secret is never part of it."""
    return {
        "id": endpoint.id,
        "tenant": endpoint.tenant,
        "url": endpoint.url,
        "events": list(endpoint.events),
        "enabled": endpoint.enabled,
        "created_at": iso(endpoint.created_at),
        # When the previous secret stops signing (a rotation's overlap); null: none.
        "rotation_ends_at": iso(endpoint.previous_secret_expires_at),
        "description": endpoint.description,
        # The custom headers' names only: a value may be a credential.
        "headers": list(endpoint.headers),
        "metadata": dict(endpoint.metadata),
    }


_MAX_HEADER_FILE = 16 * 1024
"""The most a ``--header @FILE`` may hold: a few headers of up to 4 KiB each."""


def _read_header_file(ctx: click.Context, param: click.Parameter, path: str) -> str:
    """The text of ``--header @path`` (``@-``: stdin), at most :data:`_MAX_HEADER_FILE`.

    Errors name the file, never its content."""
    if not path:
        raise click.BadParameter(
            "@ needs a file: --header @path/to/headers.txt, or @- to read stdin",
            ctx=ctx,
            param=param,
        )
    name = "stdin" if path == "-" else click.format_filename(path)
    try:
        with click.open_file(path, "rb") as file:  # "-": stdin, left open
            data: bytes = file.read(_MAX_HEADER_FILE + 1)
    except FileNotFoundError:
        raise click.BadParameter(f"no such file: {name}", ctx=ctx, param=param) from None
    except IsADirectoryError:
        raise click.BadParameter(f"{name} is a directory", ctx=ctx, param=param) from None
    except PermissionError:
        message = f"cannot read {name}: permission denied"
        raise click.BadParameter(message, ctx=ctx, param=param) from None
    except OSError as exc:
        message = f"cannot read {name}: {exc.strerror or type(exc).__name__}"
        raise click.BadParameter(message, ctx=ctx, param=param) from None
    if len(data) > _MAX_HEADER_FILE:
        raise click.BadParameter(
            f"{name} is larger than {_MAX_HEADER_FILE // 1024} KiB: it should hold a few"
            " 'Name: value' lines",
            ctx=ctx,
            param=param,
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        message = f"{name} is not text: it should hold 'Name: value' lines"
        raise click.BadParameter(message, ctx=ctx, param=param) from None


def _one_header(
    ctx: click.Context, param: click.Parameter, text: str, where: str
) -> tuple[str, str]:
    """``Name: value`` as a pair; refused without quoting it (its value may be a
    credential)."""
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise click.BadParameter(f"{where} is not of the form 'Name: value'", ctx=ctx, param=param)
    return name.strip(), value.strip(" \t")


def _parse_headers(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str] | None:
    """``--header 'Name: value'`` and ``--header @FILE`` (repeatable) as a mapping; None
    when not given.

    ``@FILE`` holds one ``Name: value`` per line (blank lines skipped), as curl's ``-H
    @file``: a header name never starts with ``@``. A malformed one is refused without
    quoting it: its value may be a credential.
    """
    if not values:
        return None
    headers: dict[str, str] = {}
    for position, text in enumerate(values, start=1):
        if not text.startswith("@"):
            name, value = _one_header(ctx, param, text, f"header {position}")
            headers[name] = value
            continue
        path = text[1:]
        content = _read_header_file(ctx, param, path)
        source = "stdin" if path == "-" else click.format_filename(path)
        found = False
        for number, raw in enumerate(content.split("\n"), start=1):
            line = raw.removesuffix("\r")
            if not line.strip():
                continue
            name, value = _one_header(ctx, param, line, f"line {number} of {source}")
            headers[name] = value
            found = True
        if not found:
            raise click.BadParameter(
                f"{source} holds no header: write one 'Name: value' per line",
                ctx=ctx,
                param=param,
            )
    return headers


def _parse_metadata(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> dict[str, Any] | None:
    """``--metadata '{...}'``: a JSON object; None when not given."""
    if value is None:
        return None
    try:
        metadata = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", ctx=ctx, param=param) from None
    if not isinstance(metadata, dict):
        raise click.BadParameter('must be a JSON object, such as \'{"customer": "acct_42"}\'')
    return metadata


_header_option = click.option(
    "--header",
    "headers",
    multiple=True,
    metavar="'NAME: VALUE'|@FILE",
    callback=_parse_headers,
    help="A custom header sent with every request, such as 'X-Customer: acct_42';"
    " repeat for more. @FILE reads one 'Name: value' per line from a file (@- from"
    " stdin): for a credential, which then stays out of shell history and ps."
    " Values are never printed back.",
)
_scope_option = scope_option(
    "The endpoint's tenant: another tenant's endpoint is refused, as an unknown id is."
)
_description_option = click.option(
    "--description", metavar="TEXT", help="What the endpoint is for (up to 1024 characters)."
)
_metadata_option = click.option(
    "--metadata",
    metavar="JSON",
    callback=_parse_metadata,
    help="Your own data about the endpoint: a JSON object, up to 4 KiB.",
)


def _print_secret(endpoint: hd.Endpoint, *, as_json: bool, what: str) -> None:
    if as_json:
        echo_json({**endpoint_json(endpoint), "secret": endpoint.secret})
        return
    click.echo(f"{what} endpoint {endpoint.id}: {endpoint.url} ({', '.join(endpoint.events)})")
    click.echo("Signing secret, shown only now; give it to the receiver's owner:")
    click.echo(endpoint.secret)


@click.group()
def endpoints() -> None:
    """Manage the receivers that events are sent to."""


@endpoints.command()
@click.argument("url")
@click.option(
    "--events",
    default="*",
    show_default=True,
    help="Comma-separated event types to send it, such as user.created,invoice.paid; * is all.",
)
@click.option("--secret", help="The signing secret (default: a strong one, generated).")
@click.option("--id", "endpoint_id", metavar="ID", help="The endpoint id (default: generated).")
@tenant_option("The tenant (customer account) it belongs to; it gets that tenant's events only.")
@_description_option
@_header_option
@_metadata_option
@target_options
@_json_option
def add(
    *,
    url: str,
    events: str,
    secret: str | None,
    endpoint_id: str | None,
    tenant: str,
    description: str | None,
    headers: dict[str, str] | None,
    metadata: dict[str, Any] | None,
    targets: hd.TargetPolicy | None,
    as_json: bool,
) -> None:
    """Register a receiver URL. A generated secret is printed once.

    The URL is checked against the target policy now (https only, public addresses
    only, unless --allow-local or --allow-network); every attempt checks it again.
    """
    names = _event_names(events)
    storage = open_storage(create=True)
    with hd.Dispatcher(storage=storage, workers=0, targets=targets) as hooks:
        endpoint = hooks.add_endpoint(
            url,
            events=names,
            secret=secret,
            id=endpoint_id,
            tenant=tenant,
            description=description or "",
            headers=headers,
            metadata=metadata,
        )
    if secret is None:
        _print_secret(endpoint, as_json=as_json, what="Added")
    elif as_json:
        echo_json(endpoint_json(endpoint))
    else:
        click.echo(f"Added endpoint {endpoint.id}: {endpoint.url} ({', '.join(endpoint.events)})")


@endpoints.command()
@click.argument("endpoint_id", metavar="ID")
@click.option("--url", help="The new receiver URL (checked as `add` checks it).")
@click.option("--events", help="The new comma-separated event types, replacing the old ones.")
@_description_option
@_header_option
@click.option(
    "--clear-headers", is_flag=True, help="Drop every custom header (before any --header)."
)
@_metadata_option
@_scope_option
@target_options
@_json_option
def update(
    *,
    endpoint_id: str,
    tenant: str | None,
    url: str | None,
    events: str | None,
    description: str | None,
    headers: dict[str, str] | None,
    clear_headers: bool,
    metadata: dict[str, Any] | None,
    targets: hd.TargetPolicy | None,
    as_json: bool,
) -> None:
    """Change an endpoint's URL, events, description, headers or metadata: only the
    options given. --header replaces all its custom headers with the ones given.

    The tenant and the secret stay as they are (see rotate-secret).
    """
    names = None
    if events is not None:
        names = _event_names(events)
    if clear_headers and headers is None:
        headers = {}
    with hd.Dispatcher(storage=open_storage(), workers=0, targets=targets) as hooks:
        hooks.get_endpoint(endpoint_id, tenant=tenant)
        endpoint = hooks.update_endpoint(
            endpoint_id,
            url=url,
            events=names,
            description=description,
            headers=headers,
            metadata=metadata,
        )
    if as_json:
        echo_json(endpoint_json(endpoint))
    else:
        header_names = ", ".join(endpoint.headers) or "none"
        click.echo(
            f"Updated endpoint {endpoint.id}: {endpoint.url} ({', '.join(endpoint.events)});"
            f" custom headers: {header_names}"
        )


_LIST_LIMIT = 100
_PENDING_SHOWN = 10_000  # counted before a deletion, at most


def _rotation(endpoint: hd.Endpoint, now: datetime) -> str:
    """``rotating until …`` while a rotation's old secret still signs; else ``-``."""
    ends = endpoint.previous_secret_expires_at
    if ends is None or endpoint.previous_secret_live(now) is None:
        return "-"
    return f"rotating until {ends.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


@endpoints.command("list")
@scope_option("Only this tenant's endpoints (default: every tenant's).")
@click.option(
    "--limit",
    type=click.IntRange(min=1, max=hd.MAX_PAGE_SIZE),
    default=_LIST_LIMIT,
    show_default=True,
    metavar="N",
    help=f"Show at most N endpoints, oldest first (1 to {hd.MAX_PAGE_SIZE}).",
)
@cursor_option(
    "--after",
    "Show the next page: CURSOR is the one printed under the previous page (give the"
    " same --tenant).",
)
@_json_option
def list_endpoints(tenant: str | None, limit: int, cursor: Key | None, as_json: bool) -> None:
    """The endpoints, enabled or not, oldest first, a page at a time (secrets and
    header values are not shown).

    The table shows a description, when one has it, and a rotation while the old secret
    still signs. When more endpoints follow, a last line (on stderr with --json) gives
    the --after CURSOR that shows the next page.
    """
    query = hd.EndpointQuery(tenant=tenant, after=cursor, limit=limit)
    found = endpoint_page(open_storage(), query)
    hint = None
    if found.next_cursor is not None:
        hint = more_hint("more endpoints follow", "--after", found.next_cursor)
    if as_json:
        echo_json([endpoint_json(endpoint) for endpoint in found])
        if hint is not None:
            click.echo(hint, err=True)
        return
    if not found:
        if cursor is not None:
            click.echo("No more endpoints.")
        elif tenant is not None:
            click.echo(f"No endpoints of tenant {tenant}.")
        else:
            click.echo("No endpoints yet: hookdispatch endpoints add URL --events TYPE,...")
        return
    now = datetime.now(UTC)
    rotations = [_rotation(e, now) for e in found]
    # Columns that would be empty are left out: the tenant while every endpoint is the
    # default tenant's (or --tenant names it), descriptions and rotations when none has one.
    tenants = tenant is None and any(e.tenant != hd.DEFAULT_TENANT for e in found)
    descriptions = any(e.description for e in found)
    rotating = any(rotation != "-" for rotation in rotations)
    rows = [
        [
            e.id,
            *([e.tenant] if tenants else []),
            "yes" if e.enabled else "no",
            shorten(", ".join(e.events), 30),
            *([shorten(e.description, 30)] if descriptions else []),
            *([rotation] if rotating else []),
            when(e.created_at),
            e.url,
        ]
        for e, rotation in zip(found, rotations, strict=True)
    ]
    headers = ["ID", *(["TENANT"] if tenants else []), "ENABLED", "EVENTS"]
    headers += [*(["DESCRIPTION"] if descriptions else []), *(["ROTATION"] if rotating else [])]
    click.echo(table([*headers, "CREATED", "URL"], rows))
    if hint is not None:
        click.echo(hint)


def _stdin_is_terminal() -> bool:
    """Whether someone can answer a question on stdin."""
    return sys.stdin is not None and sys.stdin.isatty()


def _origin(url: str) -> str:
    """``scheme://host[:port]`` of an endpoint URL: its path and query may hold a token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _confirm_delete(storage: hd.Storage, endpoint: hd.Endpoint) -> bool:
    """Ask on the terminal whether to delete ``endpoint``, showing what it is (never its
    secrets, header values, or URL path) and how many deliveries it would cancel."""
    if not _stdin_is_terminal():
        raise CliError(
            "endpoints delete asks before deleting, and stdin is not a terminal: give --yes"
            f" to delete {endpoint.id} without asking"
        )
    pending = count_deliveries(
        storage,
        hd.DeliveryQuery(endpoint_id=endpoint.id, status=hd.DeliveryStatus.PENDING),
        cap=_PENDING_SHOWN,
    )
    what = [f"tenant {endpoint.tenant}", _origin(endpoint.url)]
    if endpoint.description:
        what.insert(0, f'"{shorten(endpoint.description, 60)}"')
    click.echo(f"Endpoint {endpoint.id}: {', '.join(what)}.", err=True)
    if pending:
        at_least = "at least " if pending >= _PENDING_SHOWN else ""
        cancels = f"cancels its {at_least}{plural(pending, 'pending delivery')} and erases"
    else:
        cancels = "erases"  # nothing pending to cancel
    click.echo(
        f"Deleting it {cancels} its secrets; its delivery history stays until pruned."
        " This cannot be undone.",
        err=True,
    )
    return click.confirm("Delete it?", default=False, err=True)


@endpoints.command()
@click.argument("endpoint_id", metavar="ID")
@_scope_option
@click.option(
    "-y",
    "--yes",
    is_flag=True,
    help="Delete without asking; needed when stdin is not a terminal (scripts).",
)
def delete(endpoint_id: str, tenant: str | None, yes: bool) -> None:
    """Delete an endpoint for good; its pending deliveries are cancelled.

    It stops receiving at once: deliveries waiting for an attempt or a retry become
    cancelled (an attempt in flight finishes, nothing is retried), and events sent
    later skip it. Its deliveries and their attempts stay listed (hookdispatch
    deliveries --endpoint ID) until pruned; its secrets are erased. It asks first,
    showing the endpoint and how many deliveries are pending; --yes does not ask. To
    stop for a while instead, disable it. Exit status 1 when the answer is no.

    \b
        hookdispatch endpoints delete ep_0190a3b4c5d6a1b2c3d4e5f6a7b8
        hookdispatch endpoints delete ep_0190a3b4c5d6a1b2c3d4e5f6a7b8 --tenant acct_42 --yes
    """
    storage = open_storage()
    endpoint = owned_endpoint(storage, endpoint_id, tenant)
    if not yes and not _confirm_delete(storage, endpoint):
        click.echo(f"Kept endpoint {endpoint.id}: nothing was deleted.", err=True)
        click.get_current_context().exit(1)
    with hd.Dispatcher(storage=storage, workers=0) as hooks:
        cancelled = hooks.delete_endpoint(endpoint.id, tenant=tenant)
    click.echo(
        f"Deleted endpoint {endpoint.id}: {plural(cancelled, 'pending delivery')} cancelled;"
        " its delivery history stays until pruned."
    )


@endpoints.command()
@click.argument("endpoint_id", metavar="ID")
@_scope_option
def disable(endpoint_id: str, tenant: str | None) -> None:
    """Stop delivering to an endpoint; its pending deliveries wait until it is enabled."""
    with hd.Dispatcher(storage=open_storage(), workers=0) as hooks:
        hooks.get_endpoint(endpoint_id, tenant=tenant)
        hooks.disable_endpoint(endpoint_id)
    click.echo(f"Disabled {endpoint_id}: events dispatched meanwhile are not sent to it.")


@endpoints.command()
@click.argument("endpoint_id", metavar="ID")
@_scope_option
def enable(endpoint_id: str, tenant: str | None) -> None:
    """Resume an endpoint; its waiting deliveries go out as scheduled."""
    with hd.Dispatcher(storage=open_storage(), workers=0) as hooks:
        hooks.get_endpoint(endpoint_id, tenant=tenant)
        hooks.enable_endpoint(endpoint_id)
    click.echo(f"Enabled {endpoint_id}.")


@endpoints.command("rotate-secret")
@click.argument("endpoint_id", metavar="ID")
@click.option(
    "--grace",
    default="24h",
    show_default=True,
    callback=parse_duration,
    metavar="DURATION",
    help="How long the old secret keeps signing beside the new one (30m, 24h, 7d);"
    " 0 stops it at once (for a leaked secret).",
)
@_scope_option
@_json_option
def rotate_secret(endpoint_id: str, grace: float, tenant: str | None, as_json: bool) -> None:
    """Give an endpoint a new secret, printed once; the old one keeps signing for --grace.

    During the overlap every request carries a Standard Webhooks signature for each
    secret, and X-Webhook-Signature stays the old secret's until the overlap ends, so
    the receiver can switch at its own pace: have it accept both secrets, then drop
    the old one once the overlap is over. End the overlap early with end-rotation.
    """
    with hd.Dispatcher(storage=open_storage(), workers=0) as hooks:
        hooks.get_endpoint(endpoint_id, tenant=tenant)
        endpoint = hooks.rotate_secret(endpoint_id, grace=grace)
    _print_secret(endpoint, as_json=as_json, what="Rotated the secret of")
    if as_json:
        return
    if endpoint.previous_secret_expires_at is None:
        click.echo("The old secret no longer signs: update the receiver now.")
    else:
        click.echo(
            f"The old secret still signs until {when(endpoint.previous_secret_expires_at)}"
            " (X-Webhook-Signature stays the old one's until then): have the receiver accept"
            " both, then drop the old one. End the overlap early with"
            f" `hookdispatch endpoints end-rotation {endpoint.id}`."
        )


@endpoints.command("end-rotation")
@click.argument("endpoint_id", metavar="ID")
@_scope_option
def end_rotation(endpoint_id: str, tenant: str | None) -> None:
    """Stop signing with an endpoint's old secret now: only the new one signs from now on."""
    with hd.Dispatcher(storage=open_storage(), workers=0) as hooks:
        hooks.get_endpoint(endpoint_id, tenant=tenant)
        hooks.end_rotation(endpoint_id)
    click.echo(f"Ended the rotation of {endpoint_id}: only its current secret signs now.")
