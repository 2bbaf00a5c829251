"""Pages, rendered on the server by Jinja2 with autoescaping always on: every value a
customer or a receiver controls (URLs, descriptions, response bodies, event data)
reaches the HTML as text, never as markup. The templates and the stylesheet and
script they load ship inside the package; nothing comes from elsewhere.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from .._types import JSON
from ..catalog import Catalog
from ._auth import CSRF_COOKIE, Signer, Visitor, new_nonce

__all__ = ["STATIC_FILES", "Renderer", "path_for", "pretty_json", "when"]

_PACKAGE = "hookdispatch.portal"

STATIC_FILES = {
    "portal.css": "text/css; charset=utf-8",
    "portal.js": "text/javascript; charset=utf-8",
}
"""The files under ``static/`` the portal serves, with their content types."""


def static_file(name: str) -> bytes:
    """The bytes of one of :data:`STATIC_FILES`."""
    return resources.files(_PACKAGE).joinpath("static", name).read_bytes()


def path_for(request: Request, name: str, /, **params: Any) -> str:
    """The path of the portal's route ``name``, under the portal's mount point, without
    a host (links survive a proxy that rewrites the host). The portal's own router
    answers (``request.app`` inside the portal), not the host's."""
    root = str(request.scope.get("root_path", "")).rstrip("/")
    return root + str(request.app.url_path_for(name, **params))


def when(moment: datetime | None) -> str:
    """A time as the pages show it: ``2024-06-30 15:41:23 UTC``."""
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def local_input(moment: datetime | None) -> str:
    """A time as a ``datetime-local`` input holds it (UTC)."""
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


def pretty_json(value: JSON) -> str:
    """``value`` as indented JSON text (escaped by the template like any text)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def body_text(body: bytes) -> str:
    """A response body as text: UTF-8, undecodable bytes replaced."""
    return body.decode("utf-8", errors="replace")


def duration(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


class Renderer:
    """Renders a template into a response, with what every page needs: the visitor,
    a CSRF token for its forms (setting the CSRF cookie it is bound to when the
    browser has none), and ``url()`` for links."""

    def __init__(self, *, signer: Signer, title: str, catalog: Catalog | None) -> None:
        self._signer = signer
        self._catalog = catalog
        self._title = title
        self._env = jinja2.Environment(
            loader=jinja2.PackageLoader(_PACKAGE, "templates"),
            autoescape=True,  # every template, whatever its name
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.filters.update(
            when=when, local_input=local_input, pretty_json=pretty_json, body_text=body_text
        )
        self._env.filters["duration"] = duration

    def render(
        self,
        request: Request,
        template: str,
        visitor: Visitor | None,
        *,
        status_code: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        nonce = request.cookies.get(CSRF_COOKIE)
        fresh = nonce is None
        if nonce is None:
            nonce = new_nonce()
        csrf = "" if visitor is None else self._signer.csrf_token(nonce, visitor)

        def url(name: str, /, **params: Any) -> str:
            return path_for(request, name, **params)

        context.setdefault("notice", None)
        html = self._env.get_template(template).render(
            catalog=self._catalog,
            request=request,
            visitor=visitor,
            csrf_token=csrf,
            url=url,
            title=self._title,
            **context,
        )
        response = HTMLResponse(html, status_code=status_code)
        if fresh and visitor is not None:
            set_cookie(request, response, CSRF_COOKIE, nonce, max_age=None)
        return response


def cookie_path(request: Request) -> str:
    """The portal's mount point: its cookies go to its own pages only."""
    root = str(request.scope.get("root_path", "")).rstrip("/")
    return root + "/"


def set_cookie(
    request: Request, response: Any, name: str, value: str, *, max_age: int | None
) -> None:
    """Set one of the portal's cookies: HttpOnly, SameSite=Lax, Secure over https,
    scoped to the portal's path."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=cookie_path(request),
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="lax",
    )
