"""Test helpers for hookdispatch users, and the storage conformance suite.

A storage backend passes the suite when a subclass of :class:`StorageConformance`
that makes it passes::

    from hookdispatch.testing import StorageConformance

    class TestMyStorage(StorageConformance):
        def make_storage(self):
            return MyStorage()

Importing this package needs neither pytest nor hypothesis: the suite is plain
methods, and :class:`StorageStateMachine` (which needs hypothesis) is loaded only
when it is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._conformance import StorageConformance
from ._spec import FactorySpec

if TYPE_CHECKING:
    from ._model import StorageStateMachine

__all__ = ["FactorySpec", "StorageConformance", "StorageStateMachine"]


def __getattr__(name: str) -> Any:
    if name == "StorageStateMachine":
        from ._model import StorageStateMachine  # noqa: PLC0415 - needs hypothesis

        return StorageStateMachine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
