"""How the commands print: aligned tables, JSON, times, durations, a progress bar."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import click

__all__ = ["Progress", "duration", "echo_json", "iso", "plural", "shorten", "table", "when"]


def echo_json(value: Any) -> None:
    """Print ``value`` as indented JSON, for scripts (``--json``)."""
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns aligned on the widest cell, two spaces apart."""
    lines = [list(headers), *(list(row) for row in rows)]
    widths = [max(len(line[column]) for line in lines) for column in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def when(moment: datetime | None) -> str:
    """A UTC time to the second, as ``2024-06-30 15:41:23Z``; ``-`` for none."""
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%SZ")


def iso(moment: datetime | None) -> str | None:
    """A UTC time for JSON output: RFC 3339 with ``Z``."""
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def duration(seconds: float | None) -> str:
    """``12.3 ms`` below a second, ``1.20 s`` above; ``-`` for none."""
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def plural(count: int, noun: str) -> str:
    """``1 event``, ``2 events``, ``3 deliveries``."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun[:-1]}ies" if noun.endswith("y") else f"{count} {noun}s"


def shorten(text: str | None, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    if not text:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


class Progress:
    """A progress bar on stderr with the count, rate and ETA; silent unless ``enabled``.

    Commands enable it only when stderr is a terminal and ``--quiet`` is not given, so
    scripts and pipes never see it.
    """

    def __init__(self, total: int, *, label: str, enabled: bool) -> None:
        self._done = 0
        self._started = time.monotonic()
        self._bar = (
            click.progressbar(
                length=total,
                label=label,
                show_eta=True,
                show_pos=True,
                item_show_func=lambda rate: rate,
                file=sys.stderr,
            )
            if enabled and total
            else None
        )

    @staticmethod
    def wanted(*, quiet: bool) -> bool:
        """Whether to show a bar: not with ``--quiet``, and only on a terminal."""
        return not quiet and sys.stderr.isatty()

    def advance_to(self, done: int) -> None:
        """Move the bar to ``done`` items finished."""
        if self._bar is not None and done > self._done:
            rate = done / max(time.monotonic() - self._started, 1e-6)
            self._bar.update(done - self._done, f"{rate:,.1f}/s")
        self._done = max(self._done, done)

    def __enter__(self) -> Self:
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)
