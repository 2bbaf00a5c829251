"""SocketTransport: HTTP/1.1 POSTs on the standard library's blocking sockets.

The sync twin of ``AsyncioTransport``: the request written by
:func:`~hookdispatch._http11.encode_post`, the answer read by the sans-I/O
:class:`~hookdispatch._http11.ResponseParser`, connections kept alive in a
:class:`~hookdispatch._connections.KeepAlivePool`. Measured against the benchmark
receiver with eight threads, httpx's sync stack (httpcore and h11) cost several
times the CPU of the exchange itself; this does the socket work and little else.

The total deadline is one absolute time: every connect, TLS handshake, write (in
64 KiB pieces) and read gets only what is left of it.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time

from ._connections import ConnectionsBusy, KeepAlivePool
from ._core import Outcome, Request
from ._http11 import IncompleteResponse, ResponseError, ResponseParser
from ._targets import TargetPolicy, system_resolver
from ._transport import DEFAULT_MAX_RESPONSE_BYTES
from ._wire import Http11Options, Origin, failure, request_bytes, response
from .exceptions import (
    ConnectError,
    DeliveryTimeout,
    TLSError,
    TransportError,
)

__all__ = ["SocketTransport"]

_CHUNK = 64 * 1024  # bytes written or read per call: the deadline is checked between


class _Expired(Exception):
    """The request's total deadline passed (raised between socket operations)."""


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Expired
    return left


