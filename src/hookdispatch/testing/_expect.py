"""Checks that raise ``AssertionError`` with a useful message.

The suite does not use bare ``assert``: it must keep checking under ``python -O``,
and pytest rewrites assertions only in test modules, not in an installed library.
"""

from __future__ import annotations

import contextlib
import sys
import unittest
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import NoReturn

__all__ = ["check", "equal", "raises", "skip", "utc"]


def check(condition: object, message: str) -> None:
    """Fail with ``message`` unless ``condition`` is true."""
    if not condition:
        raise AssertionError(message)


def equal(actual: object, expected: object, what: str) -> None:
    """Fail unless ``actual == expected``, showing both."""
    if actual != expected:
        raise AssertionError(f"{what}:\n  expected {expected!r}\n  got      {actual!r}")


@contextlib.contextmanager
def raises(error: type[BaseException], what: str) -> Iterator[None]:
    """Fail unless the block raises ``error`` (or a subclass)."""
    try:
        yield
    except error:
        return
    except Exception as exc:
        raise AssertionError(
            f"{what}: expected {error.__name__}, got {type(exc).__name__}: {exc}"
        ) from exc
    raise AssertionError(f"{what}: expected {error.__name__}, nothing was raised")


def utc(moment: datetime | None, what: str) -> None:
    """Fail unless ``moment`` is ``None`` or a timezone-aware UTC datetime."""
    if moment is None:
        return
    check(
        moment.tzinfo is not None and moment.utcoffset() == timedelta(0),
        f"{what} must be a timezone-aware UTC datetime, got {moment!r}",
    )


def skip(reason: str) -> NoReturn:
    """Skip the running test, through pytest when it runs us, else ``unittest.SkipTest``.

    pytest is never imported here: it is used only if it is already loaded.
    """
    pytest = sys.modules.get("pytest")
    if pytest is not None:
        pytest.skip(reason)
    raise unittest.SkipTest(reason)
