"""The transport seam: one method that POSTs a :class:`Request` and returns an outcome.

A transport never raises for a failed attempt; it *returns* a
:class:`~hookdispatch.exceptions.TransportError` describing it, so the driver
treats every outcome the same way. It must connect only where the request's
target policy allows (:mod:`._connect` does that for every shipped transport).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .._core import Outcome, Request, Response

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "AsyncTransport",
    "CappedBody",
    "Outcome",
    "Request",
    "Response",
    "Transport",
]

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024
"""How much of a response body a transport keeps by default (64 KiB)."""


@runtime_checkable
class Transport(Protocol):
    """Sends one request. Implementations must be safe to call from many threads.

    ``send`` returns a :class:`Response` (any status) or a ``TransportError`` for an
    attempt that got no usable response; it must finish within ``request.timeout``
    seconds in total, keep at most a bounded part of the response body, and
    connect only to addresses ``request.targets`` allows (a refusal is returned
    as a ``BlockedTargetError``). It never raises for what a receiver does.
    """

    def send(self, request: Request) -> Outcome: ...

    def close(self) -> None: ...


@runtime_checkable
class AsyncTransport(Protocol):
    """Sends one request from the event loop; the async twin of ``Transport``.

    ``send`` has the contract of :meth:`Transport.send`, and never blocks the
    event loop.
    """

    async def send(self, request: Request) -> Outcome: ...

    async def aclose(self) -> None: ...


class CappedBody:
    """A response body read in pieces, of which at most ``limit`` bytes are kept.

    ``add`` each piece as it arrives and stop reading once it returns True;
    ``value()`` is the body kept. The one capped reader of the transports built
    on client libraries (the HTTP/1.1 codec bounds its own).
    """

    __slots__ = ("_chunks", "_size", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._chunks: list[bytes] = []
        self._size = 0

    def add(self, chunk: bytes) -> bool:
        """Keep ``chunk`` (up to the limit); True once the limit is reached."""
        if self._size < self.limit:
            self._chunks.append(chunk)
            self._size += len(chunk)
        return self._size >= self.limit

    @property
    def wanted(self) -> int:
        """How many more bytes would be kept."""
        return max(0, self.limit - self._size)

    def value(self) -> bytes:
        body = b"".join(self._chunks)
        return body if len(body) <= self.limit else body[: self.limit]
