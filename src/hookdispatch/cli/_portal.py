"""``hookdispatch portal``: the webhooks portal, served locally in operator mode."""

from __future__ import annotations

import secrets
from typing import Any

import click

import hookdispatch as hd

from ._context import CliError, open_storage
from ._options import target_options

__all__ = ["portal", "serve"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")
LINK_LIFETIME = 900


def serve(app: Any, *, host: str, port: int) -> None:
    """Serve ``app`` with uvicorn until interrupted (replaced in tests)."""
    import uvicorn  # noqa: PLC0415 - an optional extra

    uvicorn.run(app, host=host, port=port, log_level="warning")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option("--port", default=8700, show_default=True, type=click.IntRange(1, 65535))
@target_options
def portal(*, host: str, port: int, targets: hd.TargetPolicy | None) -> None:
    """Serve the webhooks portal for the database, in operator mode (every tenant).

    Prints a one-time sign-in link, valid 15 minutes; nobody gets in without it. For
    your own machine: customers get the portal mounted in your application instead
    (docs/portal.md). Needs the portal extra: pip install 'hookdispatch[portal]'.

    \b
        hookdispatch --db webhooks.db portal
        hookdispatch --db postgresql://localhost/app portal --port 9000
    """
    try:
        from ..portal import Portal  # noqa: PLC0415 - an optional extra
    except ImportError as exc:
        raise CliError(str(exc)) from None
    storage = open_storage()
    hooks = hd.Dispatcher(storage=storage, workers=2, targets=targets)
    try:
        app = Portal(
            hooks, secret_key=secrets.token_urlsafe(32), title="hookdispatch · operator portal"
        )
        shown_host = f"[{host}]" if ":" in host else host
        base = f"http://{shown_host}:{port}"
        link = app.operator_link(expires_in=LINK_LIFETIME, base_url=base)
        if host not in _LOOPBACK:
            click.echo(
                f"Warning: listening on {host}, not loopback: anyone with the link below"
                " sees every tenant.",
                err=True,
            )
        click.echo(f"Webhooks portal on {base}/ (operator mode: every tenant). Ctrl-C stops it.")
        click.echo(f"Sign in within {LINK_LIFETIME // 60} minutes with this one-time link:")
        click.echo(f"  {link}")
        serve(app, host=host, port=port)
    finally:
        hooks.close()
