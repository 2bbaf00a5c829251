"""Keep-alive connections shared by many threads, at O(1) cost per request.

httpcore's ``ConnectionPool`` serves any number of queued requests fairly over
HTTP/1.1 and HTTP/2, and pays for it: on every request and every response close
it re-examines each connection against each waiting request. With eight threads
that is about a hundred connection checks per request (``is_idle``,
``has_expired``, each a ``poll`` syscall on the socket), a quarter of the thread
pool's CPU. A webhook sender needs less: HTTP/1.1, one request per connection at
a time, a bound on how many are open. :class:`KeepAlivePool` keeps a stack of idle
connections per origin; a request takes the most recently used one (checking it
once) or is told to open a new one, and gives it back when its exchange is over.

The pool does no I/O of its own and holds any connection that can say whether it
has expired and close itself: httpcore's (``HttpxTransport``) or plain sockets
(``SocketTransport``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from typing import Generic, Protocol, TypeVar

__all__ = ["ConnectionsBusy", "KeepAlivePool", "Pooled"]

_SWEEP_INTERVAL = 1.0  # seconds between checks of every idle connection


class Pooled(Protocol):
    """What the pool needs of a connection."""

    def has_expired(self) -> bool:
        """Idle too long, or the receiver hung up (or sent bytes nobody asked for)."""
        ...

    def close(self) -> None: ...


C = TypeVar("C", bound=Pooled)


class ConnectionsBusy(Exception):
    """No connection freed up within the wait :meth:`KeepAlivePool.take` allowed."""


class KeepAlivePool(Generic[C]):
    """At most ``max_connections`` open connections, idle ones kept until they expire.

    ``take`` hands out an idle connection to the origin (checking it once) or None:
    then a slot is reserved and the caller opens the connection, and gives it to
    ``give_back`` when done, or calls ``forfeit`` if opening failed. Idle
    connections are also checked about once a second while requests are made, so
    expired ones close even when their origin is not sent to again. Safe to share
    between threads.
    """

    def __init__(self, *, max_connections: int) -> None:
        self._max_connections = max_connections
        self._idle: dict[Hashable, list[C]] = {}
        self._open = 0  # connections in use or idle, and reserved slots
        self._changed = threading.Condition(threading.Lock())
        self._closed = False
        self._next_sweep = 0.0

    def take(self, origin: Hashable, *, wait: float | None) -> C | None:
        """An idle connection to ``origin``, or None: open one (a slot is reserved).

        Waits at most ``wait`` seconds (None: for ever) while every slot is in use,
        then raises ConnectionsBusy.
        """
        self._sweep()
        give_up = None if wait is None else time.monotonic() + wait
        while True:
            dropped: list[C] = []
            with self._changed:
                while True:
                    idle = self._idle.get(origin)
                    if idle:
                        connection: C | None = idle.pop()
                        break
                    if self._open < self._max_connections or self._drop_an_idle_one(dropped):
                        self._open += 1
                        connection = None
                        break
                    left = None if give_up is None else give_up - time.monotonic()
                    if left is not None and left <= 0:
                        raise ConnectionsBusy(
                            f"all {self._max_connections} connections stayed busy"
                        )
                    self._changed.wait(left)
            try:
                for other in dropped:  # closed outside the lock: close may block
                    other.close()
                # Checked outside the lock: has_expired may poll the socket (the
                # receiver may have hung up while the connection sat idle).
                if connection is None or not connection.has_expired():
                    return connection
                connection.close()
            except BaseException:  # an interrupt must not keep the slot for ever
                if connection is not None:
                    connection.close()
                self.forfeit()
                raise
            self.forfeit()

    def forfeit(self) -> None:
        """Give up the slot ``take`` reserved (the connection could not be opened)."""
        with self._changed:
            self._open -= 1
            self._changed.notify()

    def give_back(self, origin: Hashable, connection: C, *, reusable: bool) -> None:
        """Return a connection after its exchange; closed unless ``reusable``."""
        with self._changed:
            kept = reusable and not self._closed  # decided under the lock, once
            if kept:
                self._idle.setdefault(origin, []).append(connection)
            else:
                self._open -= 1
            self._changed.notify()
        if not kept:
            connection.close()

    def _drop_an_idle_one(self, into: list[C]) -> bool:
        """Make room by closing an idle connection to another origin (the caller's lock)."""
        for idle in self._idle.values():
            if idle:
                into.append(idle.pop(0))  # the least recently used of that origin
                self._open -= 1
                return True
        return False

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
        expired: list[C] = []
        try:
            for stack in taken.values():
                expired.extend(connection for connection in stack if connection.has_expired())
        finally:  # even when interrupted: every connection taken out is accounted for
            gone = {id(connection) for connection in expired}
            with self._changed:
                for origin, stack in taken.items():
                    kept = [connection for connection in stack if id(connection) not in gone]
                    if self._closed:  # close() ran meanwhile: these close too
                        expired.extend(kept)
                    elif kept:  # older than any put back meanwhile
                        self._idle[origin] = kept + self._idle.get(origin, [])
                self._open -= len(expired)
                self._changed.notify_all()
            for connection in expired:
                connection.close()

    def close(self) -> None:
        """Close the idle connections now; those in use close when given back.

        Requests made after this still work, on connections closed after each one.
        """
        with self._changed:
            self._closed = True
            idle = [connection for stack in self._idle.values() for connection in stack]
            self._idle.clear()
            self._open -= len(idle)
            self._changed.notify_all()
        for connection in idle:
            connection.close()
