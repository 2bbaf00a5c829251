"""Wait for a batch of deliveries on a thread-pool Dispatcher, then summarise it.

``send`` and ``replay`` start deliveries on a background :class:`~hookdispatch.Dispatcher`
(``--workers`` threads), so one slow or dead receiver does not hold up the others and a
retry is a scheduled time, not a sleeping thread. They then wait until none of *their*
deliveries is pending: ``drain()`` returns once nothing is due *now*, so the wait loops
on it until the retries have come due and finished too (or ``--wait`` seconds passed).
"""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar, cast

import click
from attrs import frozen

import hookdispatch as hd

from ._logs import attempt_log
from ._options import DeliveryOptions, delivery_options
from ._output import Progress, plural, shorten, table

__all__ = ["BatchOptions", "Outcome", "batch_options", "deliver_batch", "print_summary"]

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
    "-q", "--quiet", is_flag=True, help="No progress bar (there is none off a terminal either)."
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
    """What a batch came to: its keys in order, their deliveries now, their endpoints."""

    keys: list[str]
    deliveries: list[hd.Delivery]
    endpoints: list[hd.Endpoint]
    elapsed: float


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

    def wait(self, progress: Progress, *, deadline: float | None) -> None:
        """Until no delivery of the batch is pending, or ``deadline`` (monotonic) passed."""
        while True:
            pending = self.pending()
            progress.advance_to(len(self.keys) - pending)
            if not pending or (deadline is not None and time.monotonic() >= deadline):
                return
            if self.hooks.drain(timeout=_POLL):
                time.sleep(_POLL)  # nothing due now: retries are scheduled for later

    def deliveries(self) -> list[hd.Delivery]:
        if self.by_event:
            return [d for key in self.keys for d in self.storage.list_deliveries(event_id=key)]
        return [self.hooks.get_delivery(key) for key in self.keys]


def deliver_batch(
    storage: hd.Storage,
    start: Callable[[hd.Dispatcher], Iterable[str]],
    *,
    by_event: bool,
    total: int,
    options: BatchOptions,
) -> Outcome:
    """Run ``start`` on a background Dispatcher and wait for what it started.

    ``start`` dispatches or redelivers and yields the event ids (``by_event``) or the
    delivery ids it started; ``total`` is how many it will yield, for the progress bar.
    """
    started = time.monotonic()
    deadline = None if options.wait is None else started + options.wait
    show = Progress.wanted(quiet=options.quiet)
    with attempt_log(logging.DEBUG if options.verbose else logging.ERROR):
        hooks = options.delivery.dispatcher(storage)
        batch = _Batch(hooks, storage, by_event=by_event)
        try:
            with Progress(total, label=options.label, enabled=show) as bar:
                for key in start(hooks):
                    batch.keys[key] = None
                batch.wait(bar, deadline=deadline)
            deliveries = batch.deliveries()
            return Outcome(
                keys=list(batch.keys),
                deliveries=deliveries,
                endpoints=_endpoints_of(storage, deliveries),
                elapsed=time.monotonic() - started,
            )
        finally:
            hooks.close(timeout=0)


def _endpoints_of(storage: hd.Storage, deliveries: Sequence[hd.Delivery]) -> list[hd.Endpoint]:
    """The endpoints the batch went to (not every endpoint stored), deleted ones left out."""
    found = []
    for endpoint_id in dict.fromkeys(delivery.endpoint_id for delivery in deliveries):
        try:
            found.append(storage.get_endpoint(endpoint_id))
        except hd.UnknownEndpointError:
            continue  # deleted meanwhile: the summary shows its id without a URL
    return found


def print_summary(
    deliveries: Sequence[hd.Delivery], endpoints: Sequence[hd.Endpoint], *, headline: str
) -> bool:
    """Per endpoint: delivered, failed, pending; then the failures. True if any failed."""
    counts: dict[str, Counter[str]] = {}
    for delivery in deliveries:
        counts.setdefault(delivery.endpoint_id, Counter())[delivery.status.value] += 1
    urls = {endpoint.id: endpoint.url for endpoint in endpoints}
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
    failed = [d for d in deliveries if d.status is hd.DeliveryStatus.FAILED]
    for delivery in failed[:_LISTED_FAILURES]:
        click.echo(
            f"  failed: {delivery.id} (event {delivery.event_id}) to {delivery.endpoint_id}"
            f" after {delivery.attempt_count} attempts: {shorten(delivery.last_error, 80)}"
        )
    if len(failed) > _LISTED_FAILURES:
        click.echo(f"  ... and {len(failed) - _LISTED_FAILURES} more")
    if failed:
        click.echo("Send them again with: hookdispatch replay --failed")
    if total["pending"]:
        click.echo("Pending deliveries stay in the database: `hookdispatch worker` delivers them.")
    return bool(failed)
