"""Keep-alive connections at O(1) cost per request: one pool, for threads and asyncio.

httpcore's ``ConnectionPool`` serves any number of queued requests fairly over
HTTP/1.1 and HTTP/2, and pays for it: on every request and every response close
it re-examines each connection against each waiting request. With eight threads
that is about a hundred connection checks per request (``is_idle``,
``has_expired``, each a ``poll`` syscall on the socket), a quarter of the thread
pool's CPU. A webhook sender needs less: HTTP/1.1, one request per connection at
a time, a bound on how many are open. The pool keeps a stack of idle connections
per key (the origin, and the target policy it was connected under); a request
takes the most recently used one (checking it once) or is told to open a new
one, and gives it back when its exchange is over.

:class:`Stacks` is that bookkeeping, with no I/O, no locks and no waiting. Its two
faces add only how a request waits for a free slot: :class:`KeepAlivePool` with a
``threading.Condition`` (``SocketTransport``, ``HttpxTransport``),
:class:`AsyncKeepAlivePool` with futures on the event loop (``AsyncioTransport``).
Both hold any connection that can say whether it has expired and close itself.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Hashable
from typing import Generic, Protocol, TypeVar

__all__ = ["AsyncKeepAlivePool", "ConnectionsBusy", "KeepAlivePool", "Pooled", "Stacks"]

SWEEP_INTERVAL = 1.0  # seconds between checks of every idle connection


class Pooled(Protocol):
    """What the pool needs of a connection."""

    def has_expired(self) -> bool:
        """Idle too long, or the receiver hung up (or sent bytes nobody asked for)."""
        ...

    def close(self) -> None: ...


C = TypeVar("C", bound=Pooled)


class ConnectionsBusy(Exception):
    """No connection freed up within the wait the pool allowed."""


class Stacks(Generic[C]):
    """At most ``max_connections`` open, idle ones kept per key: the bookkeeping only.

    ``open`` counts connections in use or idle, and slots reserved for connections
    being opened. The caller serialises access (a lock, or the event loop) and
    closes the connections it is handed, outside any lock (closing may block).
    """

    __slots__ = ("closed", "idle", "max_connections", "open")

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self.idle: dict[Hashable, list[C]] = {}
        self.open = 0
        self.closed = False

    def pop_idle(self, key: Hashable) -> C | None:
        """The most recently used idle connection for ``key`` (still counted open)."""
        idle = self.idle.get(key)
        return idle.pop() if idle else None

    def reserve(self, dropped: list[C]) -> bool:
        """Reserve a slot for a new connection; False if every slot is in use.

        When all are open but some are idle, the least recently used idle one of
        the first key that has any goes into ``dropped``, to be closed.
        """
        if self.open >= self.max_connections:
            for stack in self.idle.values():
                if stack:
                    dropped.append(stack.pop(0))
                    self.open -= 1
                    break
            else:
                return False
        self.open += 1
        return True

    def give_back(self, key: Hashable, connection: C, *, reusable: bool) -> bool:
        """Keep a connection whose exchange is over; False: the caller closes it."""
        if reusable and not self.closed:
            self.idle.setdefault(key, []).append(connection)
            return True
        self.open -= 1
        return False

    def take_all_idle(self) -> dict[Hashable, list[C]]:
        """Every idle connection, taken out to be checked (see :meth:`return_checked`)."""
        taken, self.idle = self.idle, {}
        return taken

    def return_checked(self, taken: dict[Hashable, list[C]], expired: list[C]) -> list[C]:
        """Put back what :meth:`take_all_idle` took, less ``expired``: those, and all of
        them after :meth:`close`, are returned to be closed."""
        gone = {id(connection) for connection in expired}
        closing = list(expired)
        for key, stack in taken.items():
            kept = [connection for connection in stack if id(connection) not in gone]
            if self.closed:
                closing.extend(kept)
            elif kept:  # older than any given back meanwhile
                self.idle[key] = kept + self.idle.get(key, [])
        self.open -= len(closing)
        return closing

    def close(self) -> list[C]:
        """From now on nothing is kept; the idle connections, to be closed."""
        self.closed = True
        idle = [connection for stack in self.idle.values() for connection in stack]
        self.idle.clear()
        self.open -= len(idle)
        return idle


def _close_all(connections: list[C]) -> None:
    for connection in connections:
        connection.close()


class KeepAlivePool(Generic[C]):
    """:class:`Stacks` shared by many threads; a request waits on a condition.

    ``take`` hands out an idle connection to the key (checking it once) or None:
    then a slot is reserved and the caller opens the connection, and gives it to
    ``give_back`` when done, or calls ``forfeit`` if opening failed. Idle
    connections are also checked about once a second while requests are made, so
    expired ones close even when their key is not sent to again.
    """

    def __init__(self, *, max_connections: int) -> None:
        self._stacks: Stacks[C] = Stacks(max_connections)
        self._changed = threading.Condition(threading.Lock())
        self._next_sweep = 0.0

    def take(self, key: Hashable, *, wait: float | None) -> C | None:
        """An idle connection to ``key``, or None: open one (a slot is reserved).

        Waits at most ``wait`` seconds (None: for ever) while every slot is in use,
        then raises ConnectionsBusy.
        """
        self._sweep()
        stacks = self._stacks
        give_up = None if wait is None else time.monotonic() + wait
        while True:
            dropped: list[C] = []
            with self._changed:
                while True:
                    connection = stacks.pop_idle(key)
                    if connection is not None or stacks.reserve(dropped):
                        break
                    left = None if give_up is None else give_up - time.monotonic()
                    if left is not None and left <= 0:
                        raise ConnectionsBusy(
                            f"all {stacks.max_connections} connections stayed busy"
                        )
                    self._changed.wait(left)
            try:
                _close_all(dropped)  # outside the lock: close may block
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
            self._stacks.open -= 1
            self._changed.notify()

    def give_back(self, key: Hashable, connection: C, *, reusable: bool) -> None:
        """Return a connection after its exchange; closed unless ``reusable``."""
        with self._changed:
            kept = self._stacks.give_back(key, connection, reusable=reusable)
            self._changed.notify()
        if not kept:
            connection.close()

    def _sweep(self) -> None:
        """At most once a second: close the idle connections that expired or whose
        receiver hung up, whichever key they are for (a connection to an endpoint
        that is not sent to again would otherwise stay open until close())."""
        now = time.monotonic()
        if now < self._next_sweep:  # the common case, every request: no lock taken
            return
        with self._changed:
            if now < self._next_sweep or not self._stacks.idle:  # another thread swept
                return
            self._next_sweep = now + SWEEP_INTERVAL
            taken = self._stacks.take_all_idle()
        expired: list[C] = []
        try:
            for stack in taken.values():
                expired.extend(connection for connection in stack if connection.has_expired())
        finally:  # even when interrupted: every connection taken out is accounted for
            with self._changed:
                closing = self._stacks.return_checked(taken, expired)
                self._changed.notify_all()
            _close_all(closing)

    def close(self) -> None:
        """Close the idle connections now; those in use close when given back.

        Requests made after this still work, on connections closed after each one.
        """
        with self._changed:
            idle = self._stacks.close()
            self._changed.notify_all()
        _close_all(idle)


class AsyncKeepAlivePool(Generic[C]):
    """:class:`Stacks` on one event loop; a request waits on a future, first come
    first served. The same contract as :class:`KeepAlivePool`, with ``await take``;
    a timer checks the idle connections every second while any are idle.

    The caller bounds ``take`` by its deadline (cancelling it gives up the wait).
    """

    def __init__(self, *, max_connections: int) -> None:
        self._stacks: Stacks[C] = Stacks(max_connections)
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def idle(self) -> dict[Hashable, list[C]]:
        """The idle connections per key (for inspection)."""
        return self._stacks.idle

    async def take(self, key: Hashable) -> C | None:
        """An idle connection to ``key``, or None: open one (a slot is reserved)."""
        stacks = self._stacks
        while True:
            connection = stacks.pop_idle(key)
            while connection is not None:
                if not connection.has_expired():
                    return connection
                connection.close()  # expired since the last sweep
                stacks.open -= 1
                connection = stacks.pop_idle(key)
            dropped: list[C] = []
            if stacks.reserve(dropped):
                _close_all(dropped)
                return None
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # woken and cancelled at once: pass the turn on
                elif waiter in self._waiting:
                    self._waiting.remove(waiter)
                raise

    def forfeit(self) -> None:
        """Give up the slot ``take`` reserved (the connection could not be opened)."""
        self._stacks.open -= 1
        self._wake()

    def give_back(self, key: Hashable, connection: C, *, reusable: bool) -> None:
        """Return a connection after its exchange; closed unless ``reusable``."""
        if self._stacks.give_back(key, connection, reusable=reusable):
            if self._sweeper is None:
                self._sweeper = asyncio.get_running_loop().call_later(SWEEP_INTERVAL, self._sweep)
        else:
            connection.close()
        self._wake()

    def _wake(self) -> None:
        """Let the longest-waiting request try again for a connection."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _sweep(self) -> None:
        """Every second while any connection is idle: close those that expired."""
        self._sweeper = None
        taken = self._stacks.take_all_idle()
        expired = [c for stack in taken.values() for c in stack if c.has_expired()]
        _close_all(self._stacks.return_checked(taken, expired))
        if self._stacks.idle:
            self._sweeper = asyncio.get_running_loop().call_later(SWEEP_INTERVAL, self._sweep)

    def close(self) -> None:
        """Close the idle connections now; those in use close when given back.

        Requests made after this still work, on connections closed after each one.
        Callable from outside the pool's loop only once that loop has stopped.
        """
        if self._sweeper is not None:
            with contextlib.suppress(RuntimeError):  # its loop may be closed
                self._sweeper.cancel()
            self._sweeper = None
        _close_all(self._stacks.close())
        self._waiting.clear()
