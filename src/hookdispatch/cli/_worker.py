"""``hookdispatch worker``: deliver what the application stores, until told to stop."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import click

from ._context import open_storage
from ._logs import attempt_log
from ._options import DeliveryOptions, delivery_options

__all__ = ["worker"]

log = logging.getLogger("hookdispatch.cli")
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT or SIGTERM sets ``stop``; a second one is handled as usual (it interrupts)."""
    saved = {signum: signal.getsignal(signum) for signum in _STOP_SIGNALS}

    def handle(signum: int, frame: FrameType | None) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()
        for other, previous in saved.items():
            signal.signal(other, previous)

    for signum in _STOP_SIGNALS:
        signal.signal(signum, handle)
    try:
        yield
    finally:
        for signum, previous in saved.items():
            signal.signal(signum, previous)


@click.command()
@delivery_options
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="How often to look for work that other processes stored.",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=20.0,
    show_default=True,
    metavar="SECONDS",
    help="On SIGINT or SIGTERM: how long to go on delivering what is due before stopping.",
)
@click.option("-q", "--quiet", is_flag=True, help="Log failed attempts only.")
def worker(delivery: DeliveryOptions, poll_interval: float, grace: float, quiet: bool) -> None:
    """Deliver the pending deliveries in --db until SIGINT or SIGTERM.

    Your application dispatches (with Dispatcher or AsyncDispatcher, or through the
    outbox) and this process delivers: retries when they come due, and work that
    other processes left behind once its lease ran out. Any number of workers can share
    one database. Every attempt is logged on stderr, one line each: ids, attempt
    number and outcome, never a URL or a secret.

    On SIGINT or SIGTERM it stops claiming new work after delivering what is due (at
    most --grace seconds); attempts in flight always finish. Retries scheduled for
    later stay in the database for the next start. A second signal stops at once.
    """
    stop = threading.Event()
    storage = open_storage()
    with attempt_log(logging.INFO if quiet else logging.DEBUG), stop_on_signals(stop):
        hooks = delivery.dispatcher(storage, poll_interval=poll_interval)
        log.info("worker started on %s: %d threads", storage, delivery.workers)
        try:
            while not stop.wait(0.5):
                pass
        finally:
            log.info("finishing what is due (up to %.0f s) and the attempts in flight", grace)
            hooks.close(timeout=grace)
        log.info("worker stopped")
