"""The raw ceilings: the same POSTs from bare HTTP clients, with nothing else to do.

* ``http.client``: N threads, each with its own keep-alive ``HTTPConnection``: the
  thread pool's true ceiling (the standard library's client, nothing on top);
* ``httpx.Client``: one thread in a loop, or shared by N threads;
* ``httpx.AsyncClient`` and ``aiohttp``: N coroutines over one pooled client;
* httpx over the ``httpx-aiohttp`` transport, where installed.

No signing, no storage, no retries: what a hand-rolled loop achieves at best.
Each returns a :class:`~benchmarks.harness.Run` in deliveries per second; every
loop stops at ``count`` requests or at the time limit.

The storage ceilings: one single-row INSERT and its COMMIT, on the same database
as the storage and with its settings, timed one call at a time like ``dispatch()``
(:func:`insert_commit_sqlite`, :func:`insert_commit_postgres`): a ``dispatch()``
stores one event and its delivery, so this is the least a durable one can cost.

The statements a ``dispatch()`` runs, bare (:func:`dispatch_sql_sqlite`,
:func:`dispatch_sql_postgres`): the storage's own SQL for an event with no worker
free to lease its delivery (the fan-out path, as in the latency table), run on its
own tables through a bare connection, every parameter made beforehand. What the
storage's schema costs a dispatch, with none of hookdispatch's Python around it:
``dispatch()`` over this is what the library adds, this over INSERT+COMMIT what
the schema does (the event's two indexes, the fan-out row, the subscriber lookup).
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import httpx

import hookdispatch as hd
from hookdispatch._models import subscription_keys
from hookdispatch.storage import _postgres, _sqlite

from .harness import BODY, DATA, EVENT_TYPE, HEADERS, Deadline, Run
from .latency import percentiles, timed


def _run(done: int, count: int, began: float, cpu_began: float) -> Run:
    elapsed = time.perf_counter() - began
    cpu = time.process_time() - cpu_began
    return Run(done / elapsed, cut=done < count, cpu_us=cpu / max(done, 1) * 1e6)


def httpx_threads(url: str, count: int, threads: int, limit: float) -> Run:
    """One ``httpx.Client`` shared by ``threads`` threads (1: a plain loop)."""
    limits = httpx.Limits(max_connections=threads, max_keepalive_connections=threads)
    with httpx.Client(limits=limits) as client:
        lock = threading.Lock()
        remaining = [count]
        deadline = Deadline(limit)
        cpu_began = time.process_time()

        def work() -> None:
            while not deadline.expired:
                with lock:
                    if remaining[0] == 0:
                        return
                    remaining[0] -= 1
                client.post(url, content=BODY, headers=HEADERS).read()

        if threads == 1:
            work()
        else:
            workers = [threading.Thread(target=work) for _ in range(threads)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        return _run(count - remaining[0], count, deadline.began, cpu_began)


def http_client_threads(url: str, count: int, threads: int, limit: float) -> Run:
    """``threads`` threads, each with its own keep-alive ``http.client.HTTPConnection``.

    They share one counter of requests left; each reads the whole response before
    its next request. Accounting as :func:`httpx_threads`.
    """
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
    lock = threading.Lock()
    remaining = [count]
    deadline = Deadline(limit)
    cpu_began = time.process_time()

    def work() -> None:
        connection = http.client.HTTPConnection(host, port, timeout=limit + 5)
        try:
            while not deadline.expired:
                with lock:
                    if remaining[0] == 0:
                        return
                    remaining[0] -= 1
                connection.request("POST", path, body=BODY, headers=HEADERS)
                connection.getresponse().read()
        finally:
            connection.close()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return _run(count - remaining[0], count, deadline.began, cpu_began)


async def _pool(count: int, concurrency: int, limit: float, send: Callable[[], Awaitable[None]]):
    """``concurrency`` coroutines take requests from one counter until it or time runs out."""
    remaining = [count]
    deadline = Deadline(limit)
    cpu_began = time.process_time()

    async def work() -> None:
        while remaining[0] and not deadline.expired:
            remaining[0] -= 1
            await send()

    await asyncio.gather(*(work() for _ in range(concurrency)))
    return _run(count - remaining[0], count, deadline.began, cpu_began)


async def _aiohttp(url: str, count: int, concurrency: int, limit: float) -> Run:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send() -> None:
            async with session.post(url, data=BODY, headers=HEADERS) as response:
                await response.read()

        return await _pool(count, concurrency, limit, send)


async def _httpx_async(
    url: str, count: int, concurrency: int, limit: float, transport: object = None
) -> Run:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, transport=transport) as client:  # type: ignore[arg-type]

        async def send() -> None:
            response = await client.post(url, content=BODY, headers=HEADERS)
            await response.aread()

        return await _pool(count, concurrency, limit, send)


def aiohttp_raw(url: str, count: int, concurrency: int, limit: float) -> Run:
    return asyncio.run(_aiohttp(url, count, concurrency, limit))


def httpx_async(url: str, count: int, concurrency: int, limit: float) -> Run:
    return asyncio.run(_httpx_async(url, count, concurrency, limit))


def has_httpx_aiohttp() -> bool:
    try:
        import httpx_aiohttp  # noqa: F401
    except ImportError:
        return False
    return True


def httpx_over_aiohttp(url: str, count: int, concurrency: int, limit: float) -> Run:
    import httpx_aiohttp

    return asyncio.run(
        _httpx_async(url, count, concurrency, limit, httpx_aiohttp.AiohttpTransport())
    )


ROW_BODY = BODY.decode().ljust(200)
"""The INSERT ceilings' row body: about the size of a stored webhook body."""

_tables = itertools.count()


