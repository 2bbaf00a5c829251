"""A total deadline for synchronous httpx requests.

httpx's ``timeout`` applies to each network operation on its own: a receiver that
sends one byte every 4 seconds never trips a 5 second read timeout. This module
wraps httpcore's network backend so that every connect, TLS handshake, read and
write is bounded by the time left until one absolute deadline, which the caller
sets for the current thread (or context) with :class:`TotalDeadline`.

Only public httpcore API is used: ``HTTPConnection(network_backend=…)`` and the
``NetworkBackend``/``NetworkStream`` interfaces. :func:`deadline_pool` builds the
pool the sync transport sends through.
"""

from __future__ import annotations

import contextlib
import ssl
import time
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar

import httpcore
import httpx

from ._connections import ConnectionsBusy, KeepAlivePool
from ._targets import TargetPolicy

__all__ = ["HttpcorePool", "TotalDeadline", "deadline_pool", "to_httpcore"]

_deadline: ContextVar[float | None] = ContextVar("hookdispatch_deadline", default=None)
_WRITE_CHUNK = 64 * 1024


class TotalDeadline:
    """``with TotalDeadline(seconds):`` bounds every network operation inside the block
    to ``seconds`` from entering it, together. (A class: a generator context manager
    costs several times more, on every request.)"""

    __slots__ = ("_seconds", "_token")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    def __enter__(self) -> None:
        self._token = _deadline.set(time.monotonic() + self._seconds)

    def __exit__(self, *exc_info: object) -> None:
        _deadline.reset(self._token)


def _bounded(timeout: float | None, error: type[Exception]) -> float | None:
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise error("total deadline exceeded")
    return remaining if timeout is None else min(timeout, remaining)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if len(buffer) <= _WRITE_CHUNK:
            self._stream.write(buffer, _bounded(timeout, httpcore.WriteTimeout))
            return
        # One inner write may loop over many send() calls under a single timeout;
        # chunking re-checks the deadline between them.
        view = memoryview(buffer)
        for start in range(0, len(view), _WRITE_CHUNK):
            chunk = bytes(view[start : start + _WRITE_CHUNK])
            self._stream.write(chunk, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(
        self, backend: httpcore.NetworkBackend, targets: TargetPolicy | None = None
    ) -> None:
        self._backend = backend
        self._targets = targets

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        if self._targets is None:
            bounded = _bounded(timeout, httpcore.ConnectTimeout)
            stream = self._backend.connect_tcp(host, port, bounded, local_address, socket_options)
            return _DeadlineStream(stream)
        # Resolve once, check every address, connect to a checked address itself:
        # nothing resolved later can differ from what was checked (DNS rebinding).
        last_error: Exception | None = None
        try:
            addresses = self._targets.resolve(host, port)
        except OSError as exc:  # the name did not resolve
            raise httpcore.ConnectError(str(exc)) from exc
        for address in addresses:
            bounded = _bounded(timeout, httpcore.ConnectTimeout)
            try:
                stream = self._backend.connect_tcp(
                    address, port, bounded, local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                last_error = exc
                continue
            return _DeadlineStream(stream)
        assert last_error is not None
        raise last_error

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:  # pragma: no cover - endpoints are URLs, never sockets
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_unix_socket(path, bounded, socket_options))

    def sleep(self, seconds: float) -> None:  # pragma: no cover - pool retries are off
        self._backend.sleep(seconds)


def to_httpcore(request: httpx.Request) -> httpcore.Request:
    """The httpcore request for an httpx one, as httpx's own transports build it."""
    return httpcore.Request(
        method=request.method,
        url=httpcore.URL(
            scheme=request.url.raw_scheme,
            host=request.url.raw_host,
            port=request.url.port,
            target=request.url.raw_path,
        ),
        headers=request.headers.raw,
        content=request.stream,
        extensions=request.extensions,
    )


class HttpcorePool:
    """httpcore's HTTP/1.1 connections (public API) in a :class:`KeepAlivePool`."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        max_connections: int,
        keepalive_expiry: float,
        network_backend: httpcore.NetworkBackend,
    ) -> None:
        self._ssl_context = ssl_context
        self._keepalive_expiry = keepalive_expiry
        self._backend = network_backend
        self._pool: KeepAlivePool[httpcore.HTTPConnection] = KeepAlivePool(
            max_connections=max_connections
        )

    @contextlib.contextmanager
    def stream(
        self,
        method: bytes | str,
        url: httpcore.URL,
        *,
        headers: Sequence[tuple[bytes, bytes]],
        content: bytes,
        extensions: Mapping[str, object],
    ) -> Iterator[httpcore.Response]:
        """Send a request; the block reads the response. Its connection goes back after.

        ``headers`` go out as given: include ``Host`` and ``Content-Length``. Raises
        httpcore's exceptions, and ``httpcore.PoolTimeout`` when no connection frees
        up within the ``"pool"`` timeout of ``extensions``.
        """
        request = httpcore.Request(
            method, url, headers=headers, content=content, extensions=dict(extensions)
        )
        timeouts = extensions.get("timeout")
        wait = timeouts.get("pool") if isinstance(timeouts, dict) else None
        origin = url.origin
        key = (origin.scheme, origin.host, origin.port)
        try:
            connection = self._pool.take(key, wait=wait)
        except ConnectionsBusy as exc:
            raise httpcore.PoolTimeout(str(exc)) from None
        if connection is None:
            connection = httpcore.HTTPConnection(
                origin,
                ssl_context=self._ssl_context,
                keepalive_expiry=self._keepalive_expiry,
                network_backend=self._backend,
            )
        try:
            response = connection.handle_request(request)
            try:
                yield response
            finally:
                response.close()
        finally:
            # A failed connect reads as idle and closed; a response cut short, as closed.
            reusable = connection.is_idle() and not connection.is_closed()
            self._pool.give_back(key, connection, reusable=reusable)

    def close(self) -> None:
        """Close the idle connections; see :meth:`KeepAlivePool.close`."""
        self._pool.close()


def deadline_pool(
    *,
    verify: ssl.SSLContext | bool = True,
    max_connections: int = 100,
    keepalive_expiry: float = 30.0,
    targets: TargetPolicy | None = None,
) -> HttpcorePool:
    """Keep-alive HTTP/1.1 connections (httpcore's, no proxy) on the deadline-aware backend.

    Its requests honour :class:`TotalDeadline`; it raises httpcore's exceptions.
    With ``targets``, every connection goes to an address the policy checked, and a
    refused one raises BlockedTargetError.
    """
    return HttpcorePool(
        ssl_context=httpx.create_ssl_context(verify=verify),
        max_connections=max_connections,
        keepalive_expiry=keepalive_expiry,
        network_backend=_DeadlineBackend(httpcore.SyncBackend(), targets),
    )
