"""What every command shares: the storage named by ``--db``, and the error type."""

from __future__ import annotations

import os
from pathlib import Path

import click

import hookdispatch as hd

__all__ = [
    "DEFAULT_DB",
    "SECRET_KEYS_ENV",
    "CliError",
    "Settings",
    "cli_root",
    "for_cli",
    "open_storage",
    "owned_delivery",
    "owned_endpoint",
    "secret_keys",
]

DEFAULT_DB = "hookdispatch.db"
SECRET_KEYS_ENV = "HOOKDISPATCH_SECRET_KEYS"  # noqa: S105 - a variable name, not a key
"""Comma-separated Fernet keys, the one that encrypts first: secrets encrypted at rest."""
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class CliError(click.ClickException):
    """A failure the user can fix: printed as ``Error: <one line>``, exit status 2.

    The message is said in the command line's terms (:func:`for_cli`), whole.
    """

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(for_cli(" ".join(message.split())))


# The library's advice names its Python API; on the command line the same switch is a
# flag or a variable. Longest first: a shorter phrase may be part of a longer one.
_PHRASES = (
    (
        "pass targets=TargetPolicy.local(), or allow_http=True",
        "pass --allow-local (or set HOOKDISPATCH_ALLOW_LOCAL=1)",
    ),
    (
        "pass targets=TargetPolicy.local(); for internal networks, allowed_networks=[...]",
        "pass --allow-local (or set HOOKDISPATCH_ALLOW_LOCAL=1); for an internal network,"
        " --allow-network CIDR",
    ),
    (
        "open the storage with EncryptedStorage(storage, keys=[...]) (for the hookdispatch"
        " command: set HOOKDISPATCH_SECRET_KEYS) to send to it",
        "set HOOKDISPATCH_SECRET_KEYS to the database's keys to send to it",
    ),
    (
        "(end_rotation(), or `hookdispatch endpoints end-rotation`)",
        "(`hookdispatch endpoints end-rotation ID`)",
    ),
    ("allowed_networks: ", "--allow-network: "),
    ("targets=TargetPolicy.local()", "--allow-local"),
)


def for_cli(message: str) -> str:
    """``message`` (from the library) with its Python advice said as CLI flags."""
    for python, flags in _PHRASES:
        message = message.replace(python, flags)
    return message


def cli_root() -> str:
    """``hookdispatch``, with ``--db`` when the database is not the default one: how to
    start another command on the same database."""
    settings = click.get_current_context().find_object(Settings)
    if settings is None or settings.db == DEFAULT_DB or "HOOKDISPATCH_DB" in os.environ:
        return "hookdispatch"
    if settings.db.startswith(_POSTGRES_SCHEMES):
        return "hookdispatch --db $HOOKDISPATCH_DB"  # never echo a DSN's password
    return f"hookdispatch --db {settings.db}"


class Settings:
    """The root command's options, shared with every subcommand through the context."""

    def __init__(self, db: str) -> None:
        self.db = db


def secret_keys() -> list[str] | None:
    """The keys of ``HOOKDISPATCH_SECRET_KEYS``, or ``None`` when it is not set.

    Set but naming no key (empty, commas only) is an error rather than ``None``: an
    empty value must not quietly store new secrets in plain text.
    """
    value = os.environ.get(SECRET_KEYS_ENV)
    if value is None:
        return None
    keys = [key.strip() for key in value.split(",") if key.strip()]
    if not keys:
        raise CliError(
            f"{SECRET_KEYS_ENV} is set but names no key: give comma-separated Fernet keys,"
            " the one that encrypts first, or unset it"
        )
    return keys


def open_storage(*, create: bool = False) -> hd.Storage:
    """The storage ``--db`` names, closed when the command ends.

    An SQLite file must exist unless ``create`` (only ``endpoints add`` creates one):
    a typo in ``--db`` should not quietly start an empty database. With
    ``HOOKDISPATCH_SECRET_KEYS`` set, it is an :class:`~hookdispatch.EncryptedStorage`
    over that storage: secrets are encrypted at rest with those keys.
    """
    keys = secret_keys()  # checked first: an error here opens nothing
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
    if keys is not None:
        try:
            storage = hd.EncryptedStorage(storage, keys=keys)
        except ImportError as exc:
            raise CliError(f"{SECRET_KEYS_ENV} is set, but {exc}") from None
        except hd.InvalidInputError as exc:
            raise CliError(f"{SECRET_KEYS_ENV}: {exc}") from None
    return storage


def owned_endpoint(storage: hd.Storage, endpoint_id: str, tenant: str | None) -> hd.Endpoint:
    """The endpoint, if it is ``tenant``'s (any tenant's for ``None``): another tenant's
    id raises the same UnknownEndpointError as an unknown one (``--tenant``)."""
    with hd.Dispatcher(storage=storage, workers=0) as hooks:
        return hooks.get_endpoint(endpoint_id, tenant=tenant)


def owned_delivery(storage: hd.Storage, delivery_id: str, tenant: str | None) -> hd.Delivery:
    """The delivery, if it is ``tenant``'s (as :func:`owned_endpoint`)."""
    with hd.Dispatcher(storage=storage, workers=0) as hooks:
        return hooks.get_delivery(delivery_id, tenant=tenant)
