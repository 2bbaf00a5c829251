"""A plain ASGI 3 application that sends webhooks with hookdispatch's AsyncDispatcher.

The dispatcher lives in the lifespan: started on startup, drained and closed on
shutdown, and handed to requests through the lifespan state. ``POST /signup`` with
``{"email": ...}`` "creates a user" and dispatches ``user.created``. Configuration,
read at startup:

* ``HOOKDISPATCH_DB``: the SQLite file (default ``webhooks.db``);
* ``WEBHOOK_URL``: the receiver, registered unless an endpoint with this URL exists.

Run it by path, from the repository root: ``uvicorn --app-dir examples asgi_app:app``;
see docs/asgi.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import hookdispatch as hd

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SHUTDOWN_TIMEOUT = 10.0  # seconds to deliver what is due; keep it below your grace period


@contextlib.asynccontextmanager
async def webhooks() -> AsyncIterator[hd.AsyncDispatcher]:
    """Open the storage, start the dispatcher, register the receiver; then drain and close."""
    storage = hd.SQLiteStorage(os.environ.get("HOOKDISPATCH_DB", "webhooks.db"))
    try:
        # A local http receiver (the default WEBHOOK_URL) needs the development switch;
        # in production leave it unset: the default refuses http and private hosts.
        local = os.environ.get("HOOKDISPATCH_ALLOW_LOCAL") == "1"
        targets = hd.TargetPolicy.local() if local else None
        async with hd.AsyncDispatcher(storage=storage, concurrency=16, targets=targets) as hooks:
            url = os.environ.get("WEBHOOK_URL", "http://127.0.0.1:9000/hooks")
            if not any(endpoint.url == url for endpoint in await hooks.endpoints()):
                await hooks.add_endpoint(url, events=["user.created"])
            yield hooks
            await hooks.aclose(timeout=SHUTDOWN_TIMEOUT)  # retries not yet due stay stored
    finally:
        storage.close()


async def lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI lifespan protocol: keep ``webhooks()`` open from startup to shutdown."""
    await receive()  # {"type": "lifespan.startup"}
    async with contextlib.AsyncExitStack() as stack:
        try:
            scope["state"]["hooks"] = await stack.enter_async_context(webhooks())
        except Exception as exc:
            await send({"type": "lifespan.startup.failed", "message": repr(exc)})
            return
        await send({"type": "lifespan.startup.complete"})
        await receive()  # {"type": "lifespan.shutdown"}: requests are finished by now
    await send({"type": "lifespan.shutdown.complete"})


async def respond(send: Send, status: int, document: object) -> None:
    body = json.dumps(document).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def signup(scope: Scope, receive: Receive, send: Send) -> None:
    body, more = b"", True
    while more:
        message = await receive()
        body, more = body + message.get("body", b""), message.get("more_body", False)
    try:
        email = json.loads(body)["email"]
    except (ValueError, TypeError, KeyError):
        email = None
    if not isinstance(email, str) or "@" not in email:
        await respond(send, 400, {"error": 'expected {"email": "..."}'})
        return
    user_id = f"user_{secrets.token_hex(6)}"  # in real life: insert the user row here
    hooks: hd.AsyncDispatcher = scope["state"]["hooks"]
    event = await hooks.dispatch("user.created", {"user_id": user_id, "email": email})
    await respond(send, 201, {"user_id": user_id, "event_id": event.id})  # not yet delivered


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(scope, receive, send)
    elif scope["type"] == "http" and (scope["method"], scope["path"]) == ("POST", "/signup"):
        await signup(scope, receive, send)
    elif scope["type"] == "http":
        await respond(send, 404, {"error": "not found"})
