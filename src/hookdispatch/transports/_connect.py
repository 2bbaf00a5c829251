"""Resolve, check against the target policy, connect: the one way to a receiver.

Every shipped transport opens its connections here (aiohttp, which connects by
itself, resolves here), so the :class:`TargetPolicy` is checked on the address
actually connected to, at the moment of connecting: a name that resolved to a
public address at registration and resolves to 127.0.0.1 now (DNS rebinding)
is refused. The host is resolved once; each of its addresses the policy allows
is tried in turn, and one the policy refuses is never connected to.

Which policy: the request's own (the dispatchers always set theirs), else the
one the transport was built with, else the default (:func:`policy_for`).

A transport of your own gets the same protection by calling :func:`connect`
(blocking) or :func:`resolve` / :func:`aresolve` (then connecting to exactly the
addresses returned).
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .._core import Request
from .._targets import TargetPolicy, default_targets, literal_address
from ..exceptions import BlockedTargetError, ConnectError, TLSError
from ._deadline import Deadline, Expired

__all__ = ["Origin", "aconnect", "aresolve", "connect", "policy_for", "readable", "resolve"]

Origin = tuple[str, str, int]
"""Where to connect: scheme, host (IDNA, IPv6 unbracketed), port."""

T = TypeVar("T")


def policy_for(request: Request, own: TargetPolicy | None) -> TargetPolicy:
    """The policy ``request`` is sent under: its own, else the transport's, else the default.

    Raises BlockedTargetError when that policy refuses the URL's scheme (plain
    ``http://`` without ``allow_http``): the addresses are checked when connecting.
    """
    policy = request.targets or own or default_targets()
    if not policy.allow_http and request.url[:5].lower() == "http:":
        raise BlockedTargetError("plain http:// is refused by the target policy (allow_http=False)")
    return policy


def resolve(policy: TargetPolicy, host: str, port: int) -> list[str]:
    """The addresses of ``host`` that ``policy`` allows, in the resolver's order.

    Raises BlockedTargetError when it refuses every one, and ConnectError when the
    name does not resolve. Blocks while resolving (not bounded by any deadline).
    """
    try:
        return policy.resolve(host, port)
    except BlockedTargetError:
        raise
    except (OSError, UnicodeError) as exc:
        raise ConnectError(str(exc) or f"cannot resolve {host!r}") from None


async def aresolve(policy: TargetPolicy, host: str, port: int) -> list[str]:
    """:func:`resolve` without blocking the event loop: a name is looked up on the
    loop's default executor; an IP literal needs no lookup and is checked at once."""
    if literal_address(host) is not None:
        return resolve(policy, host, port)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, resolve, policy, host, port)


def _no_connection(host: str, port: int, failures: list[str]) -> ConnectError:
    return ConnectError(f"cannot connect to {host} port {port} ({'; '.join(failures)})")


def connect(
    origin: Origin,
    *,
    policy: TargetPolicy,
    deadline: Deadline,
    ssl_context: ssl.SSLContext | None,
) -> socket.socket:
    """A blocking socket connected to an address of ``origin`` that ``policy`` allows,
    with TLS set up when ``ssl_context`` is given (for https), and TCP_NODELAY.

    Each connect and the TLS handshake get only what is left of ``deadline``: the
    addresses of a name share it. Raises BlockedTargetError, ConnectError, TLSError,
    or Expired.
    """
    _, host, port = origin
    failures: list[str] = []
    for address in resolve(policy, host, port):
        try:
            sock = socket.create_connection((address, port), timeout=deadline.left())
        except TimeoutError:
            raise Expired from None
        except OSError as exc:
            failures.append(f"{address}: {exc.strerror or exc}")
            continue
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if ssl_context is not None:
                sock.settimeout(deadline.left())
                sock = ssl_context.wrap_socket(sock, server_hostname=host)
        except TimeoutError:
            sock.close()
            raise Expired from None
        except (ssl.SSLError, ssl.CertificateError) as exc:
            sock.close()
            raise TLSError(str(exc) or type(exc).__name__) from None
        except OSError as exc:  # reset during the handshake
            sock.close()
            raise ConnectError(str(exc) or type(exc).__name__) from None
        except BaseException:
            sock.close()
            raise
        return sock
    raise _no_connection(host, port, failures)


async def aconnect(
    origin: Origin,
    *,
    policy: TargetPolicy,
    connect_to: Callable[[str], Awaitable[T]],
    errors: tuple[type[Exception], ...] = (OSError,),
) -> T:
    """What ``connect_to(address)`` returns for the first address of ``origin`` that
    ``policy`` allows and that accepts the connection.

    ``connect_to`` opens one connection to one IP address (and sets up TLS); it
    raises one of ``errors`` (OSError by default) when that address cannot be
    reached, and the next is tried. Raises BlockedTargetError, ConnectError, or
    TLSError for a failed handshake. The caller bounds the whole by its deadline.
    """
    _, host, port = origin
    unreachable: tuple[type[Exception], ...] = (*errors, UnicodeError)
    failures: list[str] = []
    for address in await aresolve(policy, host, port):
        try:
            return await connect_to(address)
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise TLSError(str(exc) or type(exc).__name__) from None
        except unreachable as exc:
            failures.append(f"{address}: {getattr(exc, 'strerror', None) or exc}")
    raise _no_connection(host, port, failures)


def readable(sock: socket.socket) -> bool:
    """Whether reading would not block: on an idle connection, the receiver hung up
    or sent bytes nobody asked for (either way it must not be reused)."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([sock], [], [], 0)[0])  # pragma: no cover - Windows
