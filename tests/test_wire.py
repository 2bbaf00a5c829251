"""What goes on the wire beyond the body and signatures: the request line and Host."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Response

import hookdispatch as hd


def test_an_ipv6_literal_endpoint_gets_a_bracketed_host_header(make_dispatcher) -> None:
    try:
        listener = socket.socket(socket.AF_INET6)
        listener.bind(("::1", 0))
    except OSError:
        pytest.skip("this machine has no IPv6 loopback (::1)")
    listener.listen(4)
    listener.settimeout(10)
    port = listener.getsockname()[1]
    heads: list[bytes] = []

    def answer_once() -> None:
        conn, _ = listener.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(65536)
            heads.append(head)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    server = threading.Thread(target=answer_once, daemon=True)
    server.start()
    try:
        hooks = make_dispatcher(storage=hd.MemoryStorage(), workers=0)
        hooks.add_endpoint(f"http://[::1]:{port}/hook")
        event = hooks.dispatch("user.created", {"user_id": "user_78451"})
        [delivery] = hooks.deliveries(event_id=event.id)
    finally:
        server.join(timeout=10)
        listener.close()
    assert delivery.status is hd.DeliveryStatus.SUCCEEDED
    lines = heads[0].decode("latin-1").split("\r\n")
    assert lines[0] == "POST /hook HTTP/1.1"
    assert f"host: [::1]:{port}" in [line.lower() for line in lines]


def test_a_receivers_cookie_is_never_sent_back(
    httpserver: HTTPServer, make_dispatcher: Callable[..., Any]
) -> None:
    # A host name (not an IP literal), so a cookie jar would keep the cookie.
    httpserver.expect_request("/hook", method="POST").respond_with_response(
        Response("ok", status=200, headers={"Set-Cookie": "session=abc; Path=/"})
    )
    hooks = make_dispatcher(storage=hd.MemoryStorage(), workers=0)
    hooks.add_endpoint(f"http://localhost:{httpserver.port}/hook")
    for n in range(2):
        event = hooks.dispatch("user.created", {"n": n})
        [delivery] = hooks.deliveries(event_id=event.id)
        assert delivery.status is hd.DeliveryStatus.SUCCEEDED
    assert len(httpserver.log) == 2
    assert all("Cookie" not in request.headers for request, _ in httpserver.log)


def test_async_httpx_transport_never_sends_a_cookie_back(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook", method="POST").respond_with_response(
        Response("ok", status=200, headers={"Set-Cookie": "session=abc; Path=/"})
    )

    async def main() -> None:
        transport = hd.AsyncHttpxTransport(targets=hd.TargetPolicy.local())
        async with hd.AsyncDispatcher(
            storage=hd.MemoryStorage(), concurrency=0, transport=transport
        ) as hooks:
            await hooks.add_endpoint(f"http://localhost:{httpserver.port}/hook")
            for n in range(2):
                await hooks.dispatch("user.created", {"n": n})
        await transport.aclose()

    asyncio.run(main())
    assert len(httpserver.log) == 2
    assert all("Cookie" not in request.headers for request, _ in httpserver.log)
