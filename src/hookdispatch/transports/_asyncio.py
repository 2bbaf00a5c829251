"""AsyncioTransport: HTTP/1.1 POSTs on asyncio's own sockets, with no client library.

A webhook sender needs a small part of an HTTP client: one method, no cookies,
redirects, proxies, auth or compression, one request per connection at a time,
keep-alive, a total deadline and a bounded response. aiohttp's general-purpose
request path costs several times what the socket work does (measured in
``benchmarks/``), so this transport writes the request with
:func:`~hookdispatch._http11.encode_post`, parses the answer with the sans-I/O
:class:`~hookdispatch._http11.ResponseParser`, and keeps idle connections in a
stack per origin, as the sync ``KeepAlivePool`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import cast

from .._core import Outcome, Request
from .._targets import TargetPolicy
from ..exceptions import TransportError
from ._connect import Origin, aconnect
from ._deadline import DeadlineWatch
from ._errors import exchange_failure
from ._http11 import IncompleteResponse, ResponseError, ResponseParser
from ._options import TransportOptions, request_bytes, response
from ._pool import AsyncKeepAlivePool

__all__ = ["AsyncioTransport"]


class _Connection(asyncio.Protocol):
    """One keep-alive connection: carries one exchange at a time."""

    __slots__ = ("_expiry", "_loop", "_parser", "_transport", "_waiter", "closed", "idle_since")

    def __init__(self, loop: asyncio.AbstractEventLoop, expiry: float) -> None:
        self._loop = loop
        self._expiry = expiry
        self.closed = False
        self.idle_since = 0.0
        self._transport: asyncio.Transport | None = None
        self._parser: ResponseParser | None = None
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though not always a subclass of asyncio.Transport:
        # uvloop's (the loop uvicorn picks when installed) is its own class.
        self._transport = cast(asyncio.Transport, transport)

    def exchange(self, payload: bytes, parser: ResponseParser) -> asyncio.Future[None]:
        """Send ``payload``; the future completes when ``parser`` has the whole response
        (or fails with ResponseError, IncompleteResponse or OSError)."""
        assert self._transport is not None
        waiter = self._loop.create_future()
        if self.closed or self._transport.is_closing():  # the receiver hung up meanwhile
            waiter.set_exception(IncompleteResponse("the receiver closed the connection"))
            return waiter
        self._parser, self._waiter = parser, waiter
        self._transport.write(payload)
        return waiter

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:  # bytes nobody asked for: this connection cannot be trusted
            self.abort()
            return
        try:
            done = parser.feed(data)
        except ResponseError as exc:
            self._settle(exc)
            self.abort()
            return
        if done:
            self._settle(None)

    def eof_received(self) -> None:
        self.closed = True
        self._closed_by_peer(None)  # returning None closes our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._closed_by_peer(exc)

    def _closed_by_peer(self, exc: Exception | None) -> None:
        parser = self._parser
        if parser is None:
            return
        try:
            parser.close()
        except IncompleteResponse as incomplete:
            self._settle(exc if isinstance(exc, OSError) else incomplete)
        else:
            self._settle(None)

    def _settle(self, error: Exception | None) -> None:
        waiter, self._waiter, self._parser = self._waiter, None, None
        if waiter is not None and not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)

    def has_expired(self) -> bool:
        """Closed by the receiver, or idle for longer than the keep-alive expiry."""
        return self.closed or time.monotonic() - self.idle_since > self._expiry

    def close(self) -> None:
        """What the pool calls: :meth:`abort` (an idle connection has nothing unsent)."""
        self.abort()

    def abort(self) -> None:
        """Close at once, dropping anything unsent (the connection is not reused).

        From outside its event loop too: a loop running elsewhere is asked to close
        it; for one that is stopped or closed (it would never get to it), the socket
        is shut down, which tells the receiver, and closes with its transport.
        """
        self.closed = True
        self._parser = None
        transport = self._transport
        if transport is None:
            return
        loop = self._loop
        if asyncio._get_running_loop() is loop:
            transport.abort()
            return
        if loop.is_running():
            try:
                loop.call_soon_threadsafe(transport.abort)
                return
            except RuntimeError:  # closed meanwhile
                pass
        with contextlib.suppress(OSError, AttributeError):
            transport.get_extra_info("socket").shutdown(socket.SHUT_RDWR)


class AsyncioTransport(TransportOptions):
    """The default async transport: HTTP/1.1 on asyncio's sockets, kept alive and reused.

    The same guarantees as the other transports: redirects are never followed (a
    3xx is a failed attempt); each request is cut at ``request.timeout`` seconds in
    total, covering the wait for a connection, connect, TLS, sending and reading;
    at most ``max_response_bytes`` of a response body are kept: once that much has
    arrived with more still to come, the read ends there and the connection is
    closed (a longer body that arrived whole is dropped, its connection kept). With ``targets`` (a
    :class:`TargetPolicy`) each connection goes to an address the policy checked at
    that moment; a refused one comes back as a BlockedTargetError outcome (the
    request's own policy, which the dispatchers always set; ``targets`` is for
    requests without one, and without either the default policy applies).
    Certificates are verified as httpx does (``verify``: True, False or your own
    ``ssl.SSLContext``). At most ``max_connections`` are open at once; an idle one is
    closed after ``keepalive_expiry`` seconds. Belongs to one event loop at a time.

    A request header that would smuggle in another (a line break or NUL in it) raises
    InvalidInputError: that is a bug in whatever built the request, not the receiver's doing.
    """

    _KEEPALIVE_EXPIRY = 15.0

    def _setup(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: AsyncKeepAlivePool[_Connection] = AsyncKeepAlivePool(
            max_connections=self._max_connections
        )
        self._deadlines = DeadlineWatch()
        self._closed = False

    async def send(self, request: Request) -> Outcome:
        wire = request_bytes(request)
        if isinstance(wire, TransportError):
            return wire
        origin, payload = wire
        if asyncio.get_running_loop() is not self._loop:
            self._adopt_loop()
        try:
            policy = self._policy(request)
        except TransportError as refused:  # the policy refuses the scheme
            return refused
        return await self._deadlines.run(request.timeout, self._exchange(origin, policy, payload))

    async def _exchange(self, origin: Origin, policy: TargetPolicy, payload: bytes) -> Outcome:
        key = (origin, policy)  # a connection serves only requests under its policy
        pool = self._pool
        connection = await pool.take(key)
        if connection is None:
            try:
                connection = await self._connect(origin, policy)
            except TransportError as exc:  # connect, TLS, or the policy's BlockedTargetError
                pool.forfeit()
                return exc
            except BaseException:
                pool.forfeit()
                raise
        parser = self._parser()
        reusable = False
        try:
            await connection.exchange(payload, parser)
            reusable = parser.reusable
            return response(parser)
        except (ResponseError, IncompleteResponse, OSError) as exc:
            return exchange_failure(exc)
        finally:
            connection.idle_since = time.monotonic()
            pool.give_back(key, connection, reusable=reusable)

    def _adopt_loop(self) -> None:
        """First use, or use from another loop: connections and timers belong to the
        loop that made them, so those of an earlier loop are closed and forgotten."""
        self._pool.close()
        self._loop = asyncio.get_running_loop()
        self._pool = AsyncKeepAlivePool(max_connections=self._max_connections)
        if self._closed:
            self._pool.close()

    async def _connect(self, origin: Origin, policy: TargetPolicy) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        context = self._ssl_context() if scheme == "https" else None
        expiry = self._keepalive_expiry

        async def connect_to(address: str) -> _Connection:
            _, connection = await loop.create_connection(
                lambda: _Connection(loop, expiry),
                address,
                port,
                ssl=context,
                server_hostname=host if context is not None else None,
            )
            return connection

        return await aconnect(origin, policy=policy, connect_to=connect_to)

    async def aclose(self) -> None:
        """Close the idle connections; those in use close when their exchange ends.

        Requests sent after this still work, on connections closed after each one.
        Called from another event loop while this transport's own loop runs (in
        another thread), the closing is done on that loop.
        """
        own = self._loop
        if own is not None and own.is_running() and own is not asyncio._get_running_loop():
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.aclose(), own))
            return
        # The deadline timer stays: exchanges in flight are still cut at their deadline
        # (it stops by itself once none is watched).
        self._closed = True
        self._pool.close()
