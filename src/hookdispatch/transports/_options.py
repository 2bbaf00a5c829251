"""What SocketTransport and AsyncioTransport share around the HTTP/1.1 codec.

Their options, checked and kept, and the bytes a :class:`Request` goes out as.
No I/O: the transports do that.
"""

from __future__ import annotations

import functools
import ssl

import httpx

from .._core import Request, Response
from .._targets import TargetPolicy
from ..exceptions import ConnectError, InvalidInputError
from ._base import DEFAULT_MAX_RESPONSE_BYTES
from ._connect import Origin
from ._http11 import ResponseParser, encode_post

__all__ = ["Http11Options", "parse_target", "request_bytes", "response"]


def check_limits(*, max_connections: int, max_response_bytes: int) -> None:
    """Raise InvalidInputError for limits no transport can work with."""
    if max_connections < 1:
        raise InvalidInputError(f"max_connections must be at least 1, not {max_connections}")
    if max_response_bytes < 0:
        raise InvalidInputError(f"max_response_bytes must be 0 or more, not {max_response_bytes}")


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
        check_limits(max_connections=max_connections, max_response_bytes=max_response_bytes)
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


@functools.lru_cache(maxsize=4096)
def parse_target(url: str) -> tuple[bytes, bytes, Origin]:
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


def request_bytes(request: Request) -> tuple[Origin, bytes] | ConnectError:
    """Where ``request`` goes and its bytes; a ConnectError outcome for a URL that
    cannot be sent to. A header with a line break or NUL raises InvalidInputError."""
    try:
        target, host, origin = parse_target(request.url)
    except (httpx.InvalidURL, ValueError, UnicodeError) as exc:
        return ConnectError(f"cannot send to this endpoint URL: {exc}")
    return origin, encode_post(target, host, request.headers, request.body)


def response(parser: ResponseParser) -> Response:
    """The outcome of a complete answer."""
    return Response(status_code=parser.status, headers=parser.headers, body=parser.body)
