"""The errors hookdispatch raises.

Every error derives from :class:`HookDispatchError`, so ``except HookDispatchError``
catches all of them. The tree::

    HookDispatchError
    ├── InvalidInputError (ValueError)      bad arguments; nothing was stored
    │   ├── InvalidEndpointError            URL, secret, event list of an endpoint
    │   └── InvalidEventError               event type, id or payload
    ├── NotFoundError (LookupError)         an id that storage does not hold
    │   ├── UnknownEndpointError
    │   ├── UnknownEventError
    │   └── UnknownDeliveryError
    ├── InvalidStateError                   the operation does not fit the current state
    │   └── DispatcherClosedError
    ├── MissingDependencyError (ImportError) an optional extra is not installed
    ├── StorageError                        the storage backend failed or holds data we cannot read
    │   └── WouldBlockError                 Storage.without_waiting: the call must wait
    └── TransportError                      one attempt got no usable HTTP response
        ├── DeliveryTimeout                 the per-attempt total deadline passed
        ├── ConnectError                    DNS, refused, unreachable
        ├── TLSError                        handshake or certificate failure
        ├── ConnectionBrokenError           the peer dropped the connection mid-exchange
        ├── InvalidResponseError            the peer spoke something that is not HTTP/1.1
        └── BlockedTargetError              the target policy refused the address

Messages never contain an endpoint secret. Errors raised by drivers (sqlite3, httpx,
psycopg) are translated at the boundary and chained (``raise … from exc``).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "BlockedTargetError",
    "ConnectError",
    "ConnectionBrokenError",
    "DeliveryTimeout",
    "DispatcherClosedError",
    "FailureKind",
    "HookDispatchError",
    "InvalidEndpointError",
    "InvalidEventError",
    "InvalidInputError",
    "InvalidResponseError",
    "InvalidStateError",
    "MissingDependencyError",
    "NotFoundError",
    "StorageError",
    "TLSError",
    "TransportError",
    "UnknownDeliveryError",
    "UnknownEndpointError",
    "UnknownEventError",
    "WouldBlockError",
]


class FailureKind(StrEnum):
    """Why an attempt failed: a small closed set, stored with every failed attempt."""

    TIMEOUT = "timeout"
    """The total per-attempt deadline passed (connect, send, wait and read together)."""
    CONNECT = "connect"
    """No connection: refused, unreachable, or the host name did not resolve."""
    TLS = "tls"
    """The TLS handshake or certificate check failed."""
    RESET = "reset"
    """The connection broke after it was established."""
    INVALID_RESPONSE = "invalid_response"
    """The receiver answered with something that is not valid HTTP."""
    HTTP_STATUS = "http_status"
    """A complete HTTP response whose status is not 2xx (3xx included: never followed)."""
    BLOCKED = "blocked"
    """The target policy refused the address or URL (SSRF protection). Never retried."""


class HookDispatchError(Exception):
    """Root of every error hookdispatch raises."""


class InvalidInputError(HookDispatchError, ValueError):
    """An argument was rejected before anything was stored or sent."""


class InvalidEndpointError(InvalidInputError):
    """An endpoint's URL, secret or event list is not acceptable."""


class InvalidEventError(InvalidInputError):
    """An event's type, id or payload is not acceptable."""


class NotFoundError(HookDispatchError, LookupError):
    """An id that the storage does not hold."""


class UnknownEndpointError(NotFoundError):
    """No endpoint has this id."""


class UnknownEventError(NotFoundError):
    """No event has this id."""


class UnknownDeliveryError(NotFoundError):
    """No delivery has this id."""


class InvalidStateError(HookDispatchError):
    """The operation does not fit the object's current state."""


class DispatcherClosedError(InvalidStateError):
    """The dispatcher was closed; create a new one to dispatch more events."""


class MissingDependencyError(HookDispatchError, ImportError):
    """A feature needs an optional extra that is not installed; the message names it."""


class StorageError(HookDispatchError):
    """The storage backend failed, or holds data this version cannot read."""


class WouldBlockError(StorageError):
    """Raised by :meth:`Storage.without_waiting` before anything changed: the call
    would have to wait (for a lock another thread or process holds, a sync to disk,
    a network round trip). Run it where waiting is fine: a thread, not an event
    loop. The async dispatcher does that itself; you only meet this error when
    calling ``without_waiting`` yourself."""


class TransportError(HookDispatchError):
    """One delivery attempt got no usable HTTP response.

    ``kind`` says why, from the closed set :class:`FailureKind`.
    """

    kind: FailureKind = FailureKind.CONNECT


class DeliveryTimeout(TransportError):
    """The attempt's total deadline passed before a full response arrived."""

    kind = FailureKind.TIMEOUT


class ConnectError(TransportError):
    """The connection could not be opened (refused, unreachable, DNS)."""

    kind = FailureKind.CONNECT


class TLSError(TransportError):
    """The TLS handshake or certificate verification failed."""

    kind = FailureKind.TLS


class ConnectionBrokenError(TransportError):
    """The connection broke after it was established."""

    kind = FailureKind.RESET


class BlockedTargetError(TransportError):
    """The target policy refused to connect to this address (SSRF protection)."""

    kind = FailureKind.BLOCKED


class InvalidResponseError(TransportError):
    """The receiver's answer was not valid HTTP."""

    kind = FailureKind.INVALID_RESPONSE
