"""The ``hookdispatch`` command: endpoints, sending, history, replay, a worker, a receiver.

Installed as a console script; it needs click (``pip install 'hookdispatch[cli]'``).
The commands live in small modules, one job each:

* ``_app``: the root command group, ``--db``, ``--version``, errors as one clean line.
* ``_context``: the storage that ``--db`` names, and the error type (exit status 2).
* ``_options``: parameter types (``--since 1h``, JSON) and the delivery options.
* ``_output``: tables, JSON, times and durations, the progress bar.
* ``_batch``: send or replay a batch on a thread pool, wait for it, summarise it.
* one module per command group: ``_endpoints``, ``_send``, ``_history``
  (``deliveries``, ``attempts``), ``_replay``, ``_worker``, ``_listen``, ``_verify``,
  ``_prune``.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    """Run the ``hookdispatch`` command (the console script's entry point)."""
    try:
        from ._app import cli  # noqa: PLC0415 - click is an optional dependency
    except ModuleNotFoundError as exc:
        if exc.name != "click":
            raise
        sys.exit("hookdispatch: the command needs click: pip install 'hookdispatch[cli]'")
    cli(prog_name="hookdispatch")
