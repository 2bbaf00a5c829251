"""The PostgreSQL job-queue peer: PgQueuer, on the benchmark's own database.

PgQueuer (``pgqueuer`` on PyPI) is a job queue built on PostgreSQL alone: jobs are
rows of one table, workers take them with ``FOR UPDATE SKIP LOCKED`` and wake on
``LISTEN``/``NOTIFY``. It is measured the way its documentation sets it up:

* its schema installed by its own installer (``Queries.install()``, what
  ``pgq install`` runs), in the benchmark's throwaway database, whose
  ``synchronous_commit = off`` applies to it as to PostgresStorage;
* its recommended driver, asyncpg (``pgqueuer[asyncpg]``; psycopg's async
  connection where asyncpg is missing), and the event loop ``pgq run`` uses
  (uvloop where installed);
* enqueue: one ``Queries.enqueue()`` of N jobs (lists of entrypoints, payloads and
  priorities: its batch insert), each job's payload the webhook body;
* drain: N jobs enqueued first; then a ``QueueManager`` with every setting at its
  default (batch size 10, no concurrency limit) and an entrypoint that does
  nothing runs until the queue is empty (``run(mode=drain)``, how its own drain
  benchmark, ``tools/benchmark.py --strategy drain``, runs it), in this process.

Each returns a :class:`~benchmarks.harness.Run` in jobs per second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from .harness import BODY, Deadline, Run

ENTRYPOINT = "noop"

T = TypeVar("T")

logging.getLogger("pgqueuer").setLevel(logging.WARNING)


def driver() -> str | None:
    """The driver PgQueuer will use here, or None when PgQueuer cannot run."""
    try:
        import pgqueuer  # noqa: F401
    except ImportError:
        return None
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        pass
    else:
        return "asyncpg"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return None
    return "psycopg"


def version() -> str | None:
    try:
        from importlib import metadata

        return metadata.version("pgqueuer")
    except Exception:
        return None


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """On the loop ``pgq run`` picks: uvloop where installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


async def _connect(dsn: str) -> tuple[Any, Callable[[], Awaitable[None]]]:
    """PgQueuer's ``Queries`` over a new connection, and how to close it."""
    from pgqueuer.queries import Queries

    if driver() == "asyncpg":
        import asyncpg
        from pgqueuer.db import AsyncpgDriver
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(dsn)
        connection = await asyncpg.connect(
            host=params.get("host"),
            port=int(params.get("port") or 5432),
            user=params.get("user"),
            password=params.get("password"),
            database=params.get("dbname"),
        )
        return Queries(AsyncpgDriver(connection)), connection.close
    import psycopg
    from pgqueuer.db import PsycopgDriver

    aconnection = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    return Queries(PsycopgDriver(aconnection)), aconnection.close


async def _install(dsn: str) -> None:
    queries, close = await _connect(dsn)
    try:
        if not await queries.schema_is_installed():
            await queries.install()
    finally:
        await close()


def install(dsn: str) -> None:
    """PgQueuer's tables, triggers and functions in ``dsn`` (``pgq install``), once."""
    _run(_install(dsn))


def _jobs(count: int) -> tuple[list[str], list[bytes | None], list[int]]:
    return [ENTRYPOINT] * count, [BODY] * count, [0] * count


async def _enqueue(dsn: str, count: int, limit: float) -> Run:
    queries, close = await _connect(dsn)
    try:
        await queries.clear_queue()
        entrypoints, payloads, priorities = _jobs(count)
        began, cpu = time.perf_counter(), time.process_time()
        try:
            ids = await asyncio.wait_for(queries.enqueue(entrypoints, payloads, priorities), limit)
        except TimeoutError:
            return Run(0.0, cut=True)
        elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
        if len(ids) != count:
            raise RuntimeError(f"enqueue() returned {len(ids)} ids for {count} jobs")
        await queries.clear_queue()
    finally:
        await close()
    return Run(count / elapsed, cpu_us=cpu / count * 1e6)


def enqueue(dsn: str, count: int, limit: float) -> Run:
    """One ``Queries.enqueue()`` of ``count`` jobs: jobs/s."""
    return _run(_enqueue(dsn, count, limit))


async def _drain(dsn: str, count: int, limit: float) -> Run:
    from pgqueuer.qm import QueueManager
    from pgqueuer.types import QueueExecutionMode

    queries, close = await _connect(dsn)
    try:
        await queries.clear_queue()
        await queries.clear_queue_log()
        await queries.clear_statistics_log()
        await queries.enqueue(*_jobs(count))
    finally:
        await close()

    queries, close = await _connect(dsn)  # the worker's own connection
    try:
        manager = QueueManager(queries)
        done = [0]

        @manager.entrypoint(ENTRYPOINT)
        async def noop(job: object) -> None:
            done[0] += 1

        deadline = Deadline(limit)
        cpu = time.process_time()
        timer = asyncio.get_running_loop().call_later(limit, manager.shutdown.set)
        await manager.run(mode=QueueExecutionMode.drain)
        elapsed, cpu = time.perf_counter() - deadline.began, time.process_time() - cpu
        timer.cancel()
    finally:
        await close()
    queries, close = await _connect(dsn)
    try:
        left = await queries.queued_work([ENTRYPOINT])
        await queries.clear_queue()
    finally:
        await close()
    cut = deadline.expired and (left > 0 or done[0] < count)
    if not cut and (left or done[0] != count):
        raise RuntimeError(f"drained with {done[0]} of {count} jobs run, {left} still queued")
    return Run(done[0] / elapsed, cut=cut, cpu_us=cpu / max(done[0], 1) * 1e6)


def drain(dsn: str, count: int, limit: float) -> Run:
    """``count`` jobs enqueued, then the default ``QueueManager`` until the queue is
    empty (or ``limit`` seconds): jobs/s, from its start to its return."""
    return _run(_drain(dsn, count, limit))
