"""``hookdispatch reencrypt``: encrypt every endpoint's secrets with the first key of
``HOOKDISPATCH_SECRET_KEYS`` (key rotation, or turning encryption on)."""

from __future__ import annotations

import click

import hookdispatch as hd

from ._context import SECRET_KEYS_ENV, CliError, open_storage, secret_keys
from ._output import plural

__all__ = ["reencrypt"]


@click.command()
def reencrypt() -> None:
    """Encrypt every endpoint's secrets with the first key of HOOKDISPATCH_SECRET_KEYS.

    Secrets stored in plain text (before encryption was turned on) are encrypted,
    and secrets encrypted with one of the other keys are re-encrypted with the first;
    those already encrypted with it are left alone. Deliveries may go on meanwhile,
    but do not rotate secrets or edit endpoints while it runs. A key rotation:

    \b
        1. Every process: HOOKDISPATCH_SECRET_KEYS=NEW_KEY,OLD_KEY (and keys= in code).
        2. hookdispatch reencrypt
        3. Every process: HOOKDISPATCH_SECRET_KEYS=NEW_KEY; then retire OLD_KEY.

    It prints how many endpoints changed; running it again changes none.
    """
    if secret_keys() is None:
        raise CliError(
            f"{SECRET_KEYS_ENV} is not set: set it to the comma-separated Fernet keys of"
            " the database, the one to encrypt with first (NEW_KEY,OLD_KEY during a key"
            " rotation), then run reencrypt again"
        )
    storage = open_storage()
    assert isinstance(storage, hd.EncryptedStorage)  # the keys are set: open_storage wraps
    changed = storage.reencrypt()
    click.echo(
        f"Re-encrypted the secrets of {plural(changed, 'endpoint')} with the first key of"
        f" {SECRET_KEYS_ENV}; every endpoint's secrets are now encrypted with it."
    )
