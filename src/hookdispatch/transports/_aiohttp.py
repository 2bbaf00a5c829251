"""AiohttpTransport: an async transport on aiohttp, for applications built on it.

Install with ``pip install 'hookdispatch[aiohttp]'``; nothing else imports
aiohttp. The default async transport, :class:`~hookdispatch.AsyncioTransport`,
costs less CPU per request (``benchmarks/``).

aiohttp connects by itself, so the target policy reaches it through its resolver:
one ``ClientSession`` per policy, whose resolver is :func:`~._connect.aresolve`
(only addresses the policy allows reach the connector); IP literals, which
aiohttp never resolves, are checked before the request. The total deadline cuts
the whole exchange (connect, TLS, send, wait, read) at once, on a
:class:`~._deadline.DeadlineWatch`. aiohttp's errors are translated here, once.
"""

from __future__ import annotations

import asyncio
import functools
import socket

from .._core import Outcome, Request, Response
from .._targets import TargetPolicy, literal_address
from ..exceptions import (
    ConnectError,
    ConnectionBrokenError,
    DeliveryTimeout,
    InvalidResponseError,
    MissingDependencyError,
    TLSError,
    TransportError,
)
from ._base import CappedBody
from ._connect import aresolve, resolve
from ._deadline import DeadlineWatch, timed_out
from ._errors import error_without_url
from ._options import TransportOptions, target_of

try:
    import aiohttp
    import aiohttp.abc
    import yarl
except ImportError as exc:  # pragma: no cover - the extra is installed in our tests
    raise MissingDependencyError(
        "AiohttpTransport needs aiohttp: pip install 'hookdispatch[aiohttp]'"
    ) from exc

__all__ = ["AiohttpTransport"]


def _translate(exc: aiohttp.ClientError) -> TransportError:
    """aiohttp's error for one attempt, as our closed set of failures."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, _Refused):
        return exc.os_error.error
    if isinstance(exc, aiohttp.ClientSSLError | aiohttp.ServerFingerprintMismatch):
        return TLSError(message)
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.InvalidURL):
        return ConnectError(message)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        return ConnectionBrokenError(message)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return DeliveryTimeout(message)
    return InvalidResponseError(message)


class _Refused(OSError):
    """Carries the connect path's error through aiohttp, which expects OSErrors."""

    def __init__(self, error: TransportError) -> None:
        super().__init__(str(error))
        self.error = error


class _PolicyResolver(aiohttp.abc.AbstractResolver):
    """Resolves through :func:`~._connect.aresolve`: only allowed addresses come back."""

    def __init__(self, policy: TargetPolicy) -> None:
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        try:
            addresses = await aresolve(self._policy, host, port)
        except TransportError as exc:
            raise _Refused(exc) from exc
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


@functools.lru_cache(maxsize=4096)
def _parsed(url: str) -> tuple[yarl.URL, str, int]:
    """The URL as :func:`~._options.target_of` reads it (the parser every transport and
    the registration check share), in aiohttp's form; its host and port."""
    target = target_of(url)
    path, _, query = target.target.decode("ascii").partition("?")
    host = f"[{target.host}]" if ":" in target.host else target.host
    built = yarl.URL.build(
        scheme=target.scheme,
        host=host,
        port=target.port,
        path=path,
        query_string=query,
        encoded=True,
    )
    return built, target.host, target.port


def _spelled(url: str) -> str:
    """``url`` as aiohttp writes it in its messages ("" if it cannot be parsed)."""
    try:
        return str(_parsed(url)[0])
    except TransportError:
        return ""


class AiohttpTransport(TransportOptions):
    """An async transport on pooled ``aiohttp.ClientSession``\\ s.

    Redirects are never followed; at most ``max_response_bytes`` of a body are read;
    each request is cut at ``request.timeout`` seconds in total. Host names resolve
    through the request's :class:`TargetPolicy` (``targets`` for requests without
    one, else the default policy), so only checked addresses are connected to.
    Sessions are created on first use, inside the running loop.
    """

    def _setup(self) -> None:
        self._sessions: dict[TargetPolicy, aiohttp.ClientSession] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadlines = DeadlineWatch()

    def _session(self, policy: TargetPolicy) -> aiohttp.ClientSession:
        """The running loop's session for ``policy``, made on first use there (also
        after :meth:`aclose`); those of an earlier loop, which is gone, are dropped."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._sessions, self._loop = {}, loop
        session = self._sessions.get(policy)
        if session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                ssl=self._ssl_context(),
                keepalive_timeout=self._keepalive_expiry,
                resolver=_PolicyResolver(policy),
            )
            session = self._sessions[policy] = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),  # the DeadlineWatch bounds each send
                auto_decompress=False,
                trust_env=False,
                # A receiver's Set-Cookie is never sent back (to it or any other).
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return session

    async def send(self, request: Request) -> Outcome:
        outcome = await self._deadlines.run(request.timeout, self._post(request))
        if isinstance(outcome, TransportError):  # aiohttp's messages quote the URL
            return error_without_url(outcome, request.url, _spelled(request.url))
        return outcome

    async def _post(self, request: Request) -> Outcome:
        try:
            policy = self._policy(request)
            url, host, port = _parsed(request.url)
            if literal_address(host) is not None:  # aiohttp never resolves these
                resolve(policy, host, port)
            async with self._session(policy).post(
                url, data=request.body, headers=request.headers, allow_redirects=False
            ) as response:
                capped = CappedBody(self._max_response_bytes)
                try:
                    while capped.wanted:
                        chunk = await response.content.read(capped.wanted)
                        if not chunk:
                            break
                        capped.add(chunk)
                except aiohttp.ClientError as exc:
                    return ConnectionBrokenError(f"connection broke while reading the body: {exc}")
                # aiohttp's headers are a case-insensitive mapping already: no copy.
                return Response(
                    status_code=response.status, headers=response.headers, body=capped.value()
                )
        except TransportError as exc:  # the URL, or the policy's refusal of a literal
            return exc
        except TimeoutError:  # aiohttp's own timeouts are off; kept as a safety net
            return timed_out(request.timeout)
        except aiohttp.ClientError as exc:
            return _translate(exc)
        except (OSError, ValueError) as exc:
            return InvalidResponseError(f"{type(exc).__name__}: {exc}")

    async def aclose(self) -> None:
        self._deadlines.close()
        sessions, self._sessions = list(self._sessions.values()), {}
        if self._loop is asyncio.get_running_loop():
            for session in sessions:
                await session.close()
