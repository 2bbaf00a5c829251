"""What a failed exchange means, as the closed set of :class:`TransportError` outcomes.

One translation per source of errors: the HTTP/1.1 codec and the sockets under
it (:func:`exchange_failure`), and httpx/httpcore (:func:`translate_httpx`,
:func:`httpx_body_error`). aiohttp's lives with :mod:`._aiohttp`, which alone
imports it. The connect path (:mod:`._connect`) raises these outcomes itself.
Messages never name the endpoint URL (it may carry a token).
"""

from __future__ import annotations

import ssl

import httpcore
import httpx

from .._core import without_url
from ..exceptions import (
    ConnectError,
    ConnectionBrokenError,
    DeliveryTimeout,
    InvalidResponseError,
    TLSError,
    TransportError,
)
from ._http11 import IncompleteResponse, ResponseError

__all__ = [
    "HTTPX_ERRORS",
    "error_without_url",
    "exchange_failure",
    "httpx_body_error",
    "translate_httpx",
]


def exchange_failure(exc: ResponseError | IncompleteResponse | OSError) -> TransportError:
    """The outcome of an exchange that broke off after the connection was made."""
    if isinstance(exc, ResponseError):
        return InvalidResponseError(str(exc))
    if isinstance(exc, IncompleteResponse):
        return ConnectionBrokenError(str(exc))
    return ConnectionBrokenError(str(exc) or type(exc).__name__)  # reset, broken pipe, TLS


_TIMEOUTS = (httpx.TimeoutException, httpcore.TimeoutException)
_CONNECT = (httpx.ConnectError, httpcore.ConnectError)
_BROKEN = (httpx.ReadError, httpx.WriteError, httpcore.ReadError, httpcore.WriteError)
_PROTOCOL = (httpx.RemoteProtocolError, httpcore.RemoteProtocolError)

HTTPX_ERRORS = (
    httpx.HTTPError,
    httpx.InvalidURL,
    httpcore.ConnectionNotAvailable,
    httpcore.ProtocolError,
    httpcore.NetworkError,
    httpcore.TimeoutException,
    httpcore.UnsupportedProtocol,
    OSError,
    ValueError,  # h11's LocalProtocolError is one; so is a malformed length
)
"""What httpx and httpcore raise for one attempt (``except HTTPX_ERRORS``)."""


def _is_tls(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, ssl.SSLError | ssl.CertificateError):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def httpx_body_error(exc: Exception) -> TransportError:
    """An error while reading a body whose head had arrived: the exchange broke off.

    The deadline passing is still a timeout; anything else (reset, close before
    the promised length) is a broken connection, whatever the client called it.
    """
    if isinstance(exc, _TIMEOUTS):
        return DeliveryTimeout(str(exc) or "total deadline exceeded")
    return ConnectionBrokenError(f"connection broke while reading the body: {exc}")


def translate_httpx(exc: Exception) -> TransportError:
    """Map an httpx/httpcore/OS error of one attempt to our closed set of failures."""
    if isinstance(exc, TransportError):  # raised by our connect path, through httpcore
        return exc
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


def error_without_url(error: TransportError, *urls: str) -> TransportError:
    """``error``, its message cleared of every spelling in ``urls`` of the endpoint URL
    (a client library's message may quote it, token and all)."""
    message = without_url(str(error), *urls)
    return error if message == str(error) else type(error)(message)