def _readable(sock: socket.socket) -> bool:
    """Whether reading would not block: on an idle connection, the receiver hung up
    or sent bytes nobody asked for."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([sock], [], [], 0)[0])  # pragma: no cover - Windows


class _Connection:
    """One keep-alive connection, used by one thread at a time."""

    __slots__ = ("_expiry", "_sock", "idle_since")

    def __init__(self, sock: socket.socket, expiry: float) -> None:
        self._sock = sock
        self._expiry = expiry
        self.idle_since = time.monotonic()

    def exchange(self, payload: bytes, parser: ResponseParser, deadline: float) -> None:
        """Send ``payload`` and feed ``parser`` until the response is complete.

        Raises _Expired, ResponseError, IncompleteResponse or OSError.
        """
        sock = self._sock
        view = memoryview(payload)
        refused: OSError | None = None
        for start in range(0, len(view), _CHUNK):
            sock.settimeout(_left(deadline))
            try:
                sock.sendall(view[start : start + _CHUNK])
            except (BrokenPipeError, ConnectionResetError) as exc:
                # The receiver may have answered early (a 413 for a body it will not
                # read, a 410) and closed: read that answer, as httpcore does.
                refused = exc
                break
        try:
            while True:
                sock.settimeout(_left(deadline))
                data = sock.recv(_CHUNK)
                if not data:
                    parser.close()
                    break
                if parser.feed(data):
                    break
        except (OSError, IncompleteResponse):
            if refused is not None:
                raise refused from None  # no answer after all: the write's error it is
            raise
        if refused is not None:
            parser.reusable = False

    def has_expired(self) -> bool:
        if time.monotonic() - self.idle_since > self._expiry:
            return True
        try:
            return _readable(self._sock)
        except (OSError, ValueError):  # closed under us
            return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()


class SocketTransport(Http11Options):
    """The default transport: HTTP/1.1 on blocking sockets, kept alive and reused.

    Redirects are never followed (a 3xx is a failed attempt). Each request has a
    *total* deadline of ``request.timeout`` seconds covering the wait for a
    connection, connect, TLS, sending, waiting and reading the response, enforced
    at every socket operation (name resolution, before any socket exists, is not
    bounded by it). At most ``max_response_bytes`` of a response body are kept:
    once that much has arrived with more still to come, the read ends there and the
    connection is closed. With ``targets`` (a :class:`TargetPolicy`) each
    connection is made to an address the policy checked at that moment; a refused
    one comes back as a BlockedTargetError outcome. Certificates are verified as
    httpx does (``verify``: True, False or your own ``ssl.SSLContext``). At most
    ``max_connections`` are open at once; idle ones are closed after
    ``keepalive_expiry`` seconds or once the receiver hangs up. Safe to share
    between threads.

    A request header that would smuggle in another (a line break or NUL in it)
    raises ValueError: that is a bug in whatever built the request.
    """

    def __init__(
        self,
        *,
        max_connections: int = 100,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        verify: ssl.SSLContext | bool = True,
        targets: TargetPolicy | None = None,
        keepalive_expiry: float = 30.0,
    ) -> None:
        super().__init__(
            max_connections=max_connections,
            max_response_bytes=max_response_bytes,
            verify=verify,
            targets=targets,
            keepalive_expiry=keepalive_expiry,
        )
        self._pool: KeepAlivePool[_Connection] = KeepAlivePool(max_connections=max_connections)

    def send(self, request: Request) -> Outcome:
        deadline = time.monotonic() + request.timeout
        wire = request_bytes(request)
        if isinstance(wire, ConnectError):
            return wire
        origin, payload = wire
        parser = self._parser()
        reusable = False
        try:
            connection = self._pool.take(origin, wait=max(0.0, deadline - time.monotonic()))
        except ConnectionsBusy:
            return self._timeout(request)
        if connection is None:
            try:
                connection = self._connect(origin, deadline)
            except BaseException as exc:
                self._pool.forfeit()
                if isinstance(exc, _Expired):
                    return self._timeout(request)
                if isinstance(exc, TransportError):  # connect, TLS, the policy's refusal
                    return exc
                raise
        try:
            connection.exchange(payload, parser, deadline)
            reusable = parser.reusable
            return response(parser)
        except (_Expired, TimeoutError):
            return self._timeout(request)
        except (ResponseError, IncompleteResponse, OSError) as exc:
            return failure(exc)
        finally:
            connection.idle_since = time.monotonic()
            self._pool.give_back(origin, connection, reusable=reusable)

    @staticmethod
    def _timeout(request: Request) -> DeliveryTimeout:
        return DeliveryTimeout(f"no complete response within {request.timeout:g} s")

    def _connect(self, origin: Origin, deadline: float) -> _Connection:
        """A new connection to ``origin``, TLS set up for https. Raises TransportError
        (ConnectError, TLSError, BlockedTargetError) or _Expired."""
        scheme, host, port = origin
        try:
            # Resolved first, so each address gets only what is left of the deadline.
            addresses = (
                system_resolver(host, port)
                if self._targets is None
                else self._targets.resolve(host, port)
            )
        except OSError as exc:  # the name did not resolve
            raise ConnectError(str(exc)) from None
        failures: list[str] = []
        for address in addresses:
            try:
                sock = socket.create_connection((address, port), timeout=_left(deadline))
            except TimeoutError:
                raise _Expired from None
            except OSError as exc:
                failures.append(f"{address}: {exc.strerror or exc}")
                continue
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if scheme == "https":
                    sock.settimeout(_left(deadline))
                    sock = self._ssl_context().wrap_socket(sock, server_hostname=host)
            except TimeoutError:
                sock.close()
                raise _Expired from None
            except (ssl.SSLError, ssl.CertificateError) as exc:
                sock.close()
                raise TLSError(str(exc) or type(exc).__name__) from None
            except OSError as exc:  # reset during the handshake
                sock.close()
                raise ConnectError(str(exc) or type(exc).__name__) from None
            except BaseException:
                sock.close()
                raise
            return _Connection(sock, self._keepalive_expiry)
        raise ConnectError(f"cannot connect to {host} port {port} ({'; '.join(failures)})")

    def close(self) -> None:
        """Close the idle connections; those in use close when their exchange ends.

        Requests sent after this still work, on connections closed after each one.
        """
        self._pool.close()