def insert_commit_sqlite(folder: Path, count: int, limit: float) -> Run:
    """``BEGIN IMMEDIATE; INSERT one row; COMMIT`` per call on a fresh SQLite file: µs.

    The connection is opened as SQLiteStorage opens its own (autocommit, explicit
    ``BEGIN IMMEDIATE``), with its pragmas: ``synchronous = NORMAL``, its page size,
    WAL, and its writer's checkpoint size. The file goes in ``folder``, beside the
    storages' files.
    """
    path = folder / f"insert-commit-{next(_tables)}.db"
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    try:
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA page_size = {getattr(_sqlite, 'PAGE_SIZE', 2048)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise RuntimeError(f"{path}: journal_mode is {mode}, not WAL")
        _checkpoints_as_the_writer(conn)
        conn.execute("CREATE TABLE t (id TEXT PRIMARY KEY, body TEXT)")
        ids = (f"row_{n:012d}" for n in itertools.count())

        def call() -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t VALUES (?, ?)", (next(ids), ROW_BODY))
            conn.execute("COMMIT")

        samples = timed(call, count, limit)
    finally:
        conn.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return percentiles(samples)


def insert_commit_postgres(dsn: str, count: int, limit: float) -> Run:
    """``INSERT INTO t VALUES (%s, %s)`` per call, one connection in autocommit: µs.

    One round trip is the INSERT and its COMMIT, through one cursor used again for
    every call (a cursor made anew costs some 30 µs of CPU; PostgresStorage keeps
    its own). ``dsn``: the benchmark's throwaway database (``synchronous_commit =
    off``, as PostgresStorage is measured there).
    """
    import psycopg

    table = f"insert_commit_{next(_tables)}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id TEXT PRIMARY KEY, body TEXT)")
        try:
            ids = (f"row_{n:012d}" for n in itertools.count())
            insert = f"INSERT INTO {table} VALUES (%s, %s)"
            cursor = conn.cursor()  # one for every call, as PostgresStorage keeps its own
            samples = timed(lambda: cursor.execute(insert, (next(ids), ROW_BODY)), count, limit)
        finally:
            conn.execute(f"DROP TABLE {table}")
    return percentiles(samples)


def _checkpoints_as_the_writer(conn: sqlite3.Connection) -> None:
    """Checkpoint as often as SQLiteStorage's writer does (used from threads only,
    as in the latency table), where the hookdispatch measured has that setting."""
    checkpoint_every = getattr(_sqlite, "_checkpoint_every", None)
    if checkpoint_every is not None:
        checkpoint_every(conn, _sqlite._WAL_BYTES)


def _events(storage: hd.Storage, count: int) -> tuple[list[hd.Event], datetime]:
    """``count`` new events, made now, and one endpoint of ``storage`` subscribed to
    them (the one a ``dispatch()`` in the latency table finds)."""
    now = datetime.now(UTC)
    storage.add_endpoint(hd.Endpoint.create(LOCAL_URL, now=now))
    return [hd.Event.create(EVENT_TYPE, DATA, now=now) for _ in range(count)], now


LOCAL_URL = "http://127.0.0.1:9/never-sent"
"""The floors' endpoint: nothing is sent to it (no dispatcher runs)."""


def dispatch_sql_sqlite(make_storage: Callable[[], hd.Storage], count: int, limit: float) -> Run:
    """``SQLiteStorage.add_event_to_subscribers``'s transaction per call, bare: µs.

    ``BEGIN IMMEDIATE``, the event's INSERT, the fan-out row's INSERT (its
    subscribers looked up by the same statement), ``COMMIT``: the storage's own
    statements, on a connection opened as its own are (checkpointing as its writer
    does), to a fresh storage's file.
    """
    storage = make_storage()
    if not isinstance(storage, hd.SQLiteStorage):
        raise TypeError(f"an SQLiteStorage, not {type(storage).__name__}")
    try:
        events, now = _events(storage, count)
        keys = subscription_keys(EVENT_TYPE)
        fan_out = _sqlite._fan_out_sql(len(keys))
        made = iter(
            [
                (
                    _sqlite._event_params(event),
                    (event.id, _sqlite._ts(now), event.tenant, event.type, event.tenant, *keys),
                )
                for event in events
            ]
        )
        conn = storage._open_connection()
        _checkpoints_as_the_writer(conn)

        def call() -> None:
            event, fan = next(made)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(_sqlite._INSERT_EVENT, event)
            conn.execute(fan_out, fan)
            conn.execute("COMMIT")

        samples = timed(call, count, limit)
    finally:
        storage.close()
    return percentiles(samples)


def dispatch_sql_postgres(
    make_storage: Callable[[], hd.Storage], dsn: str, count: int, limit: float
) -> Run:
    """``PostgresStorage.add_event_to_subscribers``'s one statement per call, bare: µs.

    The event, its subscribers looked up and its fan-out row, in one round trip: the
    storage's own statement, on one connection in autocommit (one cursor, used again
    for every call, as the storage keeps its own), to a fresh storage's schema in the
    benchmark's database.
    """
    import psycopg

    storage = make_storage()
    if not isinstance(storage, hd.PostgresStorage):
        raise TypeError(f"a PostgresStorage, not {type(storage).__name__}")
    try:
        events, now = _events(storage, count)
        statement = storage._q(_postgres._INSERT_EVENT_TO_FANOUT)
        made = iter([_postgres._fan_out_params(event, now) for event in events])
        with psycopg.connect(dsn, autocommit=True) as conn:
            cursor = conn.cursor()
            samples = timed(lambda: cursor.execute(statement, next(made)), count, limit)
    finally:
        storage.close()
    return percentiles(samples)
