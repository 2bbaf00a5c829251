"""Run the async driver behind the sync driver's API, so one suite tests both.

``AsyncDriven`` owns an event loop on a thread of its own, builds an
:class:`~hookdispatch.AsyncDispatcher` there, and forwards each call of the
:class:`~hookdispatch.Dispatcher` API to it, waiting for the result. Options are
the sync ones: ``workers`` becomes ``concurrency`` and a sync ``sleep`` is wrapped.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import hookdispatch as hd

T = TypeVar("T")


class AsyncDriven:
    """A sync facade over an AsyncDispatcher running on its own loop thread."""

    def __init__(self, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        if "workers" in options:
            options["concurrency"] = options.pop("workers")
        sleep = options.pop("sleep", None)
        if sleep is not None:

            async def async_sleep(seconds: float) -> None:
                sleep(seconds)

            options["sleep"] = async_sleep
        self.hooks = self.run(self._open(options))
        self._closed = False

    @staticmethod
    async def _open(options: dict[str, Any]) -> hd.AsyncDispatcher:
        return await hd.AsyncDispatcher(**options).__aenter__()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.hooks, name)
        if inspect.iscoroutinefunction(attribute):

            def call(*args: Any, **kwargs: Any) -> Any:
                if self._closed:  # the loop is gone; the call can only say it is closed
                    return asyncio.run(attribute(*args, **kwargs))
                return self.run(attribute(*args, **kwargs))

            return call
        return attribute

    def close(self, timeout: float | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.run(self.hooks.aclose(timeout))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self.loop.close()

    def __enter__(self) -> AsyncDriven:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return repr(self.hooks)


Factory = Callable[..., Any]

DRIVERS: dict[str, Factory] = {"sync": hd.Dispatcher, "async": AsyncDriven}


def transport_for(driver: str, **options: Any) -> Any:
    """The default transport class of ``driver``, built with ``options``."""
    if driver == "sync":
        return hd.SocketTransport(**options)
    return hd.AsyncioTransport(**options)
