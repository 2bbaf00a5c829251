"""A host application that mounts the webhooks portal behind its own login.

Run it (needs `pip install 'hookdispatch[portal]'`):

    python examples/portal_app.py        # then open http://127.0.0.1:8000/

The host decides who the visitor is (here: a toy sign-in form that stores an account
id in Starlette's signed session cookie); the portal, mounted at /settings/webhooks,
shows that account's endpoints and deliveries only.
"""

from __future__ import annotations

import contextlib
import html
import os
import secrets
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

import hookdispatch as hd
from hookdispatch.portal import Portal

# In production: from your secret manager, the same in every process.
SECRET_KEY = os.environ.get("PORTAL_SECRET_KEY") or secrets.token_urlsafe(32)

catalog = hd.Catalog(
    [
        hd.EventType("user.created", "Triggered when a new user signs up", example={"id": "u_1"}),
        hd.EventType("user.deleted", "Triggered when a user account is deleted"),
        hd.EventType("invoice.paid", "Triggered when an invoice is paid", example={"amount": 4900}),
    ]
)
storage = hd.SQLiteStorage(os.environ.get("PORTAL_DB", "webhooks.db"))
# TargetPolicy.local() lets you try receivers on your own machine; leave it out in
# production (the default refuses plain http and private addresses).
hooks = hd.Dispatcher(storage=storage, workers=2, catalog=catalog, targets=hd.TargetPolicy.local())


def current_account(request: Request) -> str | None:
    """The host's own notion of who is signed in: the portal only asks."""
    account = request.session.get("account")
    return account if isinstance(account, str) else None


portal = Portal(hooks, tenant_of=current_account, secret_key=SECRET_KEY, title="Acme webhooks")


async def home(request: Request) -> Response:
    account = current_account(request)
    if account:
        link = "<a href='/settings/webhooks/'>Settings &gt; Webhooks</a>"
        return HTMLResponse(f"<p>Signed in as {html.escape(account)}. {link}</p>")
    return HTMLResponse(
        "<form method=post action=/login><input name=account value=acct_42>"
        "<button>Sign in</button></form>"
    )


async def login(request: Request) -> Response:
    form = await request.form()
    account = form.get("account")
    if isinstance(account, str) and account:
        request.session["account"] = account
    return RedirectResponse("/", status_code=303)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    hooks.close()  # deliver what is due, then stop the workers
    storage.close()


app = Starlette(
    routes=[
        Route("/", home),
        Route("/login", login, methods=["POST"]),
        Mount("/settings/webhooks", app=portal),
    ],
    middleware=[Middleware(SessionMiddleware, secret_key=SECRET_KEY, same_site="lax")],
    lifespan=lifespan,
)

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
