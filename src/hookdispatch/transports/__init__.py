"""The HTTP layer: how a signed :class:`~hookdispatch.Request` reaches a receiver.

One seam (:class:`Transport`, :class:`AsyncTransport`), and the transports we ship
behind it: :class:`SocketTransport` and :class:`AsyncioTransport` (the defaults,
our own HTTP/1.1 client), :class:`HttpxTransport` and :class:`AsyncHttpxTransport`
(httpx's stack), and :class:`AiohttpTransport` (the ``aiohttp`` extra). Every one
connects only where the request's target policy allows, through :func:`connect`
/ :func:`aconnect`, which a transport of your own can use too. See
``docs/transports.md``.

Modules, one job each: ``_base`` (the seam), ``_errors`` (what failures mean),
``_connect`` (resolve, policy check, connect), ``_pool`` (keep-alive),
``_deadline`` (the total deadline), ``_http11`` (the sans-I/O codec), and one
module per transport.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._base import DEFAULT_MAX_RESPONSE_BYTES, AsyncTransport, Transport
from ._connect import aconnect, aresolve, connect, policy_for, resolve
from ._deadline import Deadline, Expired
from ._httpx import AsyncHttpxTransport, HttpxTransport
from ._socket import SocketTransport

if TYPE_CHECKING:
    from ._aiohttp import AiohttpTransport
    from ._asyncio import AsyncioTransport

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "AiohttpTransport",
    "AsyncHttpxTransport",
    "AsyncTransport",
    "AsyncioTransport",
    "Deadline",
    "Expired",
    "HttpxTransport",
    "SocketTransport",
    "Transport",
    "aconnect",
    "aresolve",
    "connect",
    "policy_for",
    "resolve",
]

_LAZY = {"AiohttpTransport": "._aiohttp", "AsyncioTransport": "._asyncio"}


def __getattr__(name: str) -> Any:
    # aiohttp is an optional extra and takes ~0.3 s to import; the asyncio transport
    # loads with the async side.
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
