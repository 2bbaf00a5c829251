"""What every route of the portal shares: the dispatcher, the catalog, who the
visitor is, and the checks a request must pass before anything is read or changed.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request

from .._models import check_tenant
from ..catalog import Catalog
from ..exceptions import InvalidInputError
from ._auth import CSRF_COOKIE, CSRF_FIELD, SESSION_COOKIE, Signer, Visitor
from ._backend import Backend
from ._rendering import Renderer
from ._security import Refused, same_origin

__all__ = ["OperatorCallable", "PortalContext", "TenantCallable"]

TenantCallable = Callable[[Request], "str | Awaitable[str | None] | None"]
"""The host's answer to "which tenant is this visitor?": a tenant id, or ``None`` to refuse."""
OperatorCallable = Callable[[Request], "bool | Awaitable[bool]"]
"""The host's answer to "is this visitor an operator, who sees every tenant?"."""

MAX_FORM_FIELDS = 200


class PortalContext:
    """The portal's state, shared by its page and API routes."""

    def __init__(
        self,
        *,
        backend: Backend,
        catalog: Catalog | None,
        signer: Signer,
        renderer: Renderer,
        tenant_of: TenantCallable | None,
        operator: OperatorCallable | None,
        session_lifetime: int,
        page_size: int,
    ) -> None:
        self.backend = backend
        self.catalog = catalog
        self.signer = signer
        self.renderer = renderer
        self.session_lifetime = session_lifetime
        self.page_size = page_size
        self._tenant_of = tenant_of
        self._operator = operator

    async def visitor(self, request: Request) -> Visitor | None:
        """Who the visitor is: an operator if the ``operator`` callable says so; else
        the tenant the ``tenant_of`` callable names; else the one a login link's
        session cookie names; else ``None`` (refused)."""
        if self._operator is not None and await _call(self._operator, request) is True:
            return Visitor(None, operator=True)
        if self._tenant_of is not None:
            tenant = await _call(self._tenant_of, request)
            if tenant is not None:
                try:
                    return Visitor(check_tenant(tenant))
                except InvalidInputError:
                    raise Refused("the host named a tenant id that is not valid") from None
        return self.signer.session(
            request.cookies.get(SESSION_COOKIE), lifetime=self.session_lifetime
        )

    async def require(self, request: Request) -> Visitor:
        """The visitor; Refused (403) when nobody is signed in."""
        visitor = await self.visitor(request)
        if visitor is None:
            raise Refused("you are not signed in to the webhooks portal")
        return visitor

    async def form(self, request: Request, visitor: Visitor) -> FormData:
        """The posted form of a page, once it passed the cross-site and CSRF checks:
        Refused (403) otherwise."""
        if not same_origin(request):
            raise Refused("cross-site request refused")
        form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
        if not self.signer.csrf_valid(
            form.get(CSRF_FIELD), request.cookies.get(CSRF_COOKIE), visitor
        ):
            raise Refused(
                "the form's security token is missing or out of date: reload the page and try again"
            )
        return form

    async def api_body(self, request: Request) -> dict[str, Any]:
        """The JSON object an API call posted, once it passed the cross-site check and
        is JSON: Refused (403, or 415 for another content type) otherwise."""
        check_api(request)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise Refused("send a JSON body with Content-Type: application/json", status=415)
        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            body = await request.json()
        except ValueError:
            raise InvalidInputError("the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise InvalidInputError("the request body must be a JSON object")
        return body


def check_api(request: Request) -> None:
    """Refused (403) for an API call from another site."""
    if not same_origin(request):
        raise Refused("cross-site request refused")


async def _call(function: Callable[[Request], Any], request: Request) -> Any:
    """The host's callable: awaited if it is a coroutine function (or returns an
    awaitable), else run in the thread pool (it may do I/O: a session lookup)."""
    if inspect.iscoroutinefunction(function):
        return await function(request)
    result = await run_in_threadpool(function, request)
    if inspect.isawaitable(result):
        result = await result
    return result
