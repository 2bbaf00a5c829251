"""Wait for a batch of deliveries on a thread-pool Dispatcher, then summarise it.

``send`` and ``replay`` start deliveries on a background :class:`~hookdispatch.Dispatcher`
(``--workers`` threads), so one slow or dead receiver does not hold up the others and a
retry is a scheduled time, not a sleeping thread. They then wait until none of *their*
deliveries is pending: ``drain()`` returns once nothing is due *now*, so the wait loops
on it until the retries have come due and finished too (or ``--wait`` seconds passed).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import click
from attrs import frozen

import hookdispatch as hd

from ._context import CliError, cli_root, for_cli
from ._logs import attempt_log
from ._options import DeliveryOptions, delivery_options
from ._output import plural, shorten, table, when
from ._worker import stop_on_signals

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_PENDING",
    "BatchOptions",
    "Outcome",
    "StatusLine",
    "Tally",
    "batch_options",
    "deliver_batch",
    "print_summary",
    "refuse_blocked_targets",
    "status_line",
]

F = TypeVar("F", bound=Callable[..., Any])

_POLL = 0.1
_LISTED_FAILURES = 10


@frozen
class BatchOptions:
    """How ``send`` and ``replay`` deliver, wait and report."""

    delivery: DeliveryOptions
    label: str
    wait: float | None
    quiet: bool
    verbose: bool


_WAIT_OPTION = click.option(
    "--wait",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Stop waiting after this long; deliveries still pending stay stored for"
    " `hookdispatch worker`. Default: until every delivery succeeded or failed.",
)
_QUIET_OPTION = click.option(
    "-q", "--quiet", is_flag=True, help="No progress line (there is none off a terminal either)."
)
_VERBOSE_OPTION = click.option(
    "-v", "--verbose", is_flag=True, help="Log every attempt on stderr, one line each."
)


def batch_options(label: str) -> Callable[[F], F]:
    """The delivery options plus ``--wait``, ``-q`` and ``-v``, given to the command as
    one ``options`` argument, a :class:`BatchOptions`."""

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(
            *args: Any,
            delivery: DeliveryOptions,
            wait: float | None,
            quiet: bool,
            verbose: bool,
            **kwargs: Any,
        ) -> Any:
            options = BatchOptions(delivery, label, wait, quiet, verbose)
            return command(*args, options=options, **kwargs)

        decorated: Callable[..., Any] = delivery_options(wrapper)
        for option in (_VERBOSE_OPTION, _QUIET_OPTION, _WAIT_OPTION):
            decorated = option(decorated)
        return cast(F, decorated)

    return decorate


@frozen
class Outcome:
    """What a batch came to: its keys in order, their deliveries now, their endpoints;
    ``unstarted``: how many items were never started (stopped by a signal first)."""

    keys: list[str]
    deliveries: list[hd.Delivery]
    endpoints: list[hd.Endpoint]
    elapsed: float
    interrupted: bool = False
    unstarted: int = 0


class Tally:
    """What the batch's attempts came to so far, fed by the dispatcher's ``on_attempt``
    hook (on its worker threads): each delivery's latest decision, and per endpoint
    the deliveries waiting for a retry and the last error, so that the progress line
    moves while an endpoint is down and shows which one is."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, hd.AttemptReport] = {}

    def __call__(self, report: hd.AttemptReport) -> None:
        with self._lock:
            self._latest[report.delivery_id] = report

    def counts(self, keys: Collection[str], *, by_event: bool) -> tuple[Counter[str], list[str]]:
        """Deliveries of ``keys`` by latest decision (``delivered``, ``retrying``,
        ``failed``), and the endpoints with retries waiting, worst first, with their
        last error."""
        with self._lock:
            reports = list(self._latest.values())
        counts: Counter[str] = Counter()
        waiting: Counter[str] = Counter()
        errors: dict[str, str] = {}
        for report in reports:
            if (report.event_id if by_event else report.delivery_id) not in keys:
                continue
            decision = report.decision
            if decision is hd.AttemptDecision.DELIVERED:
                counts["delivered"] += 1
            elif decision is hd.AttemptDecision.GAVE_UP:
                counts["failed"] += 1
            elif decision is hd.AttemptDecision.RETRY:
                counts["retrying"] += 1
                waiting[report.endpoint_id] += 1
                errors[report.endpoint_id] = report.error or "failed"
        down = [f"{ep} {n} retrying ({errors[ep]})" for ep, n in waiting.most_common(2)]
        return counts, down


