"""SocketTransport: HTTP/1.1 POSTs on the standard library's blocking sockets.

The sync twin of ``AsyncioTransport``: the request written by
:func:`~._http11.encode_post`, the answer read by the sans-I/O
:class:`~._http11.ResponseParser`, connections opened by :func:`~._connect.connect`
(resolve, policy check, connect) and kept alive in a :class:`~._pool.KeepAlivePool`.
Measured against the benchmark receiver with eight threads, httpx's sync stack
(httpcore and h11) cost several times the CPU of the exchange itself; this does
the socket work and little else.

The total deadline is one :class:`~._deadline.Deadline`: every connect, TLS
handshake, write (in 64 KiB pieces) and read gets only what is left of it.
"""

from __future__ import annotations

import contextlib
import socket
import time

from .._core import Outcome, Request
from .._targets import TargetPolicy
from ..exceptions import TransportError
from ._connect import Origin, connect, readable
from ._deadline import Deadline, Expired, timed_out
from ._errors import exchange_failure
from ._http11 import IncompleteResponse, ResponseError, ResponseParser
from ._options import TransportOptions, request_bytes, response
from ._pool import ConnectionsBusy, KeepAlivePool

__all__ = ["SocketTransport"]

_CHUNK = 64 * 1024  # bytes written or read per call: the deadline is checked between


class _Connection:
    """One keep-alive connection, used by one thread at a time."""

    __slots__ = ("_expiry", "_sock", "idle_since")

    def __init__(self, sock: socket.socket, expiry: float) -> None:
        self._sock = sock
        self._expiry = expiry
        self.idle_since = time.monotonic()

    def exchange(self, payload: bytes, parser: ResponseParser, deadline: Deadline) -> None:
        """Send ``payload`` and feed ``parser`` until the response is complete.

        Raises Expired, ResponseError, IncompleteResponse or OSError.
        """
        sock = self._sock
        view = memoryview(payload)
        refused: OSError | None = None
        for start in range(0, len(view), _CHUNK):
            sock.settimeout(deadline.left())
            try:
                sock.sendall(view[start : start + _CHUNK])
            except (BrokenPipeError, ConnectionResetError) as exc:
                # The receiver may have answered early (a 413 for a body it will not
                # read, a 410) and closed: read that answer, as httpcore does.
                refused = exc
                break
        try:
            while True:
                sock.settimeout(deadline.left())
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
            return readable(self._sock)
        except (OSError, ValueError):  # closed under us
            return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()


class SocketTransport(TransportOptions):
    """The default transport: HTTP/1.1 on blocking sockets, kept alive and reused.

    Redirects are never followed (a 3xx is a failed attempt). Each request has a
    *total* deadline of ``request.timeout`` seconds covering the wait for a
    connection, connect, TLS, sending, waiting and reading the response, enforced
    at every socket operation (name resolution, before any socket exists, is not
    bounded by it). At most ``max_response_bytes`` of a response body are kept:
    once that much has arrived with more still to come, the read ends there and the
    connection is closed. With ``targets`` (a :class:`TargetPolicy`) each
    connection is made to an address the policy checked at that moment; a refused
    one comes back as a BlockedTargetError outcome. (The policy checked is the
    request's own, which the dispatchers always set; ``targets`` is for requests
    without one, and without either the default policy applies.) Certificates are verified as
    httpx does (``verify``: True, False or your own ``ssl.SSLContext``). At most
    ``max_connections`` are open at once; idle ones are closed after
    ``keepalive_expiry`` seconds or once the receiver hangs up. Safe to share
    between threads.

    A request header that would smuggle in another (a line break or NUL in it)
    raises InvalidInputError: that is a bug in whatever built the request.
    """

    def _setup(self) -> None:
        self._pool: KeepAlivePool[_Connection] = KeepAlivePool(
            max_connections=self._max_connections
        )

    def send(self, request: Request) -> Outcome:
        deadline = Deadline(request.timeout)
        wire = request_bytes(request)
        if isinstance(wire, TransportError):
            return wire
        origin, payload = wire
        try:
            policy = self._policy(request)
        except TransportError as refused:  # the policy refuses the scheme
            return refused
        key = (origin, policy)  # a connection serves only requests under its policy
        parser = self._parser()
        reusable = False
        try:
            connection = self._pool.take(key, wait=deadline.remaining())
        except ConnectionsBusy:
            return timed_out(request.timeout)
        if connection is None:
            try:
                connection = self._connect(origin, policy, deadline)
            except BaseException as exc:
                self._pool.forfeit()
                if isinstance(exc, Expired):
                    return timed_out(request.timeout)
                if isinstance(exc, TransportError):  # connect, TLS, the policy's refusal
                    return exc
                raise
        try:
            connection.exchange(payload, parser, deadline)
            reusable = parser.reusable
            return response(parser)
        except (Expired, TimeoutError):
            return timed_out(request.timeout)
        except (ResponseError, IncompleteResponse, OSError) as exc:
            return exchange_failure(exc)
        finally:
            connection.idle_since = time.monotonic()
            self._pool.give_back(key, connection, reusable=reusable)

    def _connect(self, origin: Origin, policy: TargetPolicy, deadline: Deadline) -> _Connection:
        context = self._ssl_context() if origin[0] == "https" else None
        sock = connect(origin, policy=policy, deadline=deadline, ssl_context=context)
        return _Connection(sock, self._keepalive_expiry)

    def close(self) -> None:
        """Close the idle connections; those in use close when their exchange ends.

        Requests sent after this still work, on connections closed after each one.
        """
        self._pool.close()
