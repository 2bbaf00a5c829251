"""The dispatcher, seen from the event loop: the same calls whether the host gave a
:class:`~hookdispatch.Dispatcher` (run in Starlette's thread pool, never blocking the
loop) or an :class:`~hookdispatch.AsyncDispatcher` (awaited).
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, cast

from starlette.concurrency import run_in_threadpool

from .._dispatcher import Dispatcher
from .._listing import Page
from .._models import Attempt, Delivery, Endpoint, Event
from .._types import JSON
from ..catalog import Catalog
from ..exceptions import InvalidInputError

__all__ = ["Backend"]


class Backend:
    """Every dispatcher call the portal makes, as a coroutine."""

    def __init__(self, dispatcher: object) -> None:
        from .._async_dispatcher import AsyncDispatcher  # noqa: PLC0415 - loads asyncio parts

        if isinstance(dispatcher, AsyncDispatcher):
            self._async = True
        elif isinstance(dispatcher, Dispatcher):
            self._async = False
        else:
            raise InvalidInputError(
                "the portal needs a hookdispatch Dispatcher or AsyncDispatcher"
                f" (got {type(dispatcher).__name__})"
            )
        self._dispatcher: Any = dispatcher

    @property
    def catalog(self) -> Catalog | None:
        """The dispatcher's catalog, if it has one."""
        catalog = self._dispatcher.catalog
        return catalog if isinstance(catalog, Catalog) else None

    async def _run(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        method = getattr(self._dispatcher, name)
        if self._async:
            return await method(*args, **kwargs)
        return await run_in_threadpool(functools.partial(method, *args, **kwargs))

    async def endpoints(
        self, *, tenant: str | None, after: str | None = None, limit: int = 50
    ) -> Page[Endpoint]:
        return cast(
            Page[Endpoint], await self._run("endpoints", tenant=tenant, after=after, limit=limit)
        )

    async def get_endpoint(self, endpoint_id: str, *, tenant: str | None) -> Endpoint:
        return cast(Endpoint, await self._run("get_endpoint", endpoint_id, tenant=tenant))

    async def add_endpoint(
        self, url: str, *, events: list[str], tenant: str, description: str
    ) -> Endpoint:
        return cast(
            Endpoint,
            await self._run(
                "add_endpoint", url, events=events, tenant=tenant, description=description
            ),
        )

    async def update_endpoint(
        self, endpoint_id: str, *, url: str, events: list[str], description: str
    ) -> Endpoint:
        return cast(
            Endpoint,
            await self._run(
                "update_endpoint", endpoint_id, url=url, events=events, description=description
            ),
        )

    async def set_enabled(self, endpoint_id: str, *, enabled: bool) -> Endpoint:
        name = "enable_endpoint" if enabled else "disable_endpoint"
        return cast(Endpoint, await self._run(name, endpoint_id))

    async def delete_endpoint(self, endpoint_id: str, *, tenant: str | None) -> int:
        return cast(int, await self._run("delete_endpoint", endpoint_id, tenant=tenant))

    async def rotate_secret(self, endpoint_id: str, *, grace: float) -> Endpoint:
        return cast(Endpoint, await self._run("rotate_secret", endpoint_id, grace=grace))

    async def end_rotation(self, endpoint_id: str) -> Endpoint:
        return cast(Endpoint, await self._run("end_rotation", endpoint_id))

    async def send_test(
        self, endpoint_id: str, event_type: str, data: JSON | None, *, tenant: str | None
    ) -> Delivery:
        return cast(
            Delivery, await self._run("send_test", endpoint_id, event_type, data, tenant=tenant)
        )

    async def deliveries(
        self,
        *,
        tenant: str | None,
        endpoint_id: str | None = None,
        event_type: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: str | None = None,
        limit: int = 50,
        newest_first: bool = True,
    ) -> Page[Delivery]:
        return cast(
            Page[Delivery],
            await self._run(
                "deliveries",
                tenant=tenant,
                endpoint_id=endpoint_id,
                event_type=event_type,
                status=status,
                since=since,
                until=until,
                after=after,
                limit=limit,
                newest_first=newest_first,
            ),
        )

    async def get_delivery(self, delivery_id: str, *, tenant: str | None) -> Delivery:
        return cast(Delivery, await self._run("get_delivery", delivery_id, tenant=tenant))

    async def get_event(self, event_id: str, *, tenant: str | None) -> Event:
        return cast(Event, await self._run("get_event", event_id, tenant=tenant))

    async def attempts(self, delivery_id: str, *, tenant: str | None) -> list[Attempt]:
        return cast(list[Attempt], await self._run("attempts", delivery_id, tenant=tenant))

    async def redeliver(self, delivery_id: str) -> Delivery:
        return cast(Delivery, await self._run("redeliver", delivery_id))
