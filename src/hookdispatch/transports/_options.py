"""What the transports share that is not I/O: their options, checked and kept, and
(for the two on the HTTP/1.1 codec) the bytes a :class:`Request` goes out as.
"""

from __future__ import annotations

import functools
import ssl

import httpx

from .._core import Request, Response
from .._targets import TargetPolicy
from .._urls import Target, parse_url
from ..exceptions import ConnectError, InvalidEndpointError, InvalidInputError
from ._base import DEFAULT_MAX_RESPONSE_BYTES
from ._connect import Origin, policy_for
from ._http11 import ResponseParser, encode_post

__all__ = ["TransportOptions", "request_bytes", "response", "target_of"]


class TransportOptions:
    """The options every shipped transport takes, checked once and kept.

    * ``max_connections``: open at once (100); a request waits for a free one
      within its deadline.
    * ``max_response_bytes``: how much of a response body is kept (64 KiB).
    * ``verify``: certificate verification as httpx does it: True (certifi's
      authorities), False, or your own ``ssl.SSLContext`` (a private CA).
    * ``targets``: the :class:`TargetPolicy` for requests that carry none (the
      dispatchers always set theirs); without either, the default policy applies.
    * ``keepalive_expiry``: seconds an idle connection is kept (30; 15 for
      ``AsyncioTransport``).

    A transport sets up its own state in ``_setup``, called last.
    """

    _KEEPALIVE_EXPIRY = 30.0

    def __init__(
        self,
        *,
        max_connections: int = 100,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        verify: ssl.SSLContext | bool = True,
        targets: TargetPolicy | None = None,
        keepalive_expiry: float | None = None,
    ) -> None:
        if max_connections < 1:
            raise InvalidInputError(f"max_connections must be at least 1, not {max_connections}")
        if max_response_bytes < 0:
            raise InvalidInputError(
                f"max_response_bytes must be 0 or more, not {max_response_bytes}"
            )
        if keepalive_expiry is None:
            keepalive_expiry = self._KEEPALIVE_EXPIRY
        if not keepalive_expiry >= 0:  # NaN too
            raise InvalidInputError(
                f"keepalive_expiry must be a number of seconds, not {keepalive_expiry}"
            )
        self._max_connections = max_connections
        self._max_response_bytes = max_response_bytes
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None
        self._targets = targets
        self._keepalive_expiry = keepalive_expiry
        self._setup()

    def _setup(self) -> None:
        """The transport's own state (pools, clients), from the options."""

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

    def _policy(self, request: Request) -> TargetPolicy:
        """The policy ``request`` is held to (see :func:`~._connect.policy_for`)."""
        return policy_for(request, self._targets)

    def _parser(self) -> ResponseParser:
        return ResponseParser(max_body=self._max_response_bytes)


def target_of(url: str) -> Target:
    """Where ``url`` sends to, read by :func:`~hookdispatch._urls.parse_url` (the
    parser registration uses too). Raises ConnectError for a URL that cannot be sent
    to; the message does not repeat the URL."""
    try:
        return parse_url(url)
    except InvalidEndpointError as exc:
        raise ConnectError(f"cannot send to this endpoint URL: {exc}") from None


@functools.lru_cache(maxsize=4096)
def _wire_target(url: str) -> tuple[bytes, bytes, Origin]:
    """The request target, ``Host`` header and origin of ``url``."""
    target = target_of(url)
    return target.target, target.host_header, (target.scheme, target.host, target.port)


def request_bytes(request: Request) -> tuple[Origin, bytes] | ConnectError:
    """Where ``request`` goes and its bytes; a ConnectError outcome for a URL that
    cannot be sent to (see :func:`target_of`). A header with a line break or NUL
    raises InvalidInputError."""
    try:
        target, host, origin = _wire_target(request.url)
    except ConnectError as exc:
        return exc
    return origin, encode_post(target, host, request.headers, request.body)


def response(parser: ResponseParser) -> Response:
    """The outcome of a complete answer."""
    return Response(status_code=parser.status, headers=parser.headers, body=parser.body)
