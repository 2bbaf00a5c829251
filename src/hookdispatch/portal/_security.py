"""Response headers on every answer (a strict Content-Security-Policy, a configurable
``frame-ancestors``), and the checks that refuse cross-site requests.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..exceptions import HookDispatchError, InvalidInputError

__all__ = ["Refused", "SecurityHeaders", "check_frame_ancestors", "same_origin"]


class Refused(HookDispatchError):
    """A request the portal will not serve: ``status`` 403 (not signed in, a failed
    CSRF check, a cross-site request) or 415 (an API call that is not JSON)."""

    def __init__(self, message: str, *, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


def check_frame_ancestors(sources: Sequence[str]) -> tuple[str, ...]:
    """``sources`` if each is one CSP source expression (``'none'``, ``'self'``,
    ``https://app.example.com``); InvalidInputError for anything that could break out
    of the directive."""
    if isinstance(sources, str) or not sources:
        raise InvalidInputError(
            "frame_ancestors must be a list of CSP sources such as [\"'self'\","
            " 'https://app.example.com'], or (\"'none'\",) to forbid framing"
        )
    checked = []
    for source in sources:
        if (
            not isinstance(source, str)
            or not source
            or not source.isprintable()
            or any(c in source for c in ' ;,\t"')
        ):
            raise InvalidInputError(
                f"frame_ancestors: {source!r:.80} is not one CSP source expression"
                " (no spaces, commas or semicolons)"
            )
        checked.append(source)
    if "'none'" in checked and len(checked) > 1:
        raise InvalidInputError("frame_ancestors: \"'none'\" cannot be combined with other sources")
    return tuple(checked)


def content_security_policy(frame_ancestors: Sequence[str]) -> str:
    """The policy every response carries: our own files only, no inline script or
    style, forms posting to the portal only, framing as the host allows."""
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            f"frame-ancestors {' '.join(frame_ancestors)}",
        ]
    )


class SecurityHeaders:
    """ASGI middleware: adds the security headers to every response, errors included."""

    def __init__(self, app: ASGIApp, *, frame_ancestors: Sequence[str]) -> None:
        self._app = app
        headers = [
            ("content-security-policy", content_security_policy(frame_ancestors)),
            ("x-content-type-options", "nosniff"),
            # No referrer to other sites (login links carry a token); "no-referrer" would make
            # browsers send "Origin: null" on the portal's own forms.
            ("referrer-policy", "same-origin"),
            ("cross-origin-opener-policy", "same-origin"),
            ("cache-control", "no-store"),  # pages may show a revealed secret
        ]
        if tuple(frame_ancestors) == ("'none'",):
            headers.append(("x-frame-options", "DENY"))  # for browsers without CSP 2
        self._headers = [(k.encode(), v.encode()) for k, v in headers]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self._headers if k not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self._app(scope, receive, send_with_headers)


def same_origin(request: Request) -> bool:
    """Whether the request comes from the portal's own pages (or from no page at all,
    as with curl): ``Sec-Fetch-Site`` is absent, ``same-origin`` or ``none``, and an
    ``Origin`` header, if any, is the portal's own."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    own = f"{request.url.scheme}://{request.url.netloc}"
    return origin == own
