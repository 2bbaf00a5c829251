"""Storage backends: where events, deliveries and attempts are kept.

Subclass :class:`Storage` to plug in your own; ``hookdispatch.testing`` holds the
conformance tests every backend must pass.
"""

from .._core import Claim
from ._base import Storage
from ._memory import MemoryStorage
from ._sqlite import SQLiteStorage

__all__ = ["Claim", "MemoryStorage", "SQLiteStorage", "Storage"]
