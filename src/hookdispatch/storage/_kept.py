"""Connections a PostgresStorage keeps between its calls, the last one used first."""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool

__all__ = ["KEEP", "KeptConnections"]

logger = logging.getLogger("hookdispatch")

KEEP = 30.0
"""How long (s) after the first connection is kept they all go back to the pool,
calls or not, so that its upkeep (``max_idle``, ``max_lifetime``, shrinking)
applies to them."""


class KeptConnections:
    """Connections taken from ``pool`` and kept between calls, the one given back
    last taken first.

    A pool hands out its idle connections in turn (first in, first out), so calls
    one after another each wake a different server process, whose caches have gone
    cold meanwhile; the last connection used has its server process warm.

    ``take`` returns a kept connection, or one of the pool's. ``give_back`` keeps it,
    unless a caller is waiting for the pool (it goes to the pool, which hands it to
    that caller: kept, it would sit idle while they wait) or it is broken, closed or
    left inside a transaction (the pool repairs or replaces it). ``keep`` seconds
    after a connection is kept while no timer is pending, a timer hands every kept
    one back to the pool, as ``release`` does; the next calls keep them again. The
    timer holds this object weakly (and is cancelled when it is collected): a
    storage dropped without ``close()`` frees its pool at once, as before. Should
    no thread start for a timer, nothing is kept. The pool must be this object's
    alone: a caller waiting on the pool some other way is not seen.

    Safe from any number of threads: a kept connection is taken by one
    ``list.pop`` at a time; a caller counts itself as waiting before it looks at
    the kept ones a last time and waits on the pool, and ``give_back`` looks at
    that count after keeping a connection, so that one of the two always sees the
    other.
    """

    def __init__(self, pool: ConnectionPool[Any], *, keep: float = KEEP) -> None:
        self._pool = pool
        self._keep = keep
        self._kept: list[psycopg.Connection[Any]] = []
        self._closed = False
        self._waiting = 0  # callers of take() that may wait on the pool
        self._lock = threading.Lock()  # for _waiting and the timer
        # The pending timer, when any is kept: in a list of its own, which the
        # finalizer holds (not this object), so that collection cancels it.
        self._timer: list[threading.Timer | None] = [None]
        weakref.finalize(self, _cancel, self._timer)

    def take(self) -> psycopg.Connection[Any]:
        """The connection given back last, else one of the pool's (which may wait
        for one, up to the pool's timeout: ``PoolTimeout``)."""
        try:
            return self._kept.pop()
        except IndexError:
            pass
        with self._lock:
            self._waiting += 1
        try:
            try:
                return self._kept.pop()  # given back before it saw this caller waiting
            except IndexError:
                conn: psycopg.Connection[Any] = self._pool.getconn()
                return conn
        finally:
            with self._lock:
                self._waiting -= 1

    def give_back(self, conn: psycopg.Connection[Any]) -> None:
        """Keep ``conn`` for the next call, or hand it to the pool (see the class)."""
        if (
            self._closed
            or self._waiting
            or conn.broken
            or conn.closed
            or conn.pgconn.transaction_status != TransactionStatus.IDLE
        ):
            self._pool.putconn(conn)
            return
        self._kept.append(conn)
        # Looked at again once it is kept: close() or a caller waiting meanwhile.
        if self._closed:
            self.release()
        elif self._waiting:
            with contextlib.suppress(IndexError):  # (taken meanwhile)
                self._pool.putconn(self._kept.pop())
        elif self._timer[0] is None:
            self._start_timer()

    def _start_timer(self) -> None:
        with self._lock:
            if self._timer[0] is not None or self._closed:
                return
            timer = threading.Timer(self._keep, _release_in_time, (weakref.ref(self),))
            timer.name = "hookdispatch-kept-connections"
            timer.daemon = True
            try:
                timer.start()
            except RuntimeError as exc:  # no thread to be had: keep nothing
                failed: RuntimeError | None = exc
            else:
                failed = None
                self._timer[0] = timer  # (before it can fire: it takes this lock)
        if failed is not None:
            logger.warning(
                "no thread started to hand kept PostgreSQL connections back to the pool"
                " (%s); they go back now",
                failed,
            )
            self.release()

    def _timer_fired(self) -> None:
        with self._lock:
            self._timer[0] = None
        self.release()

    def release(self) -> None:
        """Hand every kept connection back to the pool (they are taken from it again
        as calls need them)."""
        while True:
            try:
                conn = self._kept.pop()
            except IndexError:
                return
            self._pool.putconn(conn)

    def close(self) -> None:
        """Cancel the timer and hand the kept connections back to the pool, and from
        now on each one given back (the pool, closed, closes those it is handed; a
        timer already firing may hand some back after it closed, to the same
        effect)."""
        self._closed = True
        with self._lock:
            _cancel(self._timer)
        self.release()


def _release_in_time(kept: weakref.ref[KeptConnections]) -> None:
    """A timer's work: the kept connections back to the pool, if their keeper lives."""
    keeper = kept()
    if keeper is not None:
        keeper._timer_fired()


def _cancel(timer: list[threading.Timer | None]) -> None:
    if timer[0] is not None:
        timer[0].cancel()
        timer[0] = None
