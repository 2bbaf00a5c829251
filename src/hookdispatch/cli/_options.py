"""Parameter types and the options shared by the commands that deliver."""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import click
from attrs import frozen

import hookdispatch as hd

from .._targets import default_targets

__all__ = [
    "DeliveryOptions",
    "delivery_options",
    "parse_duration",
    "parse_json",
    "parse_since",
    "scope_option",
    "target_options",
    "tenant_option",
]

F = TypeVar("F", bound=Callable[..., Any])

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_MIN_LEASE = 60.0


def _seconds(text: str) -> float | None:
    """The seconds of a duration such as ``90s``, ``15m``, ``1h30m``, ``2d``; else None."""
    if not _DURATION.fullmatch(text):
        return None
    return sum(float(amount) * _UNIT_SECONDS[unit] for amount, unit in _DURATION_PART.findall(text))


def parse_duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """A duration (``90s``, ``15m``, ``24h``, ``1h30m``, ``7d``; ``0`` for none) as seconds."""
    if value is None:
        return None
    text = value.strip().lower()
    seconds = 0.0 if text == "0" else _seconds(text)
    if seconds is None:
        raise click.BadParameter(
            f"{value!r} is not a duration; use 30s, 15m, 24h, 7d, 1h30m, or 0 for none"
        )
    return seconds


def parse_since(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """``--since``: a duration back from now (``90s``, ``15m``, ``1h30m``, ``2d``) or an
    ISO 8601 time (``2024-06-30T15:00:00Z``; UTC when it has no offset)."""
    if value is None:
        return None
    seconds = _seconds(value.strip().lower())
    if seconds is not None:
        return datetime.now(UTC) - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither a duration (30s, 15m, 1h, 2d, 1h30m) nor an ISO time"
            " (2024-06-30T15:00:00Z)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_json(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """A JSON document given on the command line, such as ``--data '{"id": 1}'``."""
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None


@frozen
class DeliveryOptions:
    """How a command's Dispatcher delivers: threads, retry policy, attempt deadline."""

    workers: int
    max_attempts: int
    retry_wait: float
    timeout: float
    targets: hd.TargetPolicy | None

    def dispatcher(
        self,
        storage: hd.Storage,
        *,
        poll_interval: float = 1.0,
        on_attempt: Callable[[hd.AttemptReport], None] | None = None,
    ) -> hd.Dispatcher:
        """A background Dispatcher on ``storage`` with these options."""
        retry = hd.RetryPolicy(
            max_attempts=self.max_attempts,
            initial_wait=self.retry_wait,
            jitter=self.retry_wait,
            max_wait=max(60.0, self.retry_wait),
        )
        return hd.Dispatcher(
            storage=storage,
            workers=self.workers,
            retry=retry,
            timeout=self.timeout,
            lease=max(_MIN_LEASE, self.timeout * 2),
            poll_interval=poll_interval,
            targets=self.targets,
            on_attempt=on_attempt,
        )

    @property
    def policy(self) -> hd.TargetPolicy:
        """The target policy the dispatcher applies: the flags', else the default."""
        return self.targets or default_targets()


def _parse_networks(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[str, ...]:
    for value in values:
        try:
            ipaddress.ip_network(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return values


_TARGET_OPTIONS = (
    click.option(
        "--allow-local",
        is_flag=True,
        envvar="HOOKDISPATCH_ALLOW_LOCAL",
        help="Allow http:// and loopback or private addresses, which are refused by default"
        " (SSRF protection): for local development, e.g. with `hookdispatch listen`"
        " [env: HOOKDISPATCH_ALLOW_LOCAL].",
    ),
    click.option(
        "--allow-network",
        "allowed_networks",
        multiple=True,
        metavar="CIDR",
        callback=_parse_networks,
        help="Allow this internal network too, such as 10.20.0.0/16 (repeatable).",
    ),
)


def target_policy(
    *, allow_local: bool, allowed_networks: tuple[str, ...]
) -> hd.TargetPolicy | None:
    """The policy the target options ask for; ``None`` keeps the library's default."""
    if allow_local:
        return hd.TargetPolicy.local()
    if allowed_networks:
        return hd.TargetPolicy(allowed_networks=allowed_networks)
    return None


def target_options(command: F) -> F:
    """Add ``--allow-local`` and ``--allow-network``; the command receives them as one
    ``targets`` argument, a :class:`~hookdispatch.TargetPolicy` or ``None``."""

    @functools.wraps(command)
    def wrapper(
        *args: Any, allow_local: bool, allowed_networks: tuple[str, ...], **kwargs: Any
    ) -> Any:
        targets = target_policy(allow_local=allow_local, allowed_networks=allowed_networks)
        return command(*args, targets=targets, **kwargs)

    decorated: Callable[..., Any] = wrapper
    for option in reversed(_TARGET_OPTIONS):
        decorated = option(decorated)
    return cast(F, decorated)


_DELIVERY_OPTIONS = (
    click.option(
        "--workers",
        type=click.IntRange(min=1),
        metavar="N",
        default=8,
        show_default=True,
        help="Delivery threads: how many attempts are in flight at once.",
    ),
    click.option(
        "--max-attempts",
        type=click.IntRange(min=1),
        metavar="N",
        default=4,
        show_default=True,
        help="Attempts per delivery, the first one included (1: no retries).",
    ),
    click.option(
        "--retry-wait",
        type=click.FloatRange(min=0),
        default=1.0,
        show_default=True,
        metavar="SECONDS",
        help="Wait after the first failed attempt, doubling after each failure"
        " (plus a random jitter of up to as much again).",
    ),
    click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=5.0,
        show_default=True,
        metavar="SECONDS",
        help="Total deadline of one attempt: connect, send, wait and read.",
    ),
)


def delivery_options(command: F) -> F:
    """Add ``--workers``, ``--max-attempts``, ``--retry-wait``, ``--timeout`` and the
    target options; the command receives them as one ``delivery`` argument, a
    :class:`DeliveryOptions`."""

    @functools.wraps(command)
    def wrapper(
        *args: Any,
        workers: int,
        max_attempts: int,
        retry_wait: float,
        timeout: float,
        targets: hd.TargetPolicy | None,
        **kwargs: Any,
    ) -> Any:
        delivery = DeliveryOptions(workers, max_attempts, retry_wait, timeout, targets)
        return command(*args, delivery=delivery, **kwargs)

    decorated: Callable[..., Any] = target_options(wrapper)
    for option in reversed(_DELIVERY_OPTIONS):
        decorated = option(decorated)
    return cast(F, decorated)


def tenant_option(help: str) -> Callable[[F], F]:
    """``--tenant TENANT`` (default: the default tenant), for commands that act for one."""
    return click.option(
        "--tenant",
        metavar="TENANT",
        default=hd.DEFAULT_TENANT,
        show_default=True,
        help=help,
    )


def scope_option(help: str) -> Callable[[F], F]:
    """``--tenant TENANT`` as a scope (default: none, every tenant's), for commands that
    look up or list: another tenant's id then reads as an unknown one."""
    return click.option("--tenant", metavar="TENANT", help=help)
