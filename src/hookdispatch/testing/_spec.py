"""FactorySpec: how another process opens the same store."""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from typing import Any

from attrs import field, frozen

from ..exceptions import InvalidInputError
from ..storage import Storage

__all__ = ["FactorySpec"]


@frozen
class FactorySpec:
    """A recipe, sendable to another process, that opens an existing store.

    ``target`` names an importable callable as ``"package.module:name"``; it is called
    with ``args`` and ``kwargs``, which must be JSON values (strings, numbers, lists,
    dicts). For example ``FactorySpec("hookdispatch:SQLiteStorage", (str(path),))``.
    """

    target: str
    args: tuple[Any, ...] = field(default=(), converter=tuple)
    kwargs: Mapping[str, Any] = field(factory=dict, converter=dict)

    def open(self) -> Storage:
        """Import the target and call it; it must return a :class:`Storage`."""
        module_name, _, name = self.target.partition(":")
        if not module_name or not name:
            raise InvalidInputError(
                f"target must look like 'package.module:name', got {self.target!r}"
            )
        factory = getattr(importlib.import_module(module_name), name)
        storage = factory(*self.args, **self.kwargs)
        if not isinstance(storage, Storage):
            raise InvalidInputError(
                f"{self.target} returned {type(storage).__name__}, not a Storage"
            )
        return storage

    def to_json(self) -> str:
        return json.dumps({"target": self.target, "args": self.args, "kwargs": self.kwargs})

    @classmethod
    def from_json(cls, text: str) -> FactorySpec:
        document = json.loads(text)
        return cls(document["target"], document["args"], document["kwargs"])
