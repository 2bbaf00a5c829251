"""Async transports: the same one-method seam as ``Transport``, awaited.

:class:`AiohttpTransport` is the default: measured against the same local receiver,
aiohttp sends about 10x more requests per second than ``httpx.AsyncClient`` and 3x
more than httpx over the ``httpx-aiohttp`` transport (``benchmarks/``).
:class:`AsyncHttpxTransport` is there for applications that configure httpx.

Both enforce the total deadline with ``asyncio.timeout``, which cancels the whole
exchange (connect, TLS, send, wait, read) at once.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Protocol, runtime_checkable

import aiohttp
import httpx

from ._core import Outcome, Request, Response
from ._transport import DEFAULT_MAX_RESPONSE_BYTES, body_error, translate_error
from .exceptions import (
    ConnectError,
    ConnectionBrokenError,
    DeliveryTimeout,
    InvalidResponseError,
    TLSError,
    TransportError,
)

__all__ = ["AiohttpTransport", "AsyncHttpxTransport", "AsyncTransport"]


@runtime_checkable
class AsyncTransport(Protocol):
    """Sends one request from the event loop; the async twin of ``Transport``.

    ``send`` returns a :class:`Response` (any status) or a ``TransportError``; it must
    finish within ``request.timeout`` seconds in total, keep at most a bounded part
    of the response body, and never block the event loop.
    """

    async def send(self, request: Request) -> Outcome: ...

    async def aclose(self) -> None: ...


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


class AiohttpTransport:
    """The default async transport: one pooled ``aiohttp.ClientSession``.

    Redirects are never followed; at most ``max_response_bytes`` of a body are read;
    each request is cut at ``request.timeout`` seconds in total. The session is
    created on first use, inside the running event loop.
    """

    def __init__(
        self,
        *,
        max_connections: int = 100,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self._max_connections = max_connections
        self._max_response_bytes = max_response_bytes
        self._ssl = verify
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, limit_per_host=0, ssl=self._ssl
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),  # asyncio.timeout bounds each send
                auto_decompress=False,
                trust_env=False,
            )
        return self._session

    async def send(self, request: Request) -> Outcome:
        session = self._open()
        try:
            async with (
                asyncio.timeout(request.timeout),
                session.post(
                    request.url,
                    data=request.body,
                    headers=dict(request.headers),
                    allow_redirects=False,
                ) as response,
            ):
                try:
                    body = await self._read_capped(response)
                except aiohttp.ClientError as exc:
                    return ConnectionBrokenError(f"connection broke while reading the body: {exc}")
                return Response(
                    status_code=response.status,
                    headers={key.lower(): value for key, value in response.headers.items()},
                    body=body,
                )
        except TimeoutError:
            return _timeout(request)
        except aiohttp.ClientError as exc:
            return _translate_aiohttp(exc)
        except (OSError, ValueError) as exc:
            return InvalidResponseError(f"{type(exc).__name__}: {exc}")

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self._max_response_bytes
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
        if self._session is not None:
            await self._session.close()
            self._session = None

    def __repr__(self) -> str:
        return f"AiohttpTransport(max_connections={self._max_connections})"


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
    ) -> None:
        self._max_response_bytes = max_response_bytes
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._client = httpx.AsyncClient(
            limits=limits, verify=verify, follow_redirects=False, trust_env=False
        )

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
        except (httpx.HTTPError, OSError) as exc:
            return translate_error(exc)
        body = b"".join(chunks)[: self._max_response_bytes]
        return Response(status_code=response.status_code, headers=response.headers, body=body)

    async def aclose(self) -> None:
        await self._client.aclose()

    def __repr__(self) -> str:
        return "AsyncHttpxTransport()"
