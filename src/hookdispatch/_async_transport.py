"""Async transports on client libraries: aiohttp and httpx, behind ``AsyncTransport``.

The default async transport is :class:`~hookdispatch.AsyncioTransport` (in
``_asyncio_transport``), which needs neither. These two are for applications that
already configure aiohttp or httpx. Measured against the same local receiver,
aiohttp sends about 10x more requests per second than ``httpx.AsyncClient`` and 3x
more than httpx over the ``httpx-aiohttp`` transport (``benchmarks/``).

Both enforce the total deadline by cancelling the whole exchange (connect, TLS,
send, wait, read) at once: AiohttpTransport with one :class:`DeadlineWatch` timer
for all its requests, AsyncHttpxTransport with ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import functools
import http.cookiejar
import socket
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from urllib.parse import urlsplit

import aiohttp
import aiohttp.abc
import httpcore
import httpx
import yarl

from ._async_deadline import DeadlineWatch
from ._core import Outcome, Request, Response
from ._deadline import to_httpcore
from ._targets import TargetPolicy, literal_address
from ._transport import DEFAULT_MAX_RESPONSE_BYTES, body_error, translate_error
from .exceptions import (
    BlockedTargetError,
    ConnectError,
    ConnectionBrokenError,
    DeliveryTimeout,
    InvalidResponseError,
    TLSError,
    TransportError,
)

__all__ = ["AiohttpTransport", "AsyncHttpxTransport"]


def _timeout(request: Request) -> DeliveryTimeout:
    return DeliveryTimeout(f"no complete response within {request.timeout:g} s")


def _translate_aiohttp(exc: aiohttp.ClientError) -> TransportError:
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ClientSSLError | aiohttp.ServerFingerprintMismatch):
        return TLSError(message)
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.InvalidURL):
        return ConnectError(message)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        return ConnectionBrokenError(message)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return DeliveryTimeout(message)
    return InvalidResponseError(message)


class _Blocked(OSError):
    """Carries a BlockedTargetError through aiohttp, which expects resolvers' OSErrors."""


class _PolicyResolver(aiohttp.abc.AbstractResolver):
    """Resolves through the target policy: only checked addresses reach the connector."""

    def __init__(self, targets: TargetPolicy) -> None:
        self._targets = targets

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        loop = asyncio.get_running_loop()
        try:
            addresses = await loop.run_in_executor(None, self._targets.resolve, host, port)
        except BlockedTargetError as exc:
            raise _Blocked(str(exc)) from exc
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        return None


def _blocked_literal(url: str, targets: TargetPolicy | None) -> BlockedTargetError | None:
    """aiohttp skips the resolver for IP literals, so check those before connecting."""
    if targets is None:
        return None
    refusal = _literal_refusal(targets, url)
    return None if refusal is None else BlockedTargetError(refusal)


@functools.lru_cache(maxsize=4096)
def _literal_refusal(targets: TargetPolicy, url: str) -> str | None:
    address = literal_address(urlsplit(url).hostname or "")
    if address is not None and targets.blocks(address):
        return f"{address} is refused by the target policy"
    return None


@functools.lru_cache(maxsize=4096)
def _parsed(url: str) -> yarl.URL:
    """The URL as aiohttp parses it, once per endpoint URL instead of per request."""
    return yarl.URL(url)


