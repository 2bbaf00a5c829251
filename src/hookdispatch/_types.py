"""Type aliases and the small protocols that let callers inject time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeAlias

__all__ = ["JSON", "Clock", "Sleep", "utc_now"]

JSON: TypeAlias = Any
"""A value :func:`json.dumps` accepts: dict, list, str, int, float, bool or None."""

Clock: TypeAlias = Callable[[], datetime]
"""Returns the current time as an aware UTC datetime. Injected in tests."""

Sleep: TypeAlias = Callable[[float], None]
"""Blocks for the given number of seconds. Injected in tests."""


def utc_now() -> datetime:
    """The default :data:`Clock`: the wall-clock time in UTC."""
    return datetime.now(UTC)
