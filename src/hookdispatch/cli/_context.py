"""What every command shares: the storage named by ``--db``, and the error type."""

from __future__ import annotations

from pathlib import Path

import click

import hookdispatch as hd

__all__ = ["DEFAULT_DB", "CliError", "Settings", "open_storage"]

DEFAULT_DB = "hookdispatch.db"
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class CliError(click.ClickException):
    """A failure the user can fix: printed as ``Error: <one line>``, exit status 2."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class Settings:
    """The root command's options, shared with every subcommand through the context."""

    def __init__(self, db: str) -> None:
        self.db = db


def open_storage(*, create: bool = False) -> hd.Storage:
    """The storage ``--db`` names, closed when the command ends.

    An SQLite file must exist unless ``create`` (only ``endpoints add`` creates one):
    a typo in ``--db`` should not quietly start an empty database.
    """
    ctx = click.get_current_context()
    settings = ctx.find_object(Settings)
    db = DEFAULT_DB if settings is None else settings.db
    storage: hd.Storage
    if db.startswith(_POSTGRES_SCHEMES):
        try:
            storage = hd.PostgresStorage(db)
        except ImportError as exc:
            raise CliError(str(exc)) from None
    else:
        path = Path(db)
        if not create and not path.exists():
            raise CliError(
                f"no database at {db}: add an endpoint first (hookdispatch endpoints add),"
                " or point --db or HOOKDISPATCH_DB at your application's database"
            )
        storage = hd.SQLiteStorage(path)
    ctx.find_root().call_on_close(storage.close)
    return storage
