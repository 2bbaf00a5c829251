"""The webhooks portal: a page your application mounts where each customer manages
their own endpoints and sees their own deliveries.

>>> from hookdispatch.portal import Portal  # doctest: +SKIP
>>> portal = Portal(hooks, tenant_of=current_account_id, secret_key=KEY)  # doctest: +SKIP

``Portal`` is an ASGI application: mount it under any path of a Starlette or FastAPI
application (``Mount("/settings/webhooks", app=portal)``). It needs the ``portal``
extra (``pip install 'hookdispatch[portal]'``); without it, importing this module
raises :class:`~hookdispatch.MissingDependencyError` naming the extra. See
``docs/portal.md``.
"""

from __future__ import annotations

import importlib

from ..exceptions import MissingDependencyError


def _require() -> None:
    """Raise MissingDependencyError, naming the extra, unless the portal's stack is here."""
    # python-multipart is importable as python_multipart (0.0.13 on) or multipart.
    for names in (
        ("starlette",),
        ("jinja2",),
        ("itsdangerous",),
        ("python_multipart", "multipart"),
    ):
        if not any(_importable(name) for name in names):
            raise MissingDependencyError(
                f"hookdispatch.portal needs {names[0].replace('_', '-')}, which is not"
                " installed: pip install 'hookdispatch[portal]'"
            )


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


_require()

from ._auth import DEFAULT_LINK_LIFETIME, DEFAULT_SESSION_LIFETIME  # noqa: E402
from ._portal import Portal, Visitor  # noqa: E402

__all__ = ["DEFAULT_LINK_LIFETIME", "DEFAULT_SESSION_LIFETIME", "Portal", "Visitor"]
