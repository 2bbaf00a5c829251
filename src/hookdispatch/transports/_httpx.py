"""Transports on httpx's own HTTP/1.1 stack (httpcore and h11), sync and async.

For applications that standardise on httpx; the defaults (``SocketTransport``,
``AsyncioTransport``) are several times cheaper per request. Both speak to
httpcore's public API only:

* ``HttpxTransport`` keeps httpcore ``HTTPConnection``\\ s in our
  :class:`~._pool.KeepAlivePool` (a webhook needs none of ``httpx.Client``'s
  cookies, auth or redirect handling, which cost more CPU than the request) on a
  network backend whose sockets come from :func:`~._connect.connect`, so the target
  policy is checked on the address connected to, and every socket operation is
  bounded by the request's :class:`~._deadline.Deadline`.
* ``AsyncHttpxTransport`` is an ``httpx.AsyncClient`` whose connections open
  through :func:`~._connect.aconnect`, one httpcore pool per target policy, each
  request cut by a :class:`~._deadline.DeadlineWatch`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.cookiejar
import socket
import ssl
import threading
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import httpcore
import httpx

from .._core import Outcome, Request, Response
from .._targets import TargetPolicy
from ..exceptions import TransportError
from ._base import CappedBody
from ._connect import aconnect, connect, readable
from ._deadline import Deadline, DeadlineWatch, Expired, current_deadline, timed_out
from ._errors import HTTPX_ERRORS, httpx_body_error, translate_httpx
from ._options import TransportOptions, target_of
from ._pool import ConnectionsBusy, KeepAlivePool

__all__ = ["AsyncHttpxTransport", "HttpxTransport"]

_CHUNK = 64 * 1024  # bytes written per call: the deadline is checked between


def _left(timeout: float | None, error: type[Exception]) -> float | None:
    """``timeout`` bounded by what is left of the current deadline."""
    deadline = current_deadline()
    if deadline is None:
        return timeout
    try:
        left = deadline.left()
    except Expired:
        raise error("total deadline exceeded") from None
    return left if timeout is None else min(timeout, left)


class _SocketStream(httpcore.NetworkStream):
    """A connected socket, as httpcore reads and writes it, under the current deadline."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            self._sock.settimeout(_left(timeout, httpcore.ReadTimeout))
            return self._sock.recv(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc) or "read timed out") from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        view = memoryview(buffer)
        try:
            for start in range(0, len(view), _CHUNK):  # the deadline is checked between
                self._sock.settimeout(_left(timeout, httpcore.WriteTimeout))
                self._sock.sendall(view[start : start + _CHUNK])
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc) or "write timed out") from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc) or type(exc).__name__) from exc

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        try:
            self._sock.settimeout(_left(timeout, httpcore.ConnectTimeout))
            return _SocketStream(
                ssl_context.wrap_socket(self._sock, server_hostname=server_hostname)
            )
        except TimeoutError as exc:
            self.close()
            raise httpcore.ConnectTimeout(str(exc) or "TLS handshake timed out") from exc
        except OSError as exc:  # ssl.SSLError too: translate_httpx finds it in the chain
            self.close()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._sock._sslobj if isinstance(self._sock, ssl.SSLSocket) else None  # type: ignore[attr-defined]
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "socket":
            return self._sock
        if info == "is_readable":
            try:
                return readable(self._sock)
            except (OSError, ValueError):
                return True
        return None


class _PolicyBackend(httpcore.NetworkBackend):
    """httpcore's sockets, opened by :func:`~._connect.connect` under one policy."""

    def __init__(self, policy: TargetPolicy) -> None:
        self._policy = policy

    def connect_tcp(self, host: str, port: int, *_: Any, **options: Any) -> httpcore.NetworkStream:
        timeout = options.get("timeout")
        deadline = current_deadline() or Deadline(timeout if timeout is not None else 5.0)
        try:
            sock = connect(
                ("http", host, port), policy=self._policy, deadline=deadline, ssl_context=None
            )
        except Expired:
            raise httpcore.ConnectTimeout("total deadline exceeded") from None
        return _SocketStream(sock)

    def connect_unix_socket(self, path: str, *_: Any, **__: Any) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not webhook targets")

    def sleep(self, seconds: float) -> None:  # pragma: no cover - pool retries are off
        raise NotImplementedError


