"""The portal's JSON API under ``/api/``: one route for each page and form, with the
same scoping (the visitor's tenant), the same validation (the library's), and the
same answers for another tenant's ids (404). It uses the host's authentication, and
refuses cross-site calls: every call is checked against ``Origin`` and
``Sec-Fetch-Site``, and a call that changes anything must send
``Content-Type: application/json`` (which a cross-site form cannot).

Errors are ``{"error": message}``, plus ``"fields": {name: message}`` for input the
library refused (422).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .._listing import Page
from .._models import Attempt, Delivery, Endpoint
from ..exceptions import InvalidInputError, NotFoundError
from . import _actions as actions
from ._auth import Visitor
from ._context import PortalContext, check_api
from ._rendering import body_text

__all__ = ["api_routes", "endpoint_json"]


def _time(moment: Any) -> str | None:
    return None if moment is None else moment.isoformat()


def endpoint_json(endpoint: Endpoint, health: actions.Health | None = None) -> dict[str, Any]:
    """An endpoint as the API shows it: never its secrets (``POST .../secret`` does)."""
    shown: dict[str, Any] = {
        "id": endpoint.id,
        "tenant": endpoint.tenant,
        "url": endpoint.url,
        "description": endpoint.description,
        "events": list(endpoint.events),
        "enabled": endpoint.enabled,
        "created_at": _time(endpoint.created_at),
        "header_names": list(endpoint.headers),
        "previous_secret_expires_at": _time(actions.until_grace_ends(endpoint)),
    }
    if health is not None:
        shown["health"] = {
            "recent_finished": health.finished,
            "success_rate": health.success_rate,
            "last_failure_at": _time(health.last_failure_at),
            "last_error": health.last_error,
        }
    return shown


def delivery_json(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "tenant": delivery.tenant,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "endpoint_id": delivery.endpoint_id,
        "status": delivery.status.value,
        "attempt_count": delivery.attempt_count,
        "last_error": delivery.last_error,
        "next_attempt_at": _time(delivery.next_attempt_at),
        "created_at": _time(delivery.created_at),
        "updated_at": _time(delivery.updated_at),
    }


def attempt_json(attempt: Attempt, headers: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "number": attempt.number,
        "started_at": _time(attempt.started_at),
        "duration": attempt.duration,
        "status_code": attempt.status_code,
        "failure": None if attempt.failure is None else attempt.failure.value,
        "error": attempt.error,
        "response_body": body_text(attempt.response_body),
        "request_headers": dict(headers),
    }


def _page(rows: list[dict[str, Any]], page: Page[Any]) -> dict[str, Any]:
    return {"data": rows, "next_cursor": page.next_cursor}


def _text(body: dict[str, Any], name: str, default: str = "") -> str:
    value = body.get(name, default)
    if not isinstance(value, str):
        raise actions.FieldErrors({name: f"{name} must be a string"})
    return value


def _events(body: dict[str, Any]) -> list[str]:
    value = body.get("events", ["*"])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise actions.FieldErrors({"events": "events must be a list of strings, such as ['*']"})
    return value


class Api:
    """The handlers of the API (one method per route)."""

    def __init__(self, ctx: PortalContext) -> None:
        self.ctx = ctx

    async def _visitor(self, request: Request) -> Visitor:
        check_api(request)
        return await self.ctx.require(request)

    async def _endpoint(self, request: Request, visitor: Visitor) -> Endpoint:
        return await self.ctx.backend.get_endpoint(
            request.path_params["endpoint_id"], tenant=visitor.tenant
        )

    async def endpoints(self, request: Request) -> Response:
        visitor = await self._visitor(request)
        if request.method == "POST":
            return await self._create(request, visitor)
        page = await self.ctx.backend.endpoints(
            tenant=visitor.tenant,
            after=request.query_params.get("after") or None,
            limit=self.ctx.page_size,
        )
        rows = [endpoint_json(e, await actions.health(self.ctx.backend, e)) for e in page]
        return JSONResponse(_page(rows, page))

    async def _create(self, request: Request, visitor: Visitor) -> Response:
        body = await self.ctx.api_body(request)
        url, description, events = _text(body, "url"), _text(body, "description"), _events(body)
        tenant = _text(body, "tenant") if visitor.operator else visitor.tenant
        if not tenant:
            raise actions.FieldErrors({"tenant": "an operator must name the endpoint's tenant"})
        try:
            endpoint = await self.ctx.backend.add_endpoint(
                url, events=events, tenant=tenant, description=description
            )
        except InvalidInputError as exc:
            field = (
                "tenant"
                if str(exc).startswith("tenant ")
                else actions.endpoint_field(
                    exc, events=events, description=description, catalog=self.ctx.catalog
                )
            )
            raise actions.FieldErrors({field: str(exc)}) from None
        shown = endpoint_json(endpoint)
        shown["secret"] = endpoint.secret  # shown once, as the page's reveal does
        return JSONResponse(shown, status_code=201)

    async def endpoint(self, request: Request) -> Response:
        visitor = await self._visitor(request)
        endpoint = await self._endpoint(request, visitor)
        if request.method == "DELETE":
            await self.ctx.api_body(request)
            cancelled = await self.ctx.backend.delete_endpoint(endpoint.id, tenant=visitor.tenant)
            return JSONResponse({"deleted": endpoint.id, "cancelled_deliveries": cancelled})
        if request.method == "PATCH":
            body = await self.ctx.api_body(request)
            url = _text(body, "url", endpoint.url)
            description = _text(body, "description", endpoint.description)
            events = _events(body) if "events" in body else list(endpoint.events)
            try:
                endpoint = await self.ctx.backend.update_endpoint(
                    endpoint.id, url=url, events=events, description=description
                )
            except InvalidInputError as exc:
                field = actions.endpoint_field(
                    exc, events=events, description=description, catalog=self.ctx.catalog
                )
                raise actions.FieldErrors({field: str(exc)}) from None
        return JSONResponse(
            endpoint_json(endpoint, await actions.health(self.ctx.backend, endpoint))
        )

    async def enable(self, request: Request) -> Response:
        return await self._set_enabled(request, enabled=True)

    async def disable(self, request: Request) -> Response:
        return await self._set_enabled(request, enabled=False)

    async def _set_enabled(self, request: Request, *, enabled: bool) -> Response:
        visitor = await self._visitor(request)
        await self.ctx.api_body(request)
        endpoint = await self._endpoint(request, visitor)
        endpoint = await self.ctx.backend.set_enabled(endpoint.id, enabled=enabled)
        return JSONResponse(endpoint_json(endpoint))

    async def secret(self, request: Request) -> Response:
        visitor = await self._visitor(request)
        await self.ctx.api_body(request)
        endpoint = await self._endpoint(request, visitor)
        return JSONResponse(
            {
                "secret": endpoint.secret,
                "previous_secret_expires_at": _time(actions.until_grace_ends(endpoint)),
            }
        )

    async def rotate(self, request: Request) -> Response:
        visitor = await self._visitor(request)
        body = await self.ctx.api_body(request)
        endpoint = await self._endpoint(request, visitor)
        grace = body.get("grace", 86400)
        try:
            endpoint = await self.ctx.backend.rotate_secret(endpoint.id, grace=grace)
        except InvalidInputError as exc:
            raise actions.FieldErrors({"grace": str(exc)}) from None
        shown = endpoint_json(endpoint)
        shown["secret"] = endpoint.secret
        return JSONResponse(shown)

    async def end_rotation(self, request: Request) -> Response:
        visitor = await self._visitor(request)
        await self.ctx.api_body(request)
        endpoint = await self._endpoint(request, visitor)
        return JSONResponse(endpoint_json(await self.ctx.backend.end_rotation(endpoint.id)))

    async def test(self, request: Request) -> Response:
        visitor = await self._visitor(request)
        body = await self.ctx.api_body(request)
        endpoint = await self._endpoint(request, visitor)
        event_type = _text(body, "event_type")
        try:
            delivery = await self.ctx.backend.send_test(
                endpoint.id, event_type, body.get("data"), tenant=visitor.tenant
            )
        except InvalidInputError as exc:
            message = str(exc)
            field = "event_type" if "event type" in message and "schema" not in message else "data"
            raise actions.FieldErrors({field: message}) from None
        return JSONResponse(await self._delivery_json(delivery, visitor), status_code=201)

    async def replay_failed(self, request: Request) -> Response:
        visitor = await self._visitor(request)
        body = await self.ctx.api_body(request)
        endpoint = await self._endpoint(request, visitor)
        since = actions.parse_moment("since", _text(body, "since"))
        if since is None:
            raise actions.FieldErrors({"since": "give the time to replay failed deliveries from"})
        candidates = await actions.replay_candidates(self.ctx.backend, visitor, endpoint, since)
        if body.get("confirm") is not True:
            return JSONResponse({"count": len(candidates), "replayed": []})
        fresh = await actions.replay(self.ctx.backend, endpoint, candidates)
        return JSONResponse({"count": len(candidates), "replayed": fresh})

    async def deliveries(self, request: Request) -> Response:
        visitor = await self._visitor(request)
        params = request.query_params
        page = await self.ctx.backend.deliveries(
            tenant=visitor.tenant,
            endpoint_id=params.get("endpoint_id") or None,
            event_type=params.get("event_type") or None,
            status=params.get("status") or None,
            since=actions.parse_moment("since", params.get("since")),
            until=actions.parse_moment("until", params.get("until")),
            after=params.get("after") or None,
            limit=self.ctx.page_size,
        )
        return JSONResponse(_page([delivery_json(d) for d in page], page))

    async def delivery(self, request: Request) -> Response:
        visitor = await self._visitor(request)
        delivery = await self.ctx.backend.get_delivery(
            request.path_params["delivery_id"], tenant=visitor.tenant
        )
        return JSONResponse(await self._delivery_json(delivery, visitor))

    async def _delivery_json(self, delivery: Delivery, visitor: Visitor) -> dict[str, Any]:
        event = await self.ctx.backend.get_event(delivery.event_id, tenant=visitor.tenant)
        attempts = await self.ctx.backend.attempts(delivery.id, tenant=visitor.tenant)
        try:
            endpoint: Endpoint | None = await self.ctx.backend.get_endpoint(
                delivery.endpoint_id, tenant=visitor.tenant
            )
        except NotFoundError:
            endpoint = None
        shown = delivery_json(delivery)
        shown["payload"] = event.data
        shown["attempts"] = [
            attempt_json(a, actions.sent_headers(endpoint, delivery, event, a)) for a in attempts
        ]
        return shown

    async def replay(self, request: Request) -> Response:
        visitor = await self._visitor(request)
        await self.ctx.api_body(request)
        delivery = await self.ctx.backend.get_delivery(
            request.path_params["delivery_id"], tenant=visitor.tenant
        )
        fresh = await self.ctx.backend.redeliver(delivery.id)
        return JSONResponse(await self._delivery_json(fresh, visitor), status_code=201)

    async def catalog(self, request: Request) -> Response:
        await self._visitor(request)
        types = [
            {"name": t.name, "description": t.description, "schema": t.schema, "example": t.example}
            for t in self.ctx.catalog or ()
        ]
        return JSONResponse({"data": types})


def api_routes(ctx: PortalContext) -> list[BaseRoute]:
    """Every API route, under ``/api``."""
    api = Api(ctx)
    get, post = ["GET"], ["POST"]
    return [
        Route("/api/endpoints", api.endpoints, methods=["GET", "POST"], name="api_endpoints"),
        Route(
            "/api/endpoints/{endpoint_id}",
            api.endpoint,
            methods=["GET", "PATCH", "DELETE"],
            name="api_endpoint",
        ),
        Route("/api/endpoints/{endpoint_id}/enable", api.enable, methods=post, name="api_enable"),
        Route(
            "/api/endpoints/{endpoint_id}/disable", api.disable, methods=post, name="api_disable"
        ),
        Route("/api/endpoints/{endpoint_id}/secret", api.secret, methods=post, name="api_secret"),
        Route("/api/endpoints/{endpoint_id}/rotate", api.rotate, methods=post, name="api_rotate"),
        Route(
            "/api/endpoints/{endpoint_id}/end-rotation",
            api.end_rotation,
            methods=post,
            name="api_end_rotation",
        ),
        Route("/api/endpoints/{endpoint_id}/test", api.test, methods=post, name="api_test"),
        Route(
            "/api/endpoints/{endpoint_id}/replay-failed",
            api.replay_failed,
            methods=post,
            name="api_replay_failed",
        ),
        Route("/api/deliveries", api.deliveries, methods=get, name="api_deliveries"),
        Route("/api/deliveries/{delivery_id}", api.delivery, methods=get, name="api_delivery"),
        Route("/api/deliveries/{delivery_id}/replay", api.replay, methods=post, name="api_replay"),
        Route("/api/event-types", api.catalog, methods=get, name="api_event_types"),
    ]