def status_line(
    label: str,
    *,
    done: int,
    total: int,
    noun: str,
    counts: Counter[str],
    down: Sequence[str],
    elapsed: float,
) -> str:
    """The progress line: items finished, deliveries by outcome, rate, time left, and
    the endpoints that are failing. No time left is guessed before anything finished,
    and none reads 0 s while work is pending."""
    parts = [
        f"{label}: {done}/{plural(total, noun)} finished",
        f"{counts['delivered']} delivered",
        f"{counts['retrying']} retrying",
        f"{counts['failed']} failed",
    ]
    remaining = total - done
    if done and elapsed > 0:
        rate = done / elapsed
        parts.append(f"{rate:,.1f}/s")
        if remaining:
            parts.append(f"about {_span(remaining / rate)} left")
    elif remaining:
        parts.append("time left unknown")
    line = ", ".join(parts)
    if down:
        line += "; " + "; ".join(down)
    return line


def _span(seconds: float) -> str:
    """``3 s``, ``2 min``, ``1 h 5 min``: rounded up, never ``0 s``."""
    whole = max(1, math.ceil(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{math.ceil(whole / 60)} min"
    return f"{whole // 3600} h {math.ceil(whole % 3600 / 60)} min"


class StatusLine:
    """One line on stderr, rewritten in place; silent unless ``enabled``."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._width = 0

    @staticmethod
    def wanted(*, quiet: bool) -> bool:
        """Whether to show it: not with ``--quiet``, and only on a terminal."""
        return not quiet and sys.stderr.isatty()

    def show(self, text: str) -> None:
        if not self.enabled:
            return
        columns = shutil.get_terminal_size((100, 20)).columns - 1
        text = text if len(text) <= columns else text[: columns - 1] + "…"
        sys.stderr.write("\r" + text.ljust(self._width))
        sys.stderr.flush()
        self._width = len(text)

    def end(self) -> None:
        if self.enabled and self._width:
            sys.stderr.write("\n")
            sys.stderr.flush()


class _Batch:
    """The deliveries a command started, known by event id or by delivery id."""

    def __init__(self, hooks: hd.Dispatcher, storage: hd.Storage, *, by_event: bool) -> None:
        self.hooks = hooks
        self.storage = storage  # its unpaged listings: a batch follows all of its own
        self.by_event = by_event
        self.keys: dict[str, None] = {}  # an ordered set

    def key(self, delivery: hd.Delivery) -> str:
        return delivery.event_id if self.by_event else delivery.id

    def pending(self) -> int:
        """How many keys still have a pending delivery."""
        pending = self.storage.list_deliveries(status=hd.DeliveryStatus.PENDING)
        return len({self.key(d) for d in pending if self.key(d) in self.keys})

    def wait(
        self,
        show: Callable[[int], None],
        *,
        deadline: float | None,
        stop: threading.Event,
    ) -> None:
        """Until no delivery of the batch is pending, ``deadline`` (monotonic) passed,
        or ``stop`` is set (a signal)."""
        while True:
            pending = self.pending()
            show(len(self.keys) - pending)
            if not pending or stop.is_set():
                return
            if deadline is not None and time.monotonic() >= deadline:
                return
            if self.hooks.drain(timeout=_POLL):
                stop.wait(_POLL)  # nothing due now: retries are scheduled for later

    def deliveries(self) -> list[hd.Delivery]:
        if self.by_event:
            return [d for key in self.keys for d in self.storage.list_deliveries(event_id=key)]
        return [self.hooks.get_delivery(key) for key in self.keys]


@contextlib.contextmanager
def _stopping_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT (Ctrl-C) or SIGTERM sets ``stop``: the batch stops starting and waiting,
    and the summary is printed. A second one interrupts at once. Only in the main
    thread, where Python runs signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with stop_on_signals(stop):
        yield


def deliver_batch(
    storage: hd.Storage,
    start: Callable[[hd.Dispatcher], Iterable[list[str]]],
    *,
    by_event: bool,
    total: int,
    noun: str,
    options: BatchOptions,
) -> Outcome:
    """Run ``start`` on a background Dispatcher and wait for what it started.

    ``start`` dispatches or redelivers and yields, a chunk at a time, the event ids
    (``by_event``) or the delivery ids it started; ``total`` is how many it will yield
    (``noun``s), for the progress line. On SIGINT or SIGTERM it stops between two
    chunks and stops waiting; attempts in flight finish and are recorded, and what is
    pending stays stored: nothing is lost.
    """
    started = time.monotonic()
    deadline = None if options.wait is None else started + options.wait
    line = StatusLine(enabled=StatusLine.wanted(quiet=options.quiet))
    tally = Tally()
    stop = threading.Event()
    begun = 0
    with attempt_log(logging.DEBUG if options.verbose else logging.ERROR):
        hooks = options.delivery.dispatcher(storage, on_attempt=tally)
        batch = _Batch(hooks, storage, by_event=by_event)

        def show(done: int) -> None:
            counts, down = tally.counts(batch.keys, by_event=by_event)
            elapsed = time.monotonic() - started
            line.show(
                status_line(
                    options.label,
                    done=done,
                    total=total,
                    noun=noun,
                    counts=counts,
                    down=down,
                    elapsed=elapsed,
                )
            )

        try:
            with _stopping_on_signals(stop):
                for chunk in start(hooks):
                    begun += len(chunk)
                    batch.keys.update(dict.fromkeys(chunk))
                    show(0)
                    if stop.is_set():
                        break
                batch.wait(show, deadline=deadline, stop=stop)
        finally:
            line.end()
            hooks.close(timeout=0)  # attempts in flight finish and are recorded first
        deliveries = batch.deliveries()
        return Outcome(
            keys=list(batch.keys),
            deliveries=deliveries,
            endpoints=_endpoints_of(storage, deliveries),
            elapsed=time.monotonic() - started,
            interrupted=stop.is_set(),
            unstarted=max(0, total - begun) if stop.is_set() else 0,
        )


def _endpoints_of(storage: hd.Storage, deliveries: Sequence[hd.Delivery]) -> list[hd.Endpoint]:
    """The endpoints the batch went to (not every endpoint stored), deleted ones left out."""
    found = []
    for endpoint_id in dict.fromkeys(delivery.endpoint_id for delivery in deliveries):
        try:
            found.append(storage.get_endpoint(endpoint_id))
        except hd.UnknownEndpointError:
            continue  # deleted meanwhile: the summary shows its id without a URL
    return found


EXIT_FAILED = 1
"""Exit status: at least one delivery failed."""
EXIT_PENDING = 3
"""Exit status: none failed, but some are still pending (``--wait`` ran out)."""
EXIT_INTERRUPTED = 130
"""Exit status: stopped by SIGINT or SIGTERM (128 + SIGINT, as shells report it)."""


def refuse_blocked_targets(endpoints: Iterable[hd.Endpoint], targets: hd.TargetPolicy) -> None:
    """Before anything is stored: refuse when an endpoint that would get the work is one
    the target policy refuses on its face (``http://``, a loopback or private address),
    naming the flag, rather than store deliveries that could only fail as blocked.

    The usual cause is an endpoint added with ``--allow-local`` and a ``send`` or
    ``replay`` without it. Host names are checked at every connection, as always.
    """
    refused: dict[str, hd.Endpoint] = {}
    for endpoint in endpoints:
        try:
            targets.check_url(endpoint.url)
        except hd.InvalidEndpointError:
            refused.setdefault(endpoint.id, endpoint)
    if not refused:
        return
    named = [f"{e.id} ({_origin(e.url)})" for e in list(refused.values())[:3]]
    if len(refused) > 3:
        named.append(f"and {len(refused) - 3} more")
    raise CliError(
        f"nothing was sent: {plural(len(refused), 'endpoint')} that would get it"
        f" ({', '.join(named)}) use http:// or a local or private address, which is"
        " refused without --allow-local. Pass --allow-local (or set"
        " HOOKDISPATCH_ALLOW_LOCAL=1), as when the endpoint was added; for an internal"
        " network, --allow-network CIDR."
    )


def _origin(url: str) -> str:
    """The scheme and host of a URL: never its path or query, which may hold a token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def print_summary(
    deliveries: Sequence[hd.Delivery],
    endpoints: Sequence[hd.Endpoint],
    *,
    headline: str,
    interrupted: bool = False,
    unstarted: str | None = None,
) -> int:
    """Per endpoint: delivered, failed, pending; then the failures and what is still
    pending, each with the command that finishes it. Returns the exit status:
    :data:`EXIT_INTERRUPTED`, :data:`EXIT_FAILED`, :data:`EXIT_PENDING` or 0."""
    counts: dict[str, Counter[str]] = {}
    for delivery in deliveries:
        counts.setdefault(delivery.endpoint_id, Counter())[delivery.status.value] += 1
    urls = {endpoint.id: endpoint.url for endpoint in endpoints}
    if interrupted:
        click.echo("Interrupted: nothing more was started; attempts in flight were recorded.")
    if counts:
        rows = [
            [endpoint_id, shorten(urls.get(endpoint_id), 50)]
            + [str(count[status]) for status in ("succeeded", "failed", "pending")]
            for endpoint_id, count in counts.items()
        ]
        click.echo(table(["ENDPOINT", "URL", "DELIVERED", "FAILED", "PENDING"], rows))
    total = Counter(delivery.status.value for delivery in deliveries)
    click.echo(
        f"{headline}: {plural(len(deliveries), 'delivery')}, {total['succeeded']} delivered,"
        f" {total['failed']} failed, {total['pending']} pending."
    )
    if unstarted:
        click.echo(unstarted)
    root = cli_root()
    failed = [d for d in deliveries if d.status is hd.DeliveryStatus.FAILED]
    for delivery in failed[:_LISTED_FAILURES]:
        click.echo(
            f"  failed: {delivery.id} (event {delivery.event_id}) to {delivery.endpoint_id}"
            f" after {plural(delivery.attempt_count, 'attempt')}:"
            f" {for_cli(delivery.last_error or 'no error recorded')}"
        )
    if len(failed) > _LISTED_FAILURES:
        click.echo(f"  ... and {len(failed) - _LISTED_FAILURES} more failed")
    if failed:
        click.echo(f"Send them again with: {root} replay --failed")
    pending = [d for d in deliveries if d.status is hd.DeliveryStatus.PENDING]
    for delivery in pending[:_LISTED_FAILURES]:
        after = plural(delivery.attempt_count, "attempt")
        last = f", last error: {for_cli(delivery.last_error)}" if delivery.last_error else ""
        click.echo(
            f"  pending: {delivery.id} (event {delivery.event_id}) to {delivery.endpoint_id}"
            f" after {after}, next attempt at {when(delivery.next_attempt_at)}{last}"
        )
    if len(pending) > _LISTED_FAILURES:
        click.echo(f"  ... and {len(pending) - _LISTED_FAILURES} more pending")
    if pending:
        click.echo(
            f"Still pending: {plural(len(pending), 'delivery')}, kept in the database:"
            f" `{root} worker` delivers them (`{root} deliveries --status pending` lists them)."
        )
    if interrupted:
        return EXIT_INTERRUPTED
    if failed:
        return EXIT_FAILED
    return EXIT_PENDING if pending else 0
