"""The portal's pages: server-rendered HTML and plain forms, each one scoped to the
visitor. Every form posts a CSRF token; every page works without JavaScript.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from .._models import DeliveryStatus, Endpoint
from ..exceptions import InvalidInputError, NotFoundError
from . import _actions as actions
from ._auth import SESSION_COOKIE, Visitor
from ._context import PortalContext
from ._rendering import STATIC_FILES, path_for, pretty_json, set_cookie, static_file
from ._security import Refused

__all__ = ["page_routes"]

NOTICES = {
    "created": "Endpoint added. Reveal its signing secret below and give it to your receiver.",
    "updated": "Endpoint saved.",
    "enabled": "Endpoint enabled: deliveries resume.",
    "disabled": "Endpoint disabled: nothing is sent to it until you enable it.",
    "rotated": "Secret rotated. Reveal the new secret below and give it to your receiver.",
    "rotation-ended": "The previous secret no longer signs.",
    "deleted": "Endpoint deleted.",
    "replayed": "Replay started.",
}
"""The messages a redirect may ask a page to show (never text from the request)."""


def _value(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _values(form: FormData, name: str) -> list[str]:
    return [v for v in form.getlist(name) if isinstance(v, str)]


def _redirect(
    request: Request, name: str, /, *, notice: str | None = None, **params: Any
) -> Response:
    path = path_for(request, name, **params)
    if notice is not None:
        path += f"?notice={notice}"
    return RedirectResponse(path, status_code=303)


class Pages:
    """The handlers of the pages (one method per route)."""

    def __init__(self, ctx: PortalContext) -> None:
        self.ctx = ctx

    def _render(
        self,
        request: Request,
        template: str,
        visitor: Visitor,
        *,
        status_code: int = 200,
        **context: Any,
    ) -> Response:
        notice = NOTICES.get(request.query_params.get("notice", ""))
        return self.ctx.renderer.render(
            request,
            template,
            visitor,
            status_code=status_code,
            notice=notice,
            **context,
        )

    async def _endpoint(self, request: Request, visitor: Visitor) -> Endpoint:
        return await self.ctx.backend.get_endpoint(
            request.path_params["endpoint_id"], tenant=visitor.tenant
        )

    # Home, static files, login -------------------------------------------------------

    async def home(self, request: Request) -> Response:
        await self.ctx.require(request)
        return _redirect(request, "endpoints")

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC_FILES:
            raise NotFoundError(f"no static file {name!r}")
        return Response(
            static_file(name),
            media_type=STATIC_FILES[name],
            headers={"cache-control": "public, max-age=3600"},
        )

    async def login(self, request: Request) -> Response:
        visitor = self.ctx.signer.redeem(request.query_params.get("token", ""))
        if visitor is None:
            raise Refused(
                "this sign-in link is not valid: it has expired, was used already, or was"
                " altered. Ask for a new one."
            )
        response = _redirect(request, "endpoints")
        set_cookie(
            request,
            response,
            SESSION_COOKIE,
            self.ctx.signer.session_value(visitor),
            max_age=self.ctx.session_lifetime,
        )
        return response

    async def logout(self, request: Request) -> Response:
        visitor = await self.ctx.require(request)
        await self.ctx.form(request, visitor)
        response = self.ctx.renderer.render(
            request, "message.html", None, heading="Signed out", message="You are signed out."
        )
        response.delete_cookie(SESSION_COOKIE, path=str(request.scope.get("root_path", "")) + "/")
        return response

    # Endpoints ---------------------------------------------------------------------

    async def endpoints(self, request: Request) -> Response:
        visitor = await self.ctx.require(request)
        after = request.query_params.get("after") or None
        page = await self.ctx.backend.endpoints(
            tenant=visitor.tenant, after=after, limit=self.ctx.page_size
        )
        rows = [(e, await actions.health(self.ctx.backend, e)) for e in page]
        return self._render(
            request, "endpoints.html", visitor, rows=rows, next_cursor=page.next_cursor
        )

    async def new_endpoint(self, request: Request) -> Response:
        visitor = await self.ctx.require(request)
        values: dict[str, Any] = {
            "url": "",
            "description": "",
            "events": [],
            "other": "",
            "tenant": "",
        }
        errors: dict[str, str] = {}
        status = 200
        if request.method == "POST":
            form = await self.ctx.form(request, visitor)
            values = _endpoint_values(form)
            try:
                endpoint = await self._create(visitor, values)
            except actions.FieldErrors as exc:
                errors, status = exc.errors, 422
            else:
                return _redirect(request, "endpoint", notice="created", endpoint_id=endpoint.id)
        return self._render(
            request,
            "endpoint_form.html",
            visitor,
            status_code=status,
            endpoint=None,
            values=values,
            errors=errors,
            wildcards=_wildcards(self.ctx),
        )

    async def _create(self, visitor: Visitor, values: dict[str, Any]) -> Endpoint:
        events = actions.parse_events(values["events"], values["other"])
        tenant = values["tenant"] if visitor.operator else visitor.tenant
        if not tenant:
            raise actions.FieldErrors({"tenant": "an operator must name the endpoint's tenant"})
        try:
            return await self.ctx.backend.add_endpoint(
                values["url"], events=events, tenant=tenant, description=values["description"]
            )
        except InvalidInputError as exc:
            field = (
                "tenant"
                if str(exc).startswith("tenant ")
                else actions.endpoint_field(
                    exc, events=events, description=values["description"], catalog=self.ctx.catalog
                )
            )
            raise actions.FieldErrors({field: str(exc)}) from None

    async def endpoint(self, request: Request) -> Response:
        visitor = await self.ctx.require(request)
        endpoint = await self._endpoint(request, visitor)
        return await self._endpoint_page(request, visitor, endpoint, secret=None)

    async def _endpoint_page(
        self,
        request: Request,
        visitor: Visitor,
        endpoint: Endpoint,
        *,
        secret: str | None,
        status_code: int = 200,
        errors: dict[str, str] | None = None,
    ) -> Response:
        recent = await self.ctx.backend.deliveries(
            tenant=visitor.tenant, endpoint_id=endpoint.id, limit=10, newest_first=True
        )
        return self._render(
            request,
            "endpoint.html",
            visitor,
            status_code=status_code,
            endpoint=endpoint,
            health=await actions.health(self.ctx.backend, endpoint),
            recent=recent,
            secret=secret,
            grace_until=actions.until_grace_ends(endpoint),
            grace_choices=actions.GRACE_CHOICES,
            since=actions.default_since(),
            errors=errors or {},
        )

    async def edit_endpoint(self, request: Request) -> Response:
        visitor = await self.ctx.require(request)
        endpoint = await self._endpoint(request, visitor)
        known = {t.name for t in self.ctx.catalog or ()} | {w for w, _ in _wildcards(self.ctx)}
        values: dict[str, Any] = {
            "url": endpoint.url,
            "description": endpoint.description,
            "events": [e for e in endpoint.events if e in known],
            "other": " ".join(e for e in endpoint.events if e not in known),
            "tenant": endpoint.tenant,
        }
        errors: dict[str, str] = {}
        status = 200
        if request.method == "POST":
            form = await self.ctx.form(request, visitor)
            values = {**_endpoint_values(form), "tenant": endpoint.tenant}
            events = actions.parse_events(values["events"], values["other"])
            try:
                await self.ctx.backend.update_endpoint(
                    endpoint.id, url=values["url"], events=events, description=values["description"]
                )
            except InvalidInputError as exc:
                field = actions.endpoint_field(
                    exc, events=events, description=values["description"], catalog=self.ctx.catalog
                )
                errors, status = {field: str(exc)}, 422
            else:
                return _redirect(request, "endpoint", notice="updated", endpoint_id=endpoint.id)
        return self._render(
            request,
            "endpoint_form.html",
            visitor,
            status_code=status,
            endpoint=endpoint,
            values=values,
            errors=errors,
            wildcards=_wildcards(self.ctx),
        )

    async def enable(self, request: Request) -> Response:
        return await self._set_enabled(request, enabled=True)

    async def disable(self, request: Request) -> Response:
        return await self._set_enabled(request, enabled=False)

    async def _set_enabled(self, request: Request, *, enabled: bool) -> Response:
        visitor = await self.ctx.require(request)
        await self.ctx.form(request, visitor)
        endpoint = await self._endpoint(request, visitor)
        await self.ctx.backend.set_enabled(endpoint.id, enabled=enabled)
        notice = "enabled" if enabled else "disabled"
        return _redirect(request, "endpoint", notice=notice, endpoint_id=endpoint.id)

    async def reveal_secret(self, request: Request) -> Response:
        visitor = await self.ctx.require(request)
        await self.ctx.form(request, visitor)
        endpoint = await self._endpoint(request, visitor)
        return await self._endpoint_page(request, visitor, endpoint, secret=endpoint.secret)

    async def rotate(self, request: Request) -> Response:
        visitor = await self.ctx.require(request)
        form = await self.ctx.form(request, visitor)
        endpoint = await self._endpoint(request, visitor)
        try:
            grace = float(_value(form, "grace") or "86400")
            await self.ctx.backend.rotate_secret(endpoint.id, grace=grace)
        except (ValueError, InvalidInputError) as exc:
            message = str(exc) if isinstance(exc, InvalidInputError) else "pick a grace period"
            return await self._endpoint_page(
                request, visitor, endpoint, secret=None, status_code=422, errors={"grace": message}
            )
        return _redirect(request, "endpoint", notice="rotated", endpoint_id=endpoint.id)

    async def end_rotation(self, request: Request) -> Response:
        visitor = await self.ctx.require(request)
        await self.ctx.form(request, visitor)
        endpoint = await self._endpoint(request, visitor)
        await self.ctx.backend.end_rotation(endpoint.id)
        return _redirect(request, "endpoint", notice="rotation-ended", endpoint_id=endpoint.id)

    async def delete_endpoint(self, request: Request) -> Response:
        visitor = await self.ctx.require(request)
        endpoint = await self._endpoint(request, visitor)
        if request.method == "POST":
            await self.ctx.form(request, visitor)
            await self.ctx.backend.delete_endpoint(endpoint.id, tenant=visitor.tenant)
            return _redirect(request, "endpoints", notice="deleted")
        return self._render(request, "delete.html", visitor, endpoint=endpoint)

    async def test_event(self, request: Request) -> Response:
        visitor = await self.ctx.require(request)
        endpoint = await self._endpoint(request, visitor)
        types = [t.name for t in self.ctx.catalog] if self.ctx.catalog else []
        event_type = request.query_params.get("type") or (types[0] if types else "")
        errors: dict[str, str] = {}
        status = 200
        data_text = _example(self.ctx, event_type)
        if request.method == "POST":
            form = await self.ctx.form(request, visitor)
            event_type, data_text = _value(form, "event_type"), _value(form, "data")
            try:
                data = actions.parse_json_data(data_text)
                delivery = await self.ctx.backend.send_test(
                    endpoint.id, event_type, data, tenant=visitor.tenant
                )
            except actions.FieldErrors as exc:
                errors, status = exc.errors, 422
            except InvalidInputError as exc:
                message = str(exc)
                field = (
                    "event_type" if "event type" in message and "schema" not in message else "data"
                )
                errors, status = {field: message}, 422
            else:
                return _redirect(request, "delivery", delivery_id=delivery.id)
        return self._render(
            request,
            "test.html",
            visitor,
            status_code=status,
            endpoint=endpoint,
            types=types,
            event_type=event_type,
            data_text=data_text,
            errors=errors,
        )

    async def replay_failed(self, request: Request) -> Response:
        visitor = await self.ctx.require(request)
        form = await self.ctx.form(request, visitor)
        endpoint = await self._endpoint(request, visitor)
        try:
            since = actions.parse_moment("since", _value(form, "since"))
        except actions.FieldErrors as exc:
            return await self._endpoint_page(
                request, visitor, endpoint, secret=None, status_code=422, errors=exc.errors
            )
        if since is None:
            return await self._endpoint_page(
                request,
                visitor,
                endpoint,
                secret=None,
                status_code=422,
                errors={"since": "give the time to replay failed deliveries from"},
            )
        candidates = await actions.replay_candidates(self.ctx.backend, visitor, endpoint, since)
        if _value(form, "confirm") != "yes":
            return self._render(
                request,
                "replay_confirm.html",
                visitor,
                endpoint=endpoint,
                since=since,
                count=len(candidates),
            )
        await actions.replay(self.ctx.backend, endpoint, candidates)
        return _redirect(request, "deliveries_for", notice="replayed", endpoint_id=endpoint.id)

    # Deliveries --------------------------------------------------------------------

    async def deliveries(self, request: Request) -> Response:
        visitor = await self.ctx.require(request)
        return await self._deliveries(request, visitor, request.query_params.get("endpoint_id"))

    async def deliveries_for(self, request: Request) -> Response:
        visitor = await self.ctx.require(request)
        endpoint = await self._endpoint(request, visitor)
        return await self._deliveries(request, visitor, endpoint.id, own_page=True)

    async def _deliveries(
        self, request: Request, visitor: Visitor, endpoint_id: str | None, *, own_page: bool = False
    ) -> Response:
        params = request.query_params
        filters = {
            "endpoint_id": endpoint_id or "",
            "event_type": params.get("event_type", ""),
            "status": params.get("status", ""),
            "since": params.get("since", ""),
            "until": params.get("until", ""),
        }
        errors: dict[str, str] = {}
        rows: list[Any] = []
        next_cursor = None
        try:
            page = await self.ctx.backend.deliveries(
                tenant=visitor.tenant,
                endpoint_id=filters["endpoint_id"] or None,
                event_type=filters["event_type"] or None,
                status=filters["status"] or None,
                since=actions.parse_moment("since", filters["since"]),
                until=actions.parse_moment("until", filters["until"]),
                after=params.get("after") or None,
                limit=self.ctx.page_size,
            )
        except actions.FieldErrors as exc:
            errors = exc.errors
        except InvalidInputError as exc:
            errors = {_filter_field(str(exc)): str(exc)}
        else:
            rows, next_cursor = list(page), page.next_cursor
        query = urlencode(
            {k: v for k, v in filters.items() if v and (k != "endpoint_id" or not own_page)}
        )
        return self._render(
            request,
            "deliveries.html",
            visitor,
            status_code=422 if errors else 200,
            rows=rows,
            next_cursor=next_cursor,
            filters=filters,
            errors=errors,
            statuses=[s.value for s in DeliveryStatus],
            types=[t.name for t in self.ctx.catalog] if self.ctx.catalog else [],
            own_page=own_page,
            next_query=query,
        )

    async def delivery(self, request: Request) -> Response:
        visitor = await self.ctx.require(request)
        delivery = await self.ctx.backend.get_delivery(
            request.path_params["delivery_id"], tenant=visitor.tenant
        )
        event = await self.ctx.backend.get_event(delivery.event_id, tenant=visitor.tenant)
        attempts = await self.ctx.backend.attempts(delivery.id, tenant=visitor.tenant)
        try:
            endpoint: Endpoint | None = await self.ctx.backend.get_endpoint(
                delivery.endpoint_id, tenant=visitor.tenant
            )
        except NotFoundError:
            endpoint = None  # deleted since
        headers = [actions.sent_headers(endpoint, delivery, event, attempt) for attempt in attempts]
        return self._render(
            request,
            "delivery.html",
            visitor,
            delivery=delivery,
            event=event,
            payload=pretty_json(json.loads(event.body)),
            endpoint=endpoint,
            attempts=list(zip(attempts, headers, strict=True)),
            finished=delivery.status is not DeliveryStatus.PENDING,
        )

    async def replay_delivery(self, request: Request) -> Response:
        visitor = await self.ctx.require(request)
        await self.ctx.form(request, visitor)
        delivery = await self.ctx.backend.get_delivery(
            request.path_params["delivery_id"], tenant=visitor.tenant
        )
        fresh = await self.ctx.backend.redeliver(delivery.id)
        return _redirect(request, "delivery", delivery_id=fresh.id)

    async def event_types(self, request: Request) -> Response:
        visitor = await self.ctx.require(request)
        return self._render(request, "event_types.html", visitor)


def _endpoint_values(form: FormData) -> dict[str, Any]:
    return {
        "url": _value(form, "url").strip(),
        "description": _value(form, "description"),
        "events": _values(form, "events"),
        "other": _value(form, "other_events"),
        "tenant": _value(form, "tenant").strip(),
    }


def _wildcards(ctx: PortalContext) -> list[tuple[str, str]]:
    """The ``*`` and ``prefix.*`` patterns the form offers: everything, and each
    prefix of the catalog's types."""
    offered = [("*", "Every event type, including ones added later")]
    if ctx.catalog is None:
        return offered
    prefixes: dict[str, int] = {}
    for event_type in ctx.catalog:
        parts = event_type.name.split(".")
        for n in range(1, len(parts)):
            prefix = ".".join(parts[:n]) + ".*"
            prefixes[prefix] = prefixes.get(prefix, 0) + 1
    for prefix, count in prefixes.items():
        offered.append((prefix, f"Every {prefix[:-2]} event ({count} today, and new ones)"))
    return offered


