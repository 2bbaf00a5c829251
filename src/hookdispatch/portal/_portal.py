"""``Portal``: the ASGI application a host mounts, and its login links."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from ..catalog import Catalog
from ..exceptions import InvalidInputError, InvalidStateError, NotFoundError
from ._actions import FieldErrors
from ._api import api_routes
from ._auth import DEFAULT_LINK_LIFETIME, DEFAULT_SESSION_LIFETIME, Signer, Visitor
from ._backend import Backend
from ._context import OperatorCallable, PortalContext, TenantCallable
from ._pages import page_routes
from ._rendering import Renderer
from ._security import Refused, SecurityHeaders, check_frame_ancestors

if TYPE_CHECKING:
    from .._async_dispatcher import AsyncDispatcher
    from .._dispatcher import Dispatcher

__all__ = ["Portal", "Visitor"]

logger = logging.getLogger("hookdispatch.portal")


class Portal:
    """The webhooks portal, an ASGI application: each visitor manages their own
    tenant's endpoints and sees their own deliveries.

    * ``dispatcher``: the host's :class:`~hookdispatch.Dispatcher` (its calls run in a
      thread pool, never on the event loop) or
      :class:`~hookdispatch.AsyncDispatcher` (awaited).
    * ``tenant_of``: called with each request (a Starlette ``Request``; sync or
      async); returns the visitor's tenant id, or ``None`` to refuse (403). The host's
      own session decides: the portal has no users of its own.
    * ``operator``: called with each request; ``True`` makes the visitor an operator,
      who sees and manages every tenant's rows (each shows its tenant). Asked first.
    * ``catalog``: the event types offered on the forms; the dispatcher's by default.
    * ``secret_key``: at least 32 random characters; signs the login links, the
      session cookie they are exchanged for, and the CSRF tokens. Keep it secret and
      the same across the processes that serve the portal.
    * ``frame_ancestors``: the CSP ``frame-ancestors`` sources allowed to embed the
      pages in a frame; ``("'none'",)`` (the default) forbids framing.
    * ``title``: the pages' heading. ``session_lifetime``: seconds a login link's
      session lasts. ``page_size``: rows per listing page.

    A request the host's callables do not name a visitor for falls back to the
    session of a login link (:meth:`link_for`), if any; otherwise it is refused.
    Every id in a URL is looked up within the visitor's tenant: another tenant's id
    answers 404, like an unknown one. Raises InvalidInputError for bad options.
    """

    def __init__(
        self,
        dispatcher: Dispatcher | AsyncDispatcher,
        *,
        secret_key: str,
        tenant_of: TenantCallable | None = None,
        operator: OperatorCallable | None = None,
        catalog: Catalog | None = None,
        frame_ancestors: Sequence[str] = ("'none'",),
        title: str = "Webhooks",
        session_lifetime: int = DEFAULT_SESSION_LIFETIME,
        page_size: int = 50,
    ) -> None:
        backend = Backend(dispatcher)
        if catalog is not None and not isinstance(catalog, Catalog):
            raise InvalidInputError("catalog must be a hookdispatch Catalog, or None")
        if (
            isinstance(page_size, bool)
            or not isinstance(page_size, int)
            or not 1 <= page_size <= 200
        ):
            raise InvalidInputError(
                f"page_size must be a whole number from 1 to 200 (got {page_size!r:.40})"
            )
        if (
            isinstance(session_lifetime, bool)
            or not isinstance(session_lifetime, int)
            or session_lifetime < 60
        ):
            raise InvalidInputError(
                "session_lifetime must be a whole number of seconds, at least 60"
            )
        for name, value in (("tenant_of", tenant_of), ("operator", operator)):
            if value is not None and not callable(value):
                raise InvalidInputError(
                    f"{name} must be a callable that takes the request, or None"
                )
        ancestors = check_frame_ancestors(frame_ancestors)
        self._signer = Signer(secret_key)
        catalog = catalog if catalog is not None else backend.catalog
        self._context = PortalContext(
            backend=backend,
            catalog=catalog,
            signer=self._signer,
            renderer=Renderer(signer=self._signer, title=title, catalog=catalog),
            tenant_of=tenant_of,
            operator=operator,
            session_lifetime=session_lifetime,
            page_size=page_size,
        )
        self.starlette = Starlette(
            routes=[*page_routes(self._context), *api_routes(self._context)],
            exception_handlers={
                NotFoundError: self._error,
                Refused: self._error,
                FieldErrors: self._error,
                InvalidInputError: self._error,
                InvalidStateError: self._error,
                HTTPException: self._error,
            },
        )
        """The Starlette application (its ``routes`` list every page and API route)."""
        self.app = SecurityHeaders(self.starlette, frame_ancestors=ancestors)
        """The ASGI application to mount: the routes, with the security headers."""

    def __repr__(self) -> str:
        return f"<Portal routes={len(self.starlette.routes)}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    def link_for(
        self, tenant: str, *, expires_in: float = DEFAULT_LINK_LIFETIME, base_url: str = ""
    ) -> str:
        """A signed sign-in link for one tenant's portal, valid ``expires_in`` seconds
        (15 minutes by default, at most 7 days) and usable once (per process).

        ``base_url`` is where the portal is mounted, as visitors reach it
        (``https://app.example.com/settings/webhooks``); the link is
        ``{base_url}/login?token=...``. Opening it sets a short session cookie
        (HttpOnly, SameSite=Lax, Secure over https) and shows the endpoints. Raises
        InvalidInputError for an invalid tenant id or lifetime.
        """
        token = self._signer.link_token(Visitor(tenant), expires_in=expires_in)
        return f"{base_url.rstrip('/')}/login?token={token}"

    def operator_link(
        self, *, expires_in: float = DEFAULT_LINK_LIFETIME, base_url: str = ""
    ) -> str:
        """A signed sign-in link, as :meth:`link_for`, for an operator: every tenant."""
        token = self._signer.link_token(Visitor(None, operator=True), expires_in=expires_in)
        return f"{base_url.rstrip('/')}/login?token={token}"

    async def _error(self, request: Request, exc: Exception) -> Response:
        status, fields = _status(exc)
        message = str(exc.detail) if isinstance(exc, HTTPException) else str(exc)
        if status == 404:
            message = "Not found: there is nothing here, or it is not yours to see."
        root = str(request.scope.get("root_path", ""))
        path = request.scope["path"]
        relative = path[len(root) :] if root and path.startswith(root) else path
        if relative.startswith("/api/"):
            body: dict[str, object] = {"error": message}
            if fields:
                body["fields"] = fields
            return JSONResponse(body, status_code=status)
        visitor = None if isinstance(exc, Refused) else await self._context.visitor(request)
        return self._context.renderer.render(
            request,
            "message.html",
            visitor,
            status_code=status,
            heading=_HEADINGS.get(status, "Something went wrong"),
            message=message,
        )


_HEADINGS = {
    400: "That did not work",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    409: "Not now",
    415: "Not allowed",
    422: "Please check what you entered",
}


def _status(exc: Exception) -> tuple[int, dict[str, str]]:
    if isinstance(exc, Refused):
        return exc.status, {}
    if isinstance(exc, NotFoundError):
        return 404, {}
    if isinstance(exc, FieldErrors):
        return 422, exc.errors
    if isinstance(exc, InvalidStateError):
        return 409, {}
    if isinstance(exc, HTTPException):
        return exc.status_code, {}
    return 400, {}
