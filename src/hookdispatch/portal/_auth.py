"""Who the visitor is, proven: signed login links, the session cookie they are
exchanged for, and CSRF tokens. Everything is signed with the host's ``secret_key``
through itsdangerous (HMAC-SHA1 over a derived key, the library's default), each kind
under its own salt, so a token of one kind is never accepted as another.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

from attrs import frozen
from itsdangerous import BadSignature, URLSafeTimedSerializer

from .._models import check_tenant
from ..exceptions import InvalidInputError

__all__ = [
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "DEFAULT_LINK_LIFETIME",
    "DEFAULT_SESSION_LIFETIME",
    "MAX_LINK_LIFETIME",
    "SESSION_COOKIE",
    "Signer",
    "Visitor",
]

DEFAULT_LINK_LIFETIME = 900
"""Seconds a login link from :meth:`Portal.link_for` stays valid by default: 15 minutes."""
MAX_LINK_LIFETIME = 7 * 86400
"""The longest a login link may live: 7 days."""
DEFAULT_SESSION_LIFETIME = 3600
"""Seconds the session cookie a login link is exchanged for lasts: 1 hour."""
MIN_SECRET_KEY_LENGTH = 32

SESSION_COOKIE = "hookdispatch_portal_session"
CSRF_COOKIE = "hookdispatch_portal_csrf"
CSRF_FIELD = "csrf_token"
_CSRF_LIFETIME = 12 * 3600


@frozen
class Visitor:
    """Who is looking at the portal: one tenant's user, or an operator.

    ``tenant`` is the tenant every read and write is scoped to; ``None`` for an
    operator, who sees every tenant's rows (each row shows its tenant).
    """

    tenant: str | None
    operator: bool = False

    @property
    def identity(self) -> str:
        """A stable name of the visitor, bound into CSRF tokens."""
        return "operator" if self.operator else f"tenant:{self.tenant}"


class Signer:
    """Makes and checks login links, session cookies and CSRF tokens.

    Login links are single-use within this process: a link's nonce is remembered
    until the link would have expired anyway.
    """

    def __init__(self, secret_key: str) -> None:
        if not isinstance(secret_key, str) or len(secret_key) < MIN_SECRET_KEY_LENGTH:
            raise InvalidInputError(
                f"secret_key must be a string of at least {MIN_SECRET_KEY_LENGTH} random"
                " characters, such as secrets.token_urlsafe(32), kept out of the code"
            )
        self._links = URLSafeTimedSerializer(secret_key, salt="hookdispatch.portal.link")
        self._sessions = URLSafeTimedSerializer(secret_key, salt="hookdispatch.portal.session")
        self._csrf = URLSafeTimedSerializer(secret_key, salt="hookdispatch.portal.csrf")
        self._used: dict[str, float] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "<Signer>"  # never the key

    # Login links ----------------------------------------------------------------

    def link_token(self, visitor: Visitor, *, expires_in: float) -> str:
        """A signed token for a login link of ``visitor``, valid ``expires_in`` seconds."""
        if (
            isinstance(expires_in, bool)
            or not isinstance(expires_in, int | float)
            or not 0 < expires_in <= MAX_LINK_LIFETIME
        ):
            raise InvalidInputError(
                f"expires_in must be a number of seconds from 1 to {MAX_LINK_LIFETIME}"
                f" (7 days), such as {DEFAULT_LINK_LIFETIME} (got {expires_in!r:.40})"
            )
        if not visitor.operator:
            check_tenant(visitor.tenant)
        payload = {
            "t": visitor.tenant,
            "o": visitor.operator,
            "n": secrets.token_urlsafe(12),
            "x": time.time() + float(expires_in),
        }
        return self._links.dumps(payload)

    def redeem(self, token: str) -> Visitor | None:
        """The visitor of a login link's token, once: ``None`` if it is forged,
        tampered with, expired, or used already."""
        payload = _loads(self._links, token, MAX_LINK_LIFETIME)
        if payload is None:
            return None
        expires, nonce = payload.get("x"), payload.get("n")
        now = time.time()
        if not isinstance(expires, float) or not isinstance(nonce, str) or expires < now:
            return None
        with self._lock:
            for old in [n for n, until in self._used.items() if until < now]:
                del self._used[old]
            if nonce in self._used:
                return None
            self._used[nonce] = expires
        return _visitor(payload)

    # Sessions -------------------------------------------------------------------

    def session_value(self, visitor: Visitor) -> str:
        """The session cookie's value for ``visitor``."""
        return self._sessions.dumps({"t": visitor.tenant, "o": visitor.operator})

    def session(self, value: str | None, *, lifetime: float) -> Visitor | None:
        """The visitor of a session cookie, if it is genuine and younger than ``lifetime``."""
        if not value:
            return None
        payload = _loads(self._sessions, value, lifetime)
        return None if payload is None else _visitor(payload)

    # CSRF -----------------------------------------------------------------------

    def csrf_token(self, nonce: str, visitor: Visitor) -> str:
        """The token forms carry: the CSRF cookie's nonce and the visitor, signed."""
        return self._csrf.dumps({"c": nonce, "v": visitor.identity})

    def csrf_valid(self, token: object, nonce: str | None, visitor: Visitor) -> bool:
        """Whether ``token`` was made by :meth:`csrf_token` for this cookie's ``nonce``
        and this visitor, within the last 12 hours."""
        if not isinstance(token, str) or not nonce or len(token) > 1024:
            return False
        payload = _loads(self._csrf, token, _CSRF_LIFETIME)
        return (
            payload is not None
            and secrets.compare_digest(str(payload.get("c", "")), nonce)
            and payload.get("v") == visitor.identity
        )


def new_nonce() -> str:
    """A fresh value for the CSRF cookie."""
    return secrets.token_urlsafe(24)


def _loads(serializer: URLSafeTimedSerializer, token: str, max_age: float) -> dict[str, Any] | None:
    try:
        payload = serializer.loads(token, max_age=int(max_age))
    except (BadSignature, ValueError, TypeError):  # SignatureExpired is a BadSignature
        return None
    return payload if isinstance(payload, dict) else None


def _visitor(payload: dict[str, Any]) -> Visitor | None:
    tenant, operator = payload.get("t"), payload.get("o")
    if operator is True:
        return Visitor(None, operator=True)
    if isinstance(tenant, str) and operator is False:
        return Visitor(tenant)
    return None
