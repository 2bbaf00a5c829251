"""The raw ceilings: the same POSTs from bare HTTP clients, with nothing else to do.

* ``httpx.Client``: one thread in a loop, or shared by N threads;
* ``httpx.AsyncClient`` and ``aiohttp``: N coroutines over one pooled client;
* httpx over the ``httpx-aiohttp`` transport, where installed.

No signing, no storage, no retries: what a hand-rolled loop achieves at best.
Each returns a :class:`~benchmarks.harness.Run` in deliveries per second; every
loop stops at ``count`` requests or at the time limit.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httpx

from .harness import BODY, HEADERS, Deadline, Run


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
