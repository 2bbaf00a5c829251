"""What SocketTransport and AsyncioTransport share around the HTTP/1.1 codec.

Their options, the bytes a :class:`Request` goes out as, and what a parsed answer
or a failed exchange means as an outcome. No I/O: the transports do that.
"""

from __future__ import annotations

import ssl

import httpx

from ._core import Request, Response
from ._http11 import IncompleteResponse, ResponseError, ResponseParser, encode_post
from ._targets import TargetPolicy
from ._transport import DEFAULT_MAX_RESPONSE_BYTES, parse_target
from .exceptions import (
    ConnectError,
    ConnectionBrokenError,
    InvalidInputError,
    InvalidResponseError,
    TransportError,
)

__all__ = ["Http11Options", "Origin", "failure", "request_bytes", "response"]

Origin = tuple[str, str, int]
"""Where to connect: scheme, host (IDNA, IPv6 unbracketed), port."""


class Http11Options:
    """The options both transports take, checked and kept; the TLS context made on
    the first https request."""

    def __init__(
        self,
        *,
        max_connections: int,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        verify: ssl.SSLContext | bool = True,
        targets: TargetPolicy | None = None,
        keepalive_expiry: float,
    ) -> None:
        if max_connections < 1:
            raise InvalidInputError(f"max_connections must be at least 1, not {max_connections}")
        self._max_connections = max_connections
        self._max_response_bytes = max_response_bytes
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None
        self._targets = targets
        self._keepalive_expiry = keepalive_expiry

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_connections={self._max_connections})"

    def _ssl_context(self) -> ssl.SSLContext:
        """``verify`` itself when it is a context; else httpx's (certifi's authorities)."""
        if self._ssl is None:
            verify = self._verify
            self._ssl = (
                verify
                if isinstance(verify, ssl.SSLContext)
                else httpx.create_ssl_context(verify=verify)
            )
        return self._ssl

    def _parser(self) -> ResponseParser:
        return ResponseParser(max_body=self._max_response_bytes)


def request_bytes(request: Request) -> tuple[Origin, bytes] | ConnectError:
    """Where ``request`` goes and its bytes; a ConnectError outcome for a URL that
    cannot be sent to. A header with a line break or NUL raises ValueError."""
    try:
        target, host, origin = parse_target(request.url)
    except (httpx.InvalidURL, ValueError) as exc:
        return ConnectError(f"cannot send to {request.url!r}: {exc}")
    return origin, encode_post(target, host, request.headers, request.body)


def response(parser: ResponseParser) -> Response:
    """The outcome of a complete answer."""
    return Response(status_code=parser.status, headers=parser.headers, body=parser.body)


def failure(exc: ResponseError | IncompleteResponse | OSError) -> TransportError:
    """The outcome of an exchange that broke off after the connection was made."""
    if isinstance(exc, ResponseError):
        return InvalidResponseError(str(exc))
    if isinstance(exc, IncompleteResponse):
        return ConnectionBrokenError(str(exc))
    return ConnectionBrokenError(str(exc) or type(exc).__name__)  # reset, broken pipe, TLS