def _example(ctx: PortalContext, event_type: str) -> str:
    if ctx.catalog is None or event_type not in ctx.catalog:
        return "{}"
    example = ctx.catalog[event_type].example
    return pretty_json({} if example is None else example)


def _filter_field(message: str) -> str:
    for name in ("status", "event_type", "endpoint_id", "since", "until"):
        if message.startswith(name) or name.replace("_", " ") in message[:40]:
            return name
    return "after"


def page_routes(ctx: PortalContext) -> list[BaseRoute]:
    """Every page's route."""
    pages = Pages(ctx)
    get, post, both = ["GET"], ["POST"], ["GET", "POST"]
    return [
        Route("/", pages.home, methods=get, name="home"),
        Route("/static/{name}", pages.static, methods=get, name="static"),
        Route("/login", pages.login, methods=get, name="login"),
        Route("/logout", pages.logout, methods=post, name="logout"),
        Route("/endpoints", pages.endpoints, methods=get, name="endpoints"),
        Route("/endpoints/new", pages.new_endpoint, methods=both, name="new_endpoint"),
        Route("/endpoints/{endpoint_id}", pages.endpoint, methods=get, name="endpoint"),
        Route(
            "/endpoints/{endpoint_id}/edit", pages.edit_endpoint, methods=both, name="edit_endpoint"
        ),
        Route("/endpoints/{endpoint_id}/enable", pages.enable, methods=post, name="enable"),
        Route("/endpoints/{endpoint_id}/disable", pages.disable, methods=post, name="disable"),
        Route("/endpoints/{endpoint_id}/secret", pages.reveal_secret, methods=post, name="secret"),
        Route("/endpoints/{endpoint_id}/rotate", pages.rotate, methods=post, name="rotate"),
        Route(
            "/endpoints/{endpoint_id}/end-rotation",
            pages.end_rotation,
            methods=post,
            name="end_rotation",
        ),
        Route(
            "/endpoints/{endpoint_id}/delete", pages.delete_endpoint, methods=both, name="delete"
        ),
        Route("/endpoints/{endpoint_id}/test", pages.test_event, methods=both, name="test"),
        Route(
            "/endpoints/{endpoint_id}/replay-failed",
            pages.replay_failed,
            methods=post,
            name="replay_failed",
        ),
        Route(
            "/endpoints/{endpoint_id}/deliveries",
            pages.deliveries_for,
            methods=get,
            name="deliveries_for",
        ),
        Route("/deliveries", pages.deliveries, methods=get, name="deliveries"),
        Route("/deliveries/{delivery_id}", pages.delivery, methods=get, name="delivery"),
        Route(
            "/deliveries/{delivery_id}/replay",
            pages.replay_delivery,
            methods=post,
            name="replay",
        ),
        Route("/event-types", pages.event_types, methods=get, name="event_types"),
    ]
