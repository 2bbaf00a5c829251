"""The root ``hookdispatch`` command: ``--db``, ``--version``, and its subcommands."""

from __future__ import annotations

from typing import Any

import click

import hookdispatch as hd

from ._context import DEFAULT_DB, CliError, Settings
from ._endpoints import endpoints
from ._events import events
from ._history import attempts, deliveries
from ._listen import listen
from ._portal import portal
from ._prune import prune
from ._reencrypt import reencrypt
from ._replay import replay
from ._send import send
from ._verify import verify
from ._worker import worker

__all__ = ["cli"]


class _Group(click.Group):
    """Turns a hookdispatch error into ``Error: <message>`` and exit status 2.

    Messages never contain a secret (the library promises it), and there is no
    traceback: what the user can fix is the message.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except hd.HookDispatchError as exc:
            raise CliError(str(exc)) from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    envvar="HOOKDISPATCH_DB",
    default=DEFAULT_DB,
    show_default=True,
    metavar="PATH|DSN",
    help="An SQLite file, or a postgresql:// connection string [env: HOOKDISPATCH_DB].",
)
@click.version_option(hd.__version__, "-V", "--version", prog_name="hookdispatch")
@click.pass_context
def cli(ctx: click.Context, db: str) -> None:
    """Send signed webhooks, see what was delivered, and send again what failed.

    Every command works on the storage named by --db, the same database your
    application's Dispatcher uses. Exit status: 0 on success, 1 when a delivery (or a
    signature check) failed, 2 for a usage error or an error such as an unknown id.
    """
    ctx.obj = Settings(db)


for _command in (
    endpoints,
    send,
    events,
    deliveries,
    attempts,
    replay,
    worker,
    listen,
    verify,
    prune,
):
    cli.add_command(_command)
cli.add_command(reencrypt)
cli.add_command(portal)
