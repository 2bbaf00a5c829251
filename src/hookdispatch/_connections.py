"""Keep-alive HTTP/1.1 connections shared by many threads, at O(1) cost per request.

httpcore's ``ConnectionPool`` serves any number of queued requests fairly over
HTTP/1.1 and HTTP/2, and pays for it: on every request and every response close
it re-examines each connection against each waiting request. With eight threads
that is about a hundred connection checks per request (``is_idle``,
``has_expired``, each a ``poll`` syscall on the socket), a quarter of the thread
pool's CPU. A webhook sender needs less: HTTP/1.1, one request per connection at
a time, a bound on how many are open. :class:`KeepAlivePool` keeps a stack of idle
connections per origin; a request takes the most recently used one (checking it
once) or opens a new one, and gives it back when its response is closed.

The connections are httpcore's own (``httpcore.HTTPConnection``, public API), so
the wire behaviour, errors and network backend are exactly httpcore's.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Iterator, Mapping, Sequence

import httpcore

__all__ = ["KeepAlivePool"]

_Key = tuple[bytes, bytes, int]
"""An origin as a dict key (httpcore.Origin is not hashable): scheme, host, port."""


def _key(origin: httpcore.Origin) -> _Key:
    return origin.scheme, origin.host, origin.port


class KeepAlivePool:
    """At most ``max_connections`` open connections; idle ones kept ``keepalive_expiry`` s.

    Safe to share between threads. :meth:`stream` raises httpcore's exceptions, and
    ``httpcore.PoolTimeout`` when no connection frees up within the ``"pool"``
    timeout of the request's ``extensions``.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        max_connections: int,
        keepalive_expiry: float,
        network_backend: httpcore.NetworkBackend,
    ) -> None:
        self._ssl_context = ssl_context
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._backend = network_backend
        self._idle: dict[_Key, list[httpcore.HTTPConnection]] = {}
        self._open = 0  # connections in use or idle
        self._changed = threading.Condition(threading.Lock())
        self._closed = False

    @contextlib.contextmanager
    def stream(
        self,
        method: bytes | str,
        url: httpcore.URL,
        *,
        headers: Sequence[tuple[bytes, bytes]],
        content: bytes,
        extensions: Mapping[str, object],
    ) -> Iterator[httpcore.Response]:
        """Send a request; the block reads the response. Its connection goes back after.

        ``headers`` go out as given: include ``Host`` and ``Content-Length``.
        """
        request = httpcore.Request(
            method, url, headers=headers, content=content, extensions=dict(extensions)
        )
        timeouts = extensions.get("timeout")
        wait = timeouts.get("pool") if isinstance(timeouts, dict) else None
        connection = self._acquire(url.origin, wait)
        try:
            response = connection.handle_request(request)
            try:
                yield response
            finally:
                response.close()
        finally:
            self._release(url.origin, connection)

    def _acquire(self, origin: httpcore.Origin, wait: float | None) -> httpcore.HTTPConnection:
        give_up = None if wait is None else time.monotonic() + wait
        expired: list[httpcore.HTTPConnection] = []
        try:
            with self._changed:
                while True:
                    if self._closed:
                        raise httpcore.ConnectError("this transport is closed; create a new one")
                    idle = self._idle.get(_key(origin))
                    while idle:
                        connection = idle.pop()
                        if connection.is_idle() and not connection.has_expired():
                            return connection
                        expired.append(connection)
                        self._open -= 1
                    if self._open < self._max_connections or self._drop_an_idle_one(expired):
                        self._open += 1
                        return httpcore.HTTPConnection(
                            origin,
                            ssl_context=self._ssl_context,
                            keepalive_expiry=self._keepalive_expiry,
                            network_backend=self._backend,
                        )
                    left = None if give_up is None else give_up - time.monotonic()
                    if left is not None and left <= 0:
                        raise httpcore.PoolTimeout(
                            f"all {self._max_connections} connections stayed busy"
                        )
                    self._changed.wait(left)
        finally:
            for connection in expired:  # closed outside the lock: close may block
                connection.close()

    def _drop_an_idle_one(self, into: list[httpcore.HTTPConnection]) -> bool:
        """Make room by closing an idle connection to another origin (the caller's lock)."""
        for idle in self._idle.values():
            if idle:
                into.append(idle.pop(0))  # the least recently used of that origin
                self._open -= 1
                return True
        return False

    def _release(self, origin: httpcore.Origin, connection: httpcore.HTTPConnection) -> None:
        # A failed connect reads as idle and closed; a response cut short, as closed.
        reusable = connection.is_idle() and not connection.is_closed()
        with self._changed:
            if reusable and not self._closed:
                self._idle.setdefault(_key(origin), []).append(connection)
            else:
                self._open -= 1
            self._changed.notify()
        if not reusable or self._closed:
            connection.close()

    def close(self) -> None:
        """Close the idle connections now; those in use close when their response does."""
        with self._changed:
            self._closed = True
            idle = [connection for stack in self._idle.values() for connection in stack]
            self._idle.clear()
            self._open -= len(idle)
            self._changed.notify_all()
        for connection in idle:
            connection.close()
