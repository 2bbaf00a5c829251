"""``hookdispatch endpoints``: add, update, list, disable, enable, rotate-secret, end-rotation."""

from __future__ import annotations

import json
from typing import Any

import click

import hookdispatch as hd

from ._context import open_storage
from ._options import parse_duration, target_options, tenant_option
from ._output import echo_json, iso, shorten, table, when

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


def _parse_headers(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str] | None:
    """``--header 'Name: value'`` (repeatable) as a mapping; None when not given.

    A malformed one is refused without quoting it: its value may be a credential.
    """
    if not values:
        return None
    headers: dict[str, str] = {}
    for position, text in enumerate(values, start=1):
        name, colon, value = text.partition(":")
        if not colon or not name.strip():
            raise click.BadParameter(
                f"header {position} is not of the form 'Name: value'", ctx=ctx, param=param
            )
        headers[name.strip()] = value.strip(" \t")
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
    metavar="'NAME: VALUE'",
    callback=_parse_headers,
    help="A custom header sent with every request, such as 'Authorization: Bearer …';"
    " repeat for more. Values are never printed back.",
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
@target_options
@_json_option
def update(
    *,
    endpoint_id: str,
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


@endpoints.command("list")
@click.option("--tenant", metavar="TENANT", help="Only this tenant's endpoints.")
@_json_option
def list_endpoints(tenant: str | None, as_json: bool) -> None:
    """Every endpoint, enabled or not (secrets are not shown)."""
    found = open_storage().list_endpoints()
    if tenant is not None:
        found = [endpoint for endpoint in found if endpoint.tenant == tenant]
    if as_json:
        echo_json([endpoint_json(endpoint) for endpoint in found])
    elif not found:
        click.echo("No endpoints yet: hookdispatch endpoints add URL --events TYPE,...")
    else:
        # The tenant column only once there is more than the default tenant.
        tenants = any(e.tenant != hd.DEFAULT_TENANT for e in found)
        rows = [
            [
                e.id,
                *([e.tenant] if tenants else []),
                "yes" if e.enabled else "no",
                shorten(", ".join(e.events), 40),
                when(e.created_at),
                e.url,
            ]
            for e in found
        ]
        headers = ["ID", *(["TENANT"] if tenants else []), "ENABLED", "EVENTS", "CREATED", "URL"]
        click.echo(table(headers, rows))


@endpoints.command()
@click.argument("endpoint_id", metavar="ID")
def disable(endpoint_id: str) -> None:
    """Stop delivering to an endpoint; its pending deliveries wait until it is enabled."""
    with hd.Dispatcher(storage=open_storage(), workers=0) as hooks:
        hooks.disable_endpoint(endpoint_id)
    click.echo(f"Disabled {endpoint_id}: events dispatched meanwhile are not sent to it.")


@endpoints.command()
@click.argument("endpoint_id", metavar="ID")
def enable(endpoint_id: str) -> None:
    """Resume an endpoint; its waiting deliveries go out as scheduled."""
    with hd.Dispatcher(storage=open_storage(), workers=0) as hooks:
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
@_json_option
def rotate_secret(endpoint_id: str, grace: float, as_json: bool) -> None:
    """Give an endpoint a new secret, printed once; the old one keeps signing for --grace.

    During the overlap every request carries a Standard Webhooks signature for each
    secret, and X-Webhook-Signature stays the old secret's until the overlap ends, so
    the receiver can switch at its own pace: have it accept both secrets, then drop
    the old one once the overlap is over. End the overlap early with end-rotation.
    """
    with hd.Dispatcher(storage=open_storage(), workers=0) as hooks:
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
def end_rotation(endpoint_id: str) -> None:
    """Stop signing with an endpoint's old secret now: only the new one signs from now on."""
    with hd.Dispatcher(storage=open_storage(), workers=0) as hooks:
        hooks.end_rotation(endpoint_id)
    click.echo(f"Ended the rotation of {endpoint_id}: only its current secret signs now.")
