"""The transport seam: one method that POSTs a :class:`Request` and returns an outcome.

A transport never raises for a failed attempt; it *returns* a
:class:`~hookdispatch.exceptions.TransportError` describing it, so the driver treats
every outcome the same way. Driver errors (httpx, httpcore, ssl) are translated here.
"""

from __future__ import annotations

import functools
import ssl
from typing import Protocol, runtime_checkable

import httpcore
import httpx

from ._core import Outcome, Request, Response
from ._deadline import TotalDeadline, deadline_pool
from ._targets import TargetPolicy
from .exceptions import (
    BlockedTargetError,
    ConnectError,
    ConnectionBrokenError,
    DeliveryTimeout,
    InvalidResponseError,
    TLSError,
    TransportError,
)

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "AsyncTransport",
    "HttpxTransport",
    "Transport",
    "body_error",
    "parse_target",
    "translate_error",
]

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024


@runtime_checkable
class Transport(Protocol):
    """Sends one request. Implementations must be safe to call from many threads.

    ``send`` returns a :class:`Response` (any status) or a ``TransportError`` for an
    attempt that got no usable response; it must finish within ``request.timeout``
    seconds in total, and keep at most a bounded part of the response body.
    """

    def send(self, request: Request) -> Outcome: ...

    def close(self) -> None: ...


@runtime_checkable
class AsyncTransport(Protocol):
    """Sends one request from the event loop; the async twin of ``Transport``.

    ``send`` returns a :class:`Response` (any status) or a ``TransportError``; it must
    finish within ``request.timeout`` seconds in total, keep at most a bounded part
    of the response body, and never block the event loop.
    """

    async def send(self, request: Request) -> Outcome: ...

    async def aclose(self) -> None: ...


_TIMEOUTS = (httpx.TimeoutException, httpcore.TimeoutException)
_CONNECT = (httpx.ConnectError, httpcore.ConnectError)
_BROKEN = (httpx.ReadError, httpx.WriteError, httpcore.ReadError, httpcore.WriteError)
_PROTOCOL = (httpx.RemoteProtocolError, httpcore.RemoteProtocolError)
_ERRORS = (
    httpx.HTTPError,
    httpcore.ConnectionNotAvailable,
    httpcore.ProtocolError,
    httpcore.NetworkError,
    httpcore.TimeoutException,
    httpcore.UnsupportedProtocol,
    httpx.InvalidURL,
    OSError,
)


def _is_tls(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, ssl.SSLError | ssl.CertificateError):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def body_error(exc: Exception) -> TransportError:
    """An error while reading a body whose head had arrived: the exchange broke off.

    The deadline passing is still a timeout; anything else (reset, close before
    the promised length) is a broken connection, whatever the client called it.
    """
    if isinstance(exc, _TIMEOUTS):
        return DeliveryTimeout(str(exc) or "total deadline exceeded")
    return ConnectionBrokenError(f"connection broke while reading the body: {exc}")


def translate_error(exc: Exception) -> TransportError:
    """Map an httpx/httpcore/OS error of one attempt to our closed set of failures."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, _TIMEOUTS):
        return DeliveryTimeout(message)
    if _is_tls(exc):
        return TLSError(message)
    if isinstance(exc, _CONNECT):
        return ConnectError(message)
    if isinstance(exc, _BROKEN):
        return ConnectionBrokenError(message)
    if isinstance(exc, _PROTOCOL):
        return InvalidResponseError(message)
    return InvalidResponseError(f"{type(exc).__name__}: {message}")


@functools.lru_cache(maxsize=4096)
def parse_target(url: str) -> tuple[bytes, bytes, tuple[str, str, int]]:
    """``url`` parsed as httpx parses it (IDNA, percent-encoding): the request target
    (path and query), the ``Host`` header, and the origin (scheme, host, port).

    Raises httpx.InvalidURL or ValueError for a URL that is not http(s).
    """
    parsed = httpx.URL(url)
    scheme = parsed.scheme
    if scheme not in ("http", "https"):
        raise ValueError(f"the scheme must be http or https, not {scheme!r}")
    port = parsed.port or (443 if scheme == "https" else 80)
    return parsed.raw_path, parsed.netloc, (scheme, parsed.raw_host.decode("ascii"), port)


@functools.lru_cache(maxsize=4096)
def _target(url: str) -> tuple[httpcore.URL, bytes]:
    """The URL as httpx parses it (IDNA, percent-encoding), in httpcore's form, and the
    ``Host`` header httpx would send (httpcore's own leaves IPv6 literals unbracketed)."""
    parsed = httpx.URL(url)
    target = httpcore.URL(
        scheme=parsed.raw_scheme, host=parsed.raw_host, port=parsed.port, target=parsed.raw_path
    )
    return target, parsed.netloc


class HttpxTransport:
    """A transport on httpcore's HTTP/1.1 connections (httpx's own), kept alive and reused.

    Requests go straight to the connections (see ``_connections.KeepAlivePool``): a
    webhook needs none of ``httpx.Client``'s cookies, auth or redirect handling,
    which cost more CPU than the request itself.
    Redirects are never followed (a 3xx is a failed attempt). Each request has a
    *total* deadline of ``request.timeout`` seconds covering connect, TLS, sending,
    waiting and reading the response, enforced at every socket operation. At most
    ``max_response_bytes`` of a response body are read; the rest is discarded with
    the connection. With ``targets`` (a :class:`TargetPolicy`) each connection is
    made to an address the policy checked at that moment; a refused one comes back
    as a BlockedTargetError outcome.
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
        self._max_response_bytes = max_response_bytes
        self._pool = deadline_pool(
            verify=verify,
            max_connections=max_connections,
            targets=targets,
            keepalive_expiry=keepalive_expiry,
        )

    def send(self, request: Request) -> Outcome:
        seconds = request.timeout
        try:
            url, host = _target(request.url)
            headers = [(b"Host", host), (b"Content-Length", b"%d" % len(request.body))]
            headers.extend(
                (name.encode(), value.encode()) for name, value in request.headers.items()
            )
            with (
                TotalDeadline(seconds),
                self._pool.stream(
                    "POST",
                    url,
                    headers=headers,
                    content=request.body,
                    extensions={
                        "timeout": dict.fromkeys(("connect", "read", "write", "pool"), seconds)
                    },
                ) as response,
            ):
                try:
                    body = self._read_capped(response)
                except _ERRORS as exc:
                    return body_error(exc)
                # httpx's Headers: case-insensitive, decoded and joined as httpx does.
                return Response(
                    status_code=response.status, headers=httpx.Headers(response.headers), body=body
                )
        except _ERRORS as exc:
            return translate_error(exc)
        except BlockedTargetError as exc:
            return exc

    def _read_capped(self, response: httpcore.Response) -> bytes:
        limit = self._max_response_bytes
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_stream():
            chunks.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
        return b"".join(chunks)[:limit]

    def close(self) -> None:
        self._pool.close()

    def __repr__(self) -> str:
        return f"HttpxTransport(max_response_bytes={self._max_response_bytes})"