class AiohttpTransport:
    """An async transport on one pooled ``aiohttp.ClientSession``.

    Redirects are never followed; at most ``max_response_bytes`` of a body are read;
    each request is cut at ``request.timeout`` seconds in total. With ``targets``
    host names resolve through the :class:`TargetPolicy`, so only checked addresses
    are connected to. The session is created on first use, inside the running loop.
    """

    def __init__(
        self,
        *,
        max_connections: int = 100,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        verify: ssl.SSLContext | bool = True,
        targets: TargetPolicy | None = None,
    ) -> None:
        self._max_connections = max_connections
        self._max_response_bytes = max_response_bytes
        self._ssl = verify
        self._targets = targets
        self._session: aiohttp.ClientSession | None = None
        self._deadlines = DeadlineWatch()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                ssl=self._ssl,
                resolver=None if self._targets is None else _PolicyResolver(self._targets),
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),  # the DeadlineWatch bounds each send
                auto_decompress=False,
                trust_env=False,
                # A receiver's Set-Cookie is never sent back (to it or any other).
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._deadlines = DeadlineWatch()  # its timer belongs to this loop
        return self._session

    async def send(self, request: Request) -> Outcome:
        blocked = _blocked_literal(request.url, self._targets)
        if blocked is not None:
            return blocked
        session = self._open()
        with self._deadlines.watch(request.timeout) as expiry:
            try:
                return await self._post(session, request)
            except asyncio.CancelledError:
                if expiry.timed_out():
                    return _timeout(request)
                raise

    async def _post(self, session: aiohttp.ClientSession, request: Request) -> Outcome:
        try:
            async with session.post(
                _parsed(request.url),
                data=request.body,
                headers=request.headers,
                allow_redirects=False,
            ) as response:
                try:
                    body = await self._read_capped(response)
                except aiohttp.ClientError as exc:
                    return ConnectionBrokenError(f"connection broke while reading the body: {exc}")
                # aiohttp's headers are a case-insensitive mapping already: no copy.
                return Response(status_code=response.status, headers=response.headers, body=body)
        except TimeoutError:  # aiohttp's own timeouts are off; kept as a safety net
            return _timeout(request)
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, _Blocked) and isinstance(
                exc.os_error.__cause__, BlockedTargetError
            ):
                return exc.os_error.__cause__
            return _translate_aiohttp(exc)
        except aiohttp.ClientError as exc:
            return _translate_aiohttp(exc)
        except (OSError, ValueError) as exc:
            return InvalidResponseError(f"{type(exc).__name__}: {exc}")

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self._max_response_bytes
        length = response.content_length
        if length is not None and length <= limit:
            # aiohttp's parser stops at Content-Length, so one read is bounded.
            return await response.read()
        chunks: list[bytes] = []
        size = 0
        while size < limit:
            chunk = await response.content.read(limit - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        self._deadlines.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def __repr__(self) -> str:
        return f"AiohttpTransport(max_connections={self._max_connections})"


class _AsyncPolicyBackend(httpcore.AsyncNetworkBackend):
    """httpcore's async backend, connecting only to addresses the policy checked."""

    def __init__(self, targets: TargetPolicy) -> None:
        self._backend = httpcore.AnyIOBackend()
        self._targets = targets

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            addresses = await loop.run_in_executor(None, self._targets.resolve, host, port)
        except OSError as exc:  # the name did not resolve
            raise httpcore.ConnectError(str(exc)) from exc
        last_error: Exception | None = None
        for address in addresses:
            try:
                return await self._backend.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
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


class _PolicyAsyncHTTPTransport(httpx.AsyncBaseTransport):
    """The async twin of ``deadline_pool``: httpcore's pool, our backend."""

    def __init__(
        self, *, verify: ssl.SSLContext | bool, max_connections: int, targets: TargetPolicy
    ) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            network_backend=_AsyncPolicyBackend(targets),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        response = await self._pool.handle_async_request(to_httpcore(request))
        assert isinstance(response.stream, AsyncIterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_AsyncResponseStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


class AsyncHttpxTransport:
    """An async transport on ``httpx.AsyncClient``, for applications that prefer httpx.

    Same guarantees as :class:`AiohttpTransport`, at httpx's async speed (about a
    tenth of aiohttp's on our benchmark).
    """

    def __init__(
        self,
        *,
        max_connections: int = 100,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        verify: ssl.SSLContext | bool = True,
        targets: TargetPolicy | None = None,
    ) -> None:
        self._max_response_bytes = max_response_bytes
        transport = (
            None
            if targets is None
            else _PolicyAsyncHTTPTransport(
                verify=verify, max_connections=max_connections, targets=targets
            )
        )
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._client = httpx.AsyncClient(
            limits=limits,
            verify=verify,
            follow_redirects=False,
            trust_env=False,
            transport=transport,
        )
        # A receiver's Set-Cookie is never sent back (to it or any other).
        self._client.cookies.jar.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))

    async def send(self, request: Request) -> Outcome:
        try:
            async with asyncio.timeout(request.timeout):
                http_request = self._client.build_request(
                    "POST", request.url, headers=request.headers, content=request.body
                )
                response = await self._client.send(http_request, stream=True)
                chunks: list[bytes] = []
                size = 0
                try:
                    async for chunk in response.aiter_raw():
                        chunks.append(chunk)
                        size += len(chunk)
                        if size >= self._max_response_bytes:
                            break
                except (httpx.HTTPError, OSError) as exc:
                    return body_error(exc)
                finally:
                    await response.aclose()
        except TimeoutError:
            return _timeout(request)
        except (httpx.HTTPError, httpcore.ProtocolError, httpcore.NetworkError, OSError) as exc:
            return translate_error(exc)
        except BlockedTargetError as exc:
            return exc
        body = b"".join(chunks)[: self._max_response_bytes]
        return Response(status_code=response.status_code, headers=response.headers, body=body)

    async def aclose(self) -> None:
        await self._client.aclose()

    def __repr__(self) -> str:
        return "AsyncHttpxTransport()"
