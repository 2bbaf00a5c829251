"""hookdispatch: send signed webhooks from your application.

>>> import hookdispatch as hd
>>> hooks = hd.Dispatcher(storage=hd.MemoryStorage(), workers=0)

See the README and ``docs/`` for the guide; every public name is listed in ``__all__``.
"""

import importlib
import logging
from typing import TYPE_CHECKING, Any

from ._core import Request, Response
from ._dispatcher import Dispatcher
from ._listing import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    DeliveryQuery,
    EndpointQuery,
    Page,
    ReplayLinks,
)
from ._models import (
    DEFAULT_ROTATION_GRACE,
    DEFAULT_TENANT,
    Attempt,
    Delivery,
    DeliveryStatus,
    Endpoint,
    Event,
    generate_secret,
)
from ._policy import RetryPolicy
from ._reporting import AttemptDecision, AttemptReport
from ._signing import sign_hex, sign_standard, verify_signature, verify_standard_webhook
from ._targets import TargetPolicy
from .catalog import Catalog, EventType
from .exceptions import (
    BlockedTargetError,
    ConnectError,
    ConnectionBrokenError,
    DeliveryTimeout,
    DispatcherClosedError,
    FailureKind,
    HookDispatchError,
    InvalidEndpointError,
    InvalidEventError,
    InvalidInputError,
    InvalidResponseError,
    InvalidStateError,
    MissingDependencyError,
    NotFoundError,
    StorageError,
    TLSError,
    TransportError,
    UnknownDeliveryError,
    UnknownEndpointError,
    UnknownEventError,
    WouldBlockError,
)
from .storage import MemoryStorage, SQLiteStorage, Storage
from .transports import (
    AsyncHttpxTransport,
    AsyncTransport,
    HttpxTransport,
    SocketTransport,
    Transport,
)

if TYPE_CHECKING:
    from ._async_dispatcher import AsyncDispatcher
    from .storage import EncryptedStorage, PostgresStorage
    from .transports import AiohttpTransport, AsyncioTransport

__version__ = "0.1.0"

# The library logs to "hookdispatch"; what is shown is the application's choice.
logging.getLogger("hookdispatch").addHandler(logging.NullHandler())

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_ROTATION_GRACE",
    "DEFAULT_TENANT",
    "MAX_PAGE_SIZE",
    "AiohttpTransport",
    "AsyncDispatcher",
    "AsyncHttpxTransport",
    "AsyncTransport",
    "AsyncioTransport",
    "Attempt",
    "AttemptDecision",
    "AttemptReport",
    "BlockedTargetError",
    "Catalog",
    "ConnectError",
    "ConnectionBrokenError",
    "Delivery",
    "DeliveryQuery",
    "DeliveryStatus",
    "DeliveryTimeout",
    "Dispatcher",
    "DispatcherClosedError",
    "EncryptedStorage",
    "Endpoint",
    "EndpointQuery",
    "Event",
    "EventType",
    "FailureKind",
    "HookDispatchError",
    "HttpxTransport",
    "InvalidEndpointError",
    "InvalidEventError",
    "InvalidInputError",
    "InvalidResponseError",
    "InvalidStateError",
    "MemoryStorage",
    "MissingDependencyError",
    "NotFoundError",
    "Page",
    "PostgresStorage",
    "ReplayLinks",
    "Request",
    "Response",
    "RetryPolicy",
    "SQLiteStorage",
    "SocketTransport",
    "Storage",
    "StorageError",
    "TLSError",
    "TargetPolicy",
    "Transport",
    "TransportError",
    "UnknownDeliveryError",
    "UnknownEndpointError",
    "UnknownEventError",
    "WouldBlockError",
    "__version__",
    "generate_secret",
    "sign_hex",
    "sign_standard",
    "verify_signature",
    "verify_standard_webhook",
]


_ASYNC_NAMES = {
    "AsyncDispatcher": "._async_dispatcher",
    "AiohttpTransport": ".transports._aiohttp",
    "AsyncioTransport": ".transports._asyncio",
}


def __getattr__(name: str) -> Any:
    # The asyncio side loads on first use, which sync applications and the command
    # line need not pay for; aiohttp (~0.3 s to import) is an optional extra.
    if name in _ASYNC_NAMES:
        module = importlib.import_module(_ASYNC_NAMES[name], __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    # PostgresStorage loads on first use: psycopg is an optional extra.
    if name == "PostgresStorage":
        from . import storage  # noqa: PLC0415

        return storage.PostgresStorage
    # EncryptedStorage too: cryptography is an optional extra.
    if name == "EncryptedStorage":
        from . import storage  # noqa: PLC0415

        return storage.EncryptedStorage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
