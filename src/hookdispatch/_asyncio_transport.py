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
import collections
import contextlib
import socket
import ssl
import time

from ._async_deadline import DeadlineWatch
from ._core import Outcome, Request
from ._http11 import IncompleteResponse, ResponseError, ResponseParser
from ._targets import TargetPolicy, literal_address
from ._transport import DEFAULT_MAX_RESPONSE_BYTES
from ._wire import Http11Options, Origin, failure, request_bytes, response
from .exceptions import (
    ConnectError,
    DeliveryTimeout,
    TLSError,
    TransportError,
)

__all__ = ["AsyncioTransport"]

_SWEEP_INTERVAL = 1.0  # seconds between checks of every idle connection


class _Connection(asyncio.Protocol):
    """One keep-alive connection: carries one exchange at a time."""

    __slots__ = ("_loop", "_parser", "_transport", "_waiter", "closed", "idle_since", "origin")

    def __init__(self, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self.origin = origin
        self._loop = loop
        self.closed = False
        self.idle_since = 0.0
        self._transport: asyncio.Transport | None = None
        self._parser: ResponseParser | None = None
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

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


class AsyncioTransport(Http11Options):
    """The default async transport: HTTP/1.1 on asyncio's sockets, kept alive and reused.

    The same guarantees as the other transports: redirects are never followed (a
    3xx is a failed attempt); each request is cut at ``request.timeout`` seconds in
    total, covering the wait for a connection, connect, TLS, sending and reading;
    at most ``max_response_bytes`` of a response body are kept: once that much has
    arrived with more still to come, the read ends there and the connection is
    closed (a longer body that arrived whole is dropped, its connection kept). With ``targets`` (a
    :class:`TargetPolicy`) each connection goes to an address the policy checked at
    that moment; a refused one comes back as a BlockedTargetError outcome.
    Certificates are verified as httpx does (``verify``: True, False or your own
    ``ssl.SSLContext``). At most ``max_connections`` are open at once; an idle one is
    closed after ``keepalive_expiry`` seconds. Belongs to one event loop at a time.

    A request header that would smuggle in another (a line break or NUL in it) raises
    ValueError: that is a bug in whatever built the request, not the receiver's doing.
    """

    def __init__(
        self,
        *,
        max_connections: int = 100,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        verify: ssl.SSLContext | bool = True,
        targets: TargetPolicy | None = None,
        keepalive_expiry: float = 15.0,
    ) -> None:
        super().__init__(
            max_connections=max_connections,
            max_response_bytes=max_response_bytes,
            verify=verify,
            targets=targets,
            keepalive_expiry=keepalive_expiry,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open = 0  # connections in use or idle
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._deadlines = DeadlineWatch()
        self._sweeper: asyncio.TimerHandle | None = None  # runs _sweep while any are idle
        self._closed = False

    async def send(self, request: Request) -> Outcome:
        wire = request_bytes(request)
        if isinstance(wire, ConnectError):
            return wire
        origin, payload = wire
        if asyncio.get_running_loop() is not self._loop:
            self._adopt_loop()
        with self._deadlines.watch(request.timeout) as expiry:
            try:
                return await self._exchange(origin, payload)
            except asyncio.CancelledError:
                if expiry.timed_out():
                    return DeliveryTimeout(f"no complete response within {request.timeout:g} s")
                raise

    async def _exchange(self, origin: Origin, payload: bytes) -> Outcome:
        try:
            connection = await self._acquire(origin)
        except TransportError as exc:  # connect, TLS, or the policy's BlockedTargetError
            return exc
        parser = self._parser()
        reusable = False
        try:
            await connection.exchange(payload, parser)
            reusable = parser.reusable
            return response(parser)
        except (ResponseError, IncompleteResponse, OSError) as exc:
            return failure(exc)
        finally:
            self._release(connection, reusable=reusable)

    # The pool --------------------------------------------------------------------------

    def _adopt_loop(self) -> None:
        """First use, or use from another loop: connections and timers belong to the
        loop that made them, so those of an earlier loop are closed and forgotten."""
        self._close_idle()
        self._loop = asyncio.get_running_loop()
        self._open = 0
        self._waiting.clear()
        self._deadlines = DeadlineWatch()
        self._sweeper = None

    async def _acquire(self, origin: Origin) -> _Connection:
        while True:
            idle = self._idle.get(origin)
            while idle:
                connection = idle.pop()
                if not connection.closed:
                    if connection.idle_since >= time.monotonic() - self._keepalive_expiry:
                        return connection
                    connection.abort()  # expired since the last sweep
                self._open -= 1
            if self._open < self._max_connections or self._drop_an_idle_one():
                self._open += 1
                try:
                    return await self._connect(origin)
                except BaseException:
                    self._open -= 1
                    self._wake()
                    raise
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # woken and cancelled at once: pass the turn on
                elif waiter in self._waiting:
                    self._waiting.remove(waiter)
                raise

    def _release(self, connection: _Connection, *, reusable: bool) -> None:
        if reusable and not connection.closed and not self._closed:
            connection.idle_since = time.monotonic()
            self._idle.setdefault(connection.origin, []).append(connection)
            if self._sweeper is None:
                self._sweeper = asyncio.get_running_loop().call_later(_SWEEP_INTERVAL, self._sweep)
        else:
            connection.abort()
            self._open -= 1
        self._wake()

    def _wake(self) -> None:
        """Let the longest-waiting request try again for a connection."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _drop_an_idle_one(self) -> bool:
        """Make room by closing an idle connection to another origin (the oldest one of
        the first origin that has any)."""
        for stack in self._idle.values():
            if stack:
                stack.pop(0).abort()
                self._open -= 1
                return True
        return False

    def _sweep(self) -> None:
        """Every second while any connection is idle: close those idle for longer than
        ``keepalive_expiry`` or closed by their receiver, whichever origin they are for."""
        self._sweeper = None
        oldest = time.monotonic() - self._keepalive_expiry
        for origin, stack in list(self._idle.items()):
            kept = []
            for connection in stack:
                if connection.closed or connection.idle_since < oldest:
                    connection.abort()
                    self._open -= 1
                else:
                    kept.append(connection)
            if kept:
                self._idle[origin] = kept
            else:
                del self._idle[origin]
        if self._idle:
            self._sweeper = asyncio.get_running_loop().call_later(_SWEEP_INTERVAL, self._sweep)

    async def _connect(self, origin: Origin) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        addresses = [host]
        if self._targets is not None:
            try:
                if literal_address(host) is not None:
                    addresses = self._targets.resolve(host, port)  # no lookup: no blocking
                else:
                    addresses = await loop.run_in_executor(None, self._targets.resolve, host, port)
            except OSError as exc:  # the name did not resolve
                raise ConnectError(str(exc)) from None
        context = self._ssl_context() if scheme == "https" else None
        failures: list[str] = []
        for address in addresses:
            try:
                _, connection = await loop.create_connection(
                    lambda: _Connection(origin, loop),
                    address,
                    port,
                    ssl=context,
                    server_hostname=host if context is not None else None,
                )
                return connection
            except (ssl.SSLError, ssl.CertificateError) as exc:
                raise TLSError(str(exc) or type(exc).__name__) from None
            except (OSError, UnicodeError) as exc:
                failures.append(f"{address}: {getattr(exc, 'strerror', None) or exc}")
        raise ConnectError(f"cannot connect to {host} port {port} ({'; '.join(failures)})")

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
        self._close_idle()

    def _close_idle(self) -> None:
        if self._sweeper is not None:
            with contextlib.suppress(RuntimeError):  # its loop may be closed
                self._sweeper.cancel()
            self._sweeper = None
        for stack in self._idle.values():
            for connection in stack:
                connection.abort()
                self._open -= 1
        self._idle.clear()
