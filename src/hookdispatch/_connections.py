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

_SWEEP_INTERVAL = 1.0  # seconds between checks of every idle connection

_Key = tuple[bytes, bytes, int]
"""An origin as a dict key (httpcore.Origin is not hashable): scheme, host, port."""


def _key(origin: httpcore.Origin) -> _Key:
    return origin.scheme, origin.host, origin.port


class KeepAlivePool:
    """At most ``max_connections`` open connections; idle ones kept ``keepalive_expiry`` s.

    An idle connection is checked when it is taken (and dropped if the receiver hung
    up), and all of them about once a second while requests are made, so expired
    ones close even when their endpoint is not sent to again. Safe to share between
    threads. :meth:`stream` raises httpcore's exceptions, and
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
        self._next_sweep = 0.0

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
        self._sweep()
        give_up = None if wait is None else time.monotonic() + wait
        key = _key(origin)
        while True:
            dropped: list[httpcore.HTTPConnection] = []
            with self._changed:
                while True:
                    idle = self._idle.get(key)
                    if idle:
                        connection: httpcore.HTTPConnection | None = idle.pop()
                        break
                    if self._open < self._max_connections or self._drop_an_idle_one(dropped):
                        self._open += 1
                        connection = None
                        break
                    left = None if give_up is None else give_up - time.monotonic()
                    if left is not None and left <= 0:
                        raise httpcore.PoolTimeout(
                            f"all {self._max_connections} connections stayed busy"
                        )
                    self._changed.wait(left)
            for other in dropped:  # closed outside the lock: close may block
                other.close()
            if connection is None:
                return httpcore.HTTPConnection(
                    origin,
                    ssl_context=self._ssl_context,
                    keepalive_expiry=self._keepalive_expiry,
                    network_backend=self._backend,
                )
            # Checked outside the lock: has_expired polls the socket (the receiver
            # may have hung up while the connection sat idle).
            if not connection.has_expired():
                return connection
            connection.close()
            with self._changed:
                self._open -= 1
                self._changed.notify()

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
            kept = reusable and not self._closed  # decided under the lock, once
            if kept:
                self._idle.setdefault(_key(origin), []).append(connection)
            else:
                self._open -= 1
            self._changed.notify()
        if not kept:
            connection.close()

    def _sweep(self) -> None:
        """At most once a second: close the idle connections that expired or whose
        receiver hung up, whichever origin they are for (a connection to an endpoint
        that is not sent to again would otherwise stay open until close())."""
        now = time.monotonic()
        if now < self._next_sweep:  # the common case, every request: no lock taken
            return
        with self._changed:
            if now < self._next_sweep or not self._idle:  # another thread just swept
                return
            self._next_sweep = now + _SWEEP_INTERVAL
            taken, self._idle = self._idle, {}
        kept: dict[_Key, list[httpcore.HTTPConnection]] = {}
        expired: list[httpcore.HTTPConnection] = []
        for key, stack in taken.items():
            for connection in stack:
                (expired if connection.has_expired() else kept.setdefault(key, [])).append(
                    connection
                )
        with self._changed:
            for key, stack in kept.items():  # older than any put back meanwhile
                self._idle[key] = stack + self._idle.get(key, [])
            self._open -= len(expired)
            self._changed.notify_all()
        for connection in expired:
            connection.close()

    def close(self) -> None:
        """Close the idle connections now; those in use close when their response ends.

        Requests sent after this still work, on connections closed after each one.
        """
        with self._changed:
            self._closed = True
            idle = [connection for stack in self._idle.values() for connection in stack]
            self._idle.clear()
            self._open -= len(idle)
            self._changed.notify_all()
        for connection in idle:
            connection.close()
