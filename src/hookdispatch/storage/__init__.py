"""Storage backends: where events, deliveries and attempts are kept.

Subclass :class:`Storage` to plug in your own; ``hookdispatch.testing`` holds the
conformance tests every backend must pass. :class:`PostgresStorage` is loaded on
first use, so psycopg is needed only by those who use it; so is
:class:`EncryptedStorage` (secrets encrypted at rest), with cryptography.
"""

from typing import TYPE_CHECKING, Any

from .._core import Claim
from ..exceptions import MissingDependencyError
from ._base import Storage
from ._memory import MemoryStorage
from ._sqlite import SQLiteStorage

if TYPE_CHECKING:
    from ._encrypted import EncryptedStorage
    from ._postgres import PostgresStorage

__all__ = [
    "Claim",
    "EncryptedStorage",
    "MemoryStorage",
    "PostgresStorage",
    "SQLiteStorage",
    "Storage",
]

_POSTGRES_PACKAGES = ("psycopg", "psycopg_pool", "psycopg_binary")


def __getattr__(name: str) -> Any:
    if name == "EncryptedStorage":
        return _encrypted_storage()
    if name != "PostgresStorage":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        from ._postgres import PostgresStorage  # noqa: PLC0415 - optional dependency
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in _POSTGRES_PACKAGES:
            raise
        raise MissingDependencyError(
            f"PostgresStorage needs psycopg 3 and psycopg-pool ({exc.name} is not installed):"
            " pip install 'hookdispatch[postgres]'"
        ) from exc
    globals()["PostgresStorage"] = PostgresStorage
    return PostgresStorage


def _encrypted_storage() -> Any:
    try:
        from ._encrypted import EncryptedStorage  # noqa: PLC0415 - optional dependency
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "cryptography":
            raise
        raise MissingDependencyError(
            "EncryptedStorage needs the cryptography package (not installed):"
            " pip install 'hookdispatch[encryption]'"
        ) from exc
    globals()["EncryptedStorage"] = EncryptedStorage
    return EncryptedStorage