@functools.lru_cache(maxsize=4096)
def _target(url: str) -> tuple[httpcore.URL, bytes]:
    """The URL as :func:`~._options.target_of` reads it (httpx's parser), in httpcore's
    form, and the ``Host`` header httpx would send. Raises ConnectError."""
    target = target_of(url)
    core_url = httpcore.URL(
        scheme=target.scheme.encode(),
        host=target.host.encode(),
        port=target.port,
        target=target.target,
    )
    return core_url, target.host_header


class HttpxTransport(TransportOptions):
    """A transport on httpcore's HTTP/1.1 connections (httpx's own), kept alive and reused.

    Redirects are never followed (a 3xx is a failed attempt). Each request has a
    *total* deadline of ``request.timeout`` seconds covering connect, TLS, sending,
    waiting and reading the response, enforced at every socket operation. At most
    ``max_response_bytes`` of a response body are read; the rest is discarded with
    the connection. Each connection is made to an address the request's target
    policy checked at that moment (``targets`` for requests without one, else the
    default policy); a refused one comes back as a BlockedTargetError outcome.
    Safe to share between threads.
    """

    def _setup(self) -> None:
        self._backends: dict[TargetPolicy, _PolicyBackend] = {}
        self._backends_lock = threading.Lock()
        self._pool: KeepAlivePool[httpcore.HTTPConnection] = KeepAlivePool(
            max_connections=self._max_connections
        )

    def _backend(self, policy: TargetPolicy) -> _PolicyBackend:
        backend = self._backends.get(policy)
        if backend is None:
            with self._backends_lock:
                backend = self._backends.setdefault(policy, _PolicyBackend(policy))
        return backend

    def send(self, request: Request) -> Outcome:
        seconds = request.timeout
        try:
            policy = self._policy(request)
            url, host = _target(request.url)
            headers = [(b"Host", host), (b"Content-Length", b"%d" % len(request.body))]
            headers.extend(
                (name.encode(), value.encode()) for name, value in request.headers.items()
            )
            with Deadline(seconds) as deadline:
                return self._exchange(policy, url, headers, request.body, deadline)
        except HTTPX_ERRORS as exc:
            return translate_httpx(exc)
        except TransportError as exc:  # the connect path's: refused, unresolvable
            return exc

    def _exchange(
        self,
        policy: TargetPolicy,
        url: httpcore.URL,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        deadline: Deadline,
    ) -> Outcome:
        origin = url.origin
        key = ((origin.scheme, origin.host, origin.port), policy)
        try:
            connection = self._pool.take(key, wait=deadline.remaining())
        except ConnectionsBusy:
            return timed_out(deadline.seconds)
        if connection is None:
            connection = httpcore.HTTPConnection(
                origin,
                ssl_context=self._ssl_context(),
                keepalive_expiry=self._keepalive_expiry,
                network_backend=self._backend(policy),
            )
        timeouts = dict.fromkeys(("connect", "read", "write", "pool"), deadline.seconds)
        request = httpcore.Request(
            b"POST", url, headers=headers, content=body, extensions={"timeout": timeouts}
        )
        try:
            response = connection.handle_request(request)
            try:
                capped = CappedBody(self._max_response_bytes)
                try:
                    for chunk in response.iter_stream():
                        if capped.add(chunk):
                            break
                except HTTPX_ERRORS as exc:
                    return httpx_body_error(exc)
                # httpx's Headers: case-insensitive, decoded and joined as httpx does.
                return Response(
                    status_code=response.status,
                    headers=httpx.Headers(response.headers),
                    body=capped.value(),
                )
            finally:
                response.close()
        finally:
            # A failed connect reads as idle and closed; a response cut short, as closed.
            reusable = connection.is_idle() and not connection.is_closed()
            self._pool.give_back(key, connection, reusable=reusable)

    def close(self) -> None:
        """Close the idle connections; those in use close when their exchange ends."""
        self._pool.close()


