"""The library's log on stderr while a command runs: one line per attempt."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

__all__ = ["attempt_log"]


@contextlib.contextmanager
def attempt_log(level: int) -> Iterator[None]:
    """Show the ``hookdispatch`` logger on stderr from ``level`` up, for this block.

    The library logs each attempt once: a success at DEBUG, a failure at INFO (a retry
    is due) or WARNING (given up), always with ids and never a URL or a secret. Errors
    of the machinery itself (a storage that fails) are logged at ERROR.
    """
    logger = logging.getLogger("hookdispatch")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s"))
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