class _AsyncPolicyBackend(httpcore.AsyncNetworkBackend):
    """httpcore's async sockets, opened through :func:`~._connect.aconnect` under one policy."""

    def __init__(self, policy: TargetPolicy) -> None:
        self._backend = httpcore.AnyIOBackend()
        self._policy = policy

    async def connect_tcp(
        self, host: str, port: int, *_: Any, **options: Any
    ) -> httpcore.AsyncNetworkStream:
        backend = self._backend

        async def connect_to(address: str) -> httpcore.AsyncNetworkStream:
            return await backend.connect_tcp(address, port, **options)

        return await aconnect(
            ("http", host, port),
            policy=self._policy,
            connect_to=connect_to,
            errors=(httpcore.ConnectError, OSError),
        )

    async def connect_unix_socket(
        self, path: str, *_: Any, **__: Any
    ) -> httpcore.AsyncNetworkStream:  # pragma: no cover - endpoints are URLs
        raise httpcore.ConnectError("unix sockets are not webhook targets")

    async def sleep(self, seconds: float) -> None:  # pragma: no cover - no pool retries
        await self._backend.sleep(seconds)


class _AsyncResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        aclose = getattr(self._stream, "aclose", None)
        if aclose is not None:
            await aclose()


_POLICY = "hookdispatch.targets"  # the request extension that carries its policy


class _PolicyPools(httpx.AsyncBaseTransport):
    """httpcore's async pools, one per target policy (a connection serves only
    requests under the policy it was opened under)."""

    def __init__(
        self, *, ssl_context: ssl.SSLContext, max_connections: int, keepalive_expiry: float
    ) -> None:
        self._ssl_context = ssl_context
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._pools: dict[TargetPolicy, httpcore.AsyncConnectionPool] = {}

    def _pool(self, policy: TargetPolicy) -> httpcore.AsyncConnectionPool:
        pool = self._pools.get(policy)
        if pool is None:
            pool = self._pools[policy] = httpcore.AsyncConnectionPool(
                ssl_context=self._ssl_context,
                max_connections=self._max_connections,
                max_keepalive_connections=self._max_connections,
                keepalive_expiry=self._keepalive_expiry,
                network_backend=_AsyncPolicyBackend(policy),
            )
        return pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        policy = request.extensions[_POLICY]
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions={k: v for k, v in request.extensions.items() if k != _POLICY},
        )
        response = await self._pool(policy).handle_async_request(core_request)
        assert isinstance(response.stream, AsyncIterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_AsyncResponseStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()


class AsyncHttpxTransport(TransportOptions):
    """An async transport on ``httpx.AsyncClient``, for applications that prefer httpx.

    The guarantees of the other transports (total deadline, bounded body, no
    redirects, the request's target policy on every connection), at httpx's
    async speed (about a tenth of ``AsyncioTransport``'s on our benchmark).
    """

    def _setup(self) -> None:
        self._deadlines = DeadlineWatch()
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _open(self) -> httpx.AsyncClient:
        """The client of the running loop, made on first use there (also after
        :meth:`aclose`); one made in an earlier loop, which is gone, is dropped."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(
                follow_redirects=False,
                trust_env=False,
                transport=_PolicyPools(
                    ssl_context=self._ssl_context(),
                    max_connections=self._max_connections,
                    keepalive_expiry=self._keepalive_expiry,
                ),
            )
            # A receiver's Set-Cookie is never sent back (to it or any other).
            self._client.cookies.jar.set_policy(
                http.cookiejar.DefaultCookiePolicy(allowed_domains=[])
            )
            self._loop = loop
        return self._client

    async def send(self, request: Request) -> Outcome:
        return await self._deadlines.run(request.timeout, self._post(request))

    async def _post(self, request: Request) -> Outcome:
        try:
            policy = self._policy(request)
            url, _ = _target(request.url)
            client = self._open()
            http_request = client.build_request(
                "POST",
                httpx.URL(
                    scheme=url.scheme.decode(),
                    host=url.host.decode(),
                    port=url.port,
                    raw_path=url.target,
                ),
                headers=request.headers,
                content=request.body,
                extensions={_POLICY: policy},
            )
            response = await client.send(http_request, stream=True)
            capped = CappedBody(self._max_response_bytes)
            try:
                async for chunk in response.aiter_raw():
                    if capped.add(chunk):
                        break
            except HTTPX_ERRORS as exc:
                return httpx_body_error(exc)
            finally:
                await response.aclose()
        except HTTPX_ERRORS as exc:
            return translate_httpx(exc)
        except TransportError as exc:  # the connect path's: refused, unresolvable
            return exc
        return Response(
            status_code=response.status_code, headers=response.headers, body=capped.value()
        )

    async def aclose(self) -> None:
        self._deadlines.close()
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose()
