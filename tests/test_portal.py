"""The webhooks portal without a browser: tenant isolation on every route, CSRF and
cross-site refusal, secrets, security headers, validation, SSRF, signed links,
operator mode, both dispatchers. (test_portal_browser.py drives a real browser.)"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from markupsafe import escape
from pytest_httpserver import HTTPServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount, Route

with warnings.catch_warnings():  # Starlette >= 1.0 suggests httpx2; httpx still works
    warnings.simplefilter("ignore", DeprecationWarning)
    from starlette.testclient import TestClient
from werkzeug import Request as WRequest
from werkzeug import Response as WResponse

import hookdispatch as hd
from hookdispatch.cli import _portal
from hookdispatch.cli._app import cli
from hookdispatch.portal import Portal

ROOT = Path(__file__).resolve().parent.parent
SECRET_KEY = "portal-test-key-" + "k" * 32
MOUNT = "/settings/webhooks"
CATALOG = hd.Catalog(
    [
        hd.EventType(
            "user.created",
            "Triggered when a new user signs up",
            schema={
                "type": "object",
                "properties": {"user_id": {"type": "string"}},
                "required": ["user_id"],
            },
            example={"user_id": "user_78451"},
        ),
        hd.EventType("user.deleted", "Triggered when a user account is deleted"),
        hd.EventType(
            "invoice.paid", "Triggered when an invoice is paid", example={"invoice_id": "in_1"}
        ),
    ]
)
TOKEN = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def tenant_from_header(request: Request) -> str | None:
    return request.headers.get("x-test-tenant")


def operator_from_header(request: Request) -> bool:
    return request.headers.get("x-test-operator") == "yes"


class Receiver:
    """A local receiver whose answer the test sets: 200 or 500, with a body."""

    def __init__(self, server: HTTPServer) -> None:
        self.status = 200
        self.body = "ok"
        self.requests: list[WRequest] = []
        server.expect_request(re.compile("^/hooks"), method="POST").respond_with_handler(
            self._handle
        )
        self.url = server.url_for("/hooks")

    def _handle(self, request: WRequest) -> WResponse:
        self.requests.append(request)
        return WResponse(self.body, status=self.status, content_type="text/html")


class World:
    """A dispatcher, a portal mounted in a host app, and clients per visitor."""

    def __init__(self, hooks: hd.Dispatcher, **options: Any) -> None:
        self.hooks = hooks
        options.setdefault("tenant_of", tenant_from_header)
        options.setdefault("operator", operator_from_header)
        self.portal = Portal(hooks, secret_key=SECRET_KEY, **options)
        self.host = Starlette(routes=[Mount(MOUNT, app=self.portal)])

    def client(self, tenant: str | None = None, *, operator: bool = False) -> TestClient:
        headers = {}
        if tenant is not None:
            headers["x-test-tenant"] = tenant
        if operator:
            headers["x-test-operator"] = "yes"
        return TestClient(self.host, headers=headers, follow_redirects=False)


def csrf(client: TestClient) -> str:
    """The CSRF token of this client's visitor (sets the CSRF cookie on first use)."""
    page = client.get(f"{MOUNT}/endpoints")
    assert page.status_code == 200, page.text
    match = TOKEN.search(page.text)
    assert match, "no CSRF token on the page"
    return match.group(1)


@pytest.fixture
def receiver(httpserver: HTTPServer) -> Receiver:
    return Receiver(httpserver)


@pytest.fixture
def hooks() -> Iterator[hd.Dispatcher]:
    dispatcher = hd.Dispatcher(
        storage=hd.MemoryStorage(),
        workers=0,
        catalog=CATALOG,
        retry=hd.RetryPolicy(max_attempts=1),
        targets=hd.TargetPolicy.local(),
    )
    yield dispatcher
    dispatcher.close()


@pytest.fixture
def world(hooks: hd.Dispatcher) -> World:
    return World(hooks)


class TenantA:
    """Tenant A's rows: an endpoint with a custom header, a succeeded and a failed
    delivery."""

    def __init__(self, hooks: hd.Dispatcher, receiver: Receiver) -> None:
        self.endpoint = hooks.add_endpoint(
            receiver.url + "/a",
            events=["user.created", "invoice.paid"],
            tenant="acct_a",
            description="Tenant A's billing sync",
            headers={"Authorization": "Bearer a-very-private-token"},
        )
        self.event = hooks.dispatch("user.created", {"user_id": "user_a"}, tenant="acct_a")
        [self.delivery] = hooks.deliveries(event_id=self.event.id)
        receiver.status, receiver.body = 500, "tenant A receiver is down"
        failed = hooks.dispatch("invoice.paid", {"invoice_id": "in_a"}, tenant="acct_a")
        [self.failed] = hooks.deliveries(event_id=failed.id)
        receiver.status, receiver.body = 200, "ok"
        assert self.delivery.status == "succeeded"
        assert self.failed.status == "failed"

    def markers(self) -> list[str]:
        """Strings that only A's rows contain."""
        return [
            self.endpoint.id,
            self.endpoint.url,
            self.endpoint.secret,
            self.delivery.id,
            self.failed.id,
            self.event.id,
            "Tenant A",
            "a-very-private-token",
        ]


@pytest.fixture
def tenant_a(hooks: hd.Dispatcher, receiver: Receiver) -> TenantA:
    return TenantA(hooks, receiver)


# Routes -----------------------------------------------------------------------------

ID_PARAMS = {"endpoint_id", "delivery_id"}
PUBLIC_ROUTES = {"static", "login"}  # no tenant data: static files, and the link exchange


def routes(portal: Portal) -> list[tuple[str, str, set[str]]]:
    """(name, path template, methods) of every route of the portal, from the app."""
    found = []
    for route in portal.starlette.routes:
        assert isinstance(route, Route), f"{route!r}: a new kind of route; cover it here"
        methods = set(route.methods or ()) - {"HEAD"}
        found.append((route.name, route.path, methods))
    assert len(found) >= 30
    return found


def params_of(path: str) -> set[str]:
    return set(re.findall(r"{(\w+)}", path))


def api_body_for(name: str) -> dict[str, Any]:
    return {
        "api_endpoints": {"url": "https://example.com/b", "events": ["*"]},
        "api_test": {"event_type": "user.created"},
        "api_replay_failed": {"since": "2000-01-01T00:00", "confirm": True},
        "api_rotate": {"grace": 0},
    }.get(name, {})


def form_for(name: str, token: str) -> dict[str, Any]:
    form: dict[str, Any] = {"csrf_token": token}
    if name == "new_endpoint":
        form |= {"url": "https://example.com/b", "events": ["*"]}
    elif name == "test":
        form |= {"event_type": "user.created", "data": '{"user_id": "x"}'}
    elif name == "replay_failed":
        form |= {"since": "2000-01-01T00:00", "confirm": "yes"}
    elif name == "rotate":
        form |= {"grace": "0"}
    elif name == "edit_endpoint":
        form |= {"url": "https://example.com/b", "events": ["*"]}
    return form


def call(client: TestClient, name: str, path: str, method: str, *, token: str, **extra: Any) -> Any:
    """One request to a route, as its own pages or API calls make it."""
    if name.startswith("api_"):
        if method in ("GET",):
            return client.request(method, path, **extra)
        return client.request(method, path, json=api_body_for(name), **extra)
    if method == "GET":
        return client.get(path, **extra)
    return client.post(path, data=form_for(name, token), **extra)


def test_every_route_as_another_tenant(world: World, tenant_a: TenantA) -> None:
    """Tenant B, with A's ids, on every route and method: 404 where an id is in the
    path, and no answer anywhere shows a row of A's, or changes one."""
    b = world.client("acct_b")
    token = csrf(b)
    before = (world.hooks.get_endpoint(tenant_a.endpoint.id), len(world.hooks.deliveries()))
    ids = {"endpoint_id": tenant_a.endpoint.id, "delivery_id": tenant_a.failed.id}
    checked = 0
    for name, template, methods in routes(world.portal):
        params = params_of(template)
        assert params <= ID_PARAMS | {"name"}, f"{template}: a new path parameter; cover it here"
        if name in PUBLIC_ROUTES:
            continue
        path = MOUNT + template.format(**ids)
        for method in sorted(methods):
            answer = call(b, name, path, method, token=token)
            if params & ID_PARAMS:
                assert answer.status_code == 404, (method, path, answer.status_code, answer.text)
            else:
                assert answer.status_code < 400, (method, path, answer.status_code, answer.text)
            for marker in tenant_a.markers():
                assert marker not in answer.text, (method, path, marker)
                assert marker not in answer.headers.get("location", ""), (method, path, marker)
            checked += 1
    assert checked >= 35
    # Every query filter, too: A's endpoint id as a filter lists nothing.
    listing = b.get(f"{MOUNT}/deliveries", params={"endpoint_id": tenant_a.endpoint.id})
    assert listing.status_code == 200
    assert tenant_a.delivery.id not in listing.text
    api = b.get(f"{MOUNT}/api/deliveries", params={"endpoint_id": tenant_a.endpoint.id})
    assert api.json()["data"] == []
    # A's rows are untouched.
    after = world.hooks.get_endpoint(tenant_a.endpoint.id)
    assert after == before[0]
    assert after.enabled
    assert after.secret == tenant_a.endpoint.secret
    a_rows = [d for d in world.hooks.deliveries() if d.tenant == "acct_a"]
    assert len(a_rows) == 2
    # What B did went to B only.
    assert all(e.tenant == "acct_b" for e in world.hooks.endpoints(tenant="acct_b"))


def test_tenant_a_sees_its_own_rows(world: World, tenant_a: TenantA) -> None:
    a = world.client("acct_a")
    listing = a.get(f"{MOUNT}/endpoints").text
    assert tenant_a.endpoint.url in listing
    assert "50%" in listing
    assert "tenant A receiver is down" not in listing  # bodies only on the delivery page
    deliveries = a.get(f"{MOUNT}/deliveries").text
    assert tenant_a.delivery.id in deliveries
    assert tenant_a.failed.id in deliveries
    failed = a.get(f"{MOUNT}/deliveries/{tenant_a.failed.id}").text
    assert "tenant A receiver is down" in failed
    assert "HTTP 500" in failed
    filtered = a.get(f"{MOUNT}/deliveries", params={"status": "failed"}).text
    assert tenant_a.failed.id in filtered
    assert tenant_a.delivery.id not in filtered


def test_no_tenant_is_refused(world: World, tenant_a: TenantA) -> None:
    anonymous = world.client()
    for path in ("/endpoints", f"/endpoints/{tenant_a.endpoint.id}", "/api/endpoints"):
        answer = anonymous.get(MOUNT + path)
        assert answer.status_code == 403
        assert tenant_a.endpoint.url not in answer.text


# CSRF and cross-site ----------------------------------------------------------------


def test_every_page_post_needs_a_valid_csrf_token(world: World, tenant_a: TenantA) -> None:
    before = world.hooks.get_endpoint(tenant_a.endpoint.id)
    a = world.client("acct_a")
    own = csrf(a)
    b_token = csrf(world.client("acct_b"))
    ids = {"endpoint_id": tenant_a.endpoint.id, "delivery_id": tenant_a.failed.id}
    posts = [
        (name, MOUNT + template.format(**ids))
        for name, template, methods in routes(world.portal)
        if "POST" in methods and not name.startswith("api_")
    ]
    assert len(posts) >= 12
    for name, path in posts:
        for token in ("", "forged", b_token, own[:-2] + "xx"):
            answer = a.post(path, data=form_for(name, "") | {"csrf_token": token})
            assert answer.status_code == 403, (path, token, answer.status_code)
        # A valid token from another site's page is refused too.
        answer = a.post(path, data=form_for(name, own), headers={"sec-fetch-site": "cross-site"})
        assert answer.status_code == 403, path
        answer = a.post(path, data=form_for(name, own), headers={"origin": "https://evil.example"})
        assert answer.status_code == 403, path
    # Without the CSRF cookie the token is worth nothing.
    bare = world.client("acct_a")
    answer = bare.post(
        f"{MOUNT}/endpoints/{tenant_a.endpoint.id}/disable", data={"csrf_token": own}
    )
    assert answer.status_code == 403
    # Nothing changed.
    assert world.hooks.get_endpoint(tenant_a.endpoint.id) == before
    assert len(world.hooks.deliveries()) == 2
    assert len(world.hooks.endpoints()) == 1


def test_the_api_refuses_cross_site_requests(world: World, tenant_a: TenantA) -> None:
    before = world.hooks.get_endpoint(tenant_a.endpoint.id)
    a = world.client("acct_a")
    ids = {"endpoint_id": tenant_a.endpoint.id, "delivery_id": tenant_a.failed.id}
    for name, template, methods in routes(world.portal):
        if not name.startswith("api_"):
            continue
        path = MOUNT + template.format(**ids)
        for method in sorted(methods):
            for headers in (
                {"origin": "https://evil.example"},
                {"sec-fetch-site": "cross-site"},
                {"sec-fetch-site": "same-site"},
                {"origin": "null"},
            ):
                answer = call(a, name, path, method, token="", headers=headers)
                assert answer.status_code == 403, (method, path, headers, answer.status_code)
            if method != "GET":
                # What a cross-site form can send without a preflight: not JSON.
                for content_type in ("text/plain", "application/x-www-form-urlencoded"):
                    answer = a.request(
                        method,
                        path,
                        content=json.dumps(api_body_for(name)),
                        headers={"content-type": content_type},
                    )
                    assert answer.status_code == 415, (method, path, content_type)
    same = a.get(
        f"{MOUNT}/api/endpoints",
        headers={"origin": "http://testserver", "sec-fetch-site": "same-origin"},
    )
    assert same.status_code == 200
    assert world.hooks.get_endpoint(tenant_a.endpoint.id) == before
    assert len(world.hooks.deliveries()) == 2


def test_api_mirrors_the_pages(world: World, receiver: Receiver) -> None:
    a = world.client("acct_a")
    made = a.post(
        f"{MOUNT}/api/endpoints",
        json={"url": receiver.url, "events": ["user.created"], "description": "api"},
    )
    assert made.status_code == 201, made.text
    endpoint = made.json()
    assert endpoint["secret"].startswith("whsec_")
    assert endpoint["tenant"] == "acct_a"
    listed = a.get(f"{MOUNT}/api/endpoints").json()["data"]
    assert [e["id"] for e in listed] == [endpoint["id"]]
    assert "secret" not in listed[0]
    path = f"{MOUNT}/api/endpoints/{endpoint['id']}"
    assert a.patch(path, json={"description": "renamed"}).json()["description"] == "renamed"
    sent = a.post(f"{path}/test", json={"event_type": "user.created"})
    assert sent.status_code == 201
    assert sent.json()["status"] == "succeeded"
    assert sent.json()["payload"] == {"user_id": "user_78451"}  # the catalog's example
    [attempt] = sent.json()["attempts"]
    assert attempt["request_headers"]["x-webhook-signature"] == "[redacted]"
    assert a.post(f"{path}/secret", json={}).json()["secret"] == endpoint["secret"]
    rotated = a.post(f"{path}/rotate", json={"grace": 3600}).json()
    assert rotated["secret"] != endpoint["secret"]
    assert rotated["previous_secret_expires_at"]
    assert a.post(f"{path}/end-rotation", json={}).json()["previous_secret_expires_at"] is None
    assert a.post(f"{path}/disable", json={}).json()["enabled"] is False
    assert a.post(f"{path}/enable", json={}).json()["enabled"] is True
    bad = a.post(f"{path}/rotate", json={"grace": -1})
    assert bad.status_code == 422
    assert "grace must be" in bad.json()["fields"]["grace"]
    delivery = sent.json()["id"]
    replayed = a.post(f"{MOUNT}/api/deliveries/{delivery}/replay", json={})
    assert replayed.status_code == 201
    assert replayed.json()["status"] == "succeeded"
    types = a.get(f"{MOUNT}/api/event-types").json()["data"]
    assert [t["name"] for t in types] == ["user.created", "user.deleted", "invoice.paid"]
    assert a.request("DELETE", path, json={}).json()["deleted"] == endpoint["id"]
    assert a.get(path).status_code == 404


# Secrets ----------------------------------------------------------------------------


def test_secrets_stay_out_of_pages_urls_and_logs(
    world: World, tenant_a: TenantA, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    a = world.client("acct_a")
    secret = tenant_a.endpoint.secret
    ids = {"endpoint_id": tenant_a.endpoint.id, "delivery_id": tenant_a.failed.id}
    for name, template, methods in routes(world.portal):
        if "GET" not in methods or name in PUBLIC_ROUTES:
            continue
        answer = a.get(MOUNT + template.format(**ids))
        assert secret not in answer.text, name
        assert "a-very-private-token" not in answer.text, name
    page = a.get(f"{MOUNT}/endpoints/{tenant_a.endpoint.id}").text
    assert 'id="reveal-secret"' in page
    revealed = a.post(
        f"{MOUNT}/endpoints/{tenant_a.endpoint.id}/secret", data=form_for("", csrf(a))
    )
    assert revealed.status_code == 200
    assert secret in revealed.text
    assert revealed.headers["cache-control"] == "no-store"
    assert secret not in str(revealed.url)
    # Rotating: redirected to a URL without the new secret, which the page hides again.
    rotated = a.post(
        f"{MOUNT}/endpoints/{tenant_a.endpoint.id}/rotate", data=form_for("rotate", csrf(a))
    )
    new = world.hooks.get_endpoint(tenant_a.endpoint.id).secret
    assert rotated.status_code == 303
    assert new not in rotated.headers["location"]
    assert new not in a.get(rotated.headers["location"]).text
    for link in re.findall(r'(?:href|action)="([^"]+)"', revealed.text):
        assert secret not in link
    # Every request made above, and what the portal logged: no secret.
    assert secret not in caplog.text
    assert new not in caplog.text
    assert "a-very-private-token" not in caplog.text


def test_sent_headers_are_rebuilt_and_redacted(world: World, tenant_a: TenantA) -> None:
    page = world.client("acct_a").get(f"{MOUNT}/deliveries/{tenant_a.delivery.id}").text
    for name in ("x-webhook-signature", "webhook-signature", "webhook-id", "Authorization"):
        assert f"<th>{name}</th>" in page
    assert f"<code>{tenant_a.event.id}</code>" in page  # webhook-id, as sent
    assert "<code>v1,[redacted]</code>" in page
    assert "a-very-private-token" not in page
    assert tenant_a.endpoint.secret not in page


# Headers ----------------------------------------------------------------------------


def test_security_headers_on_every_answer(world: World, tenant_a: TenantA) -> None:
    a = world.client("acct_a")
    for path in ("/endpoints", "/nowhere", "/static/portal.css", "/api/endpoints", "/login"):
        headers = a.get(MOUNT + path).headers
        csp = headers["content-security-policy"]
        assert "default-src 'self'" in csp
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "same-origin"


def test_frame_ancestors_is_configurable(hooks: hd.Dispatcher) -> None:
    embedded = World(hooks, frame_ancestors=("'self'", "https://app.example.com"))
    headers = embedded.client("acct_a").get(f"{MOUNT}/endpoints").headers
    assert "frame-ancestors 'self' https://app.example.com" in headers["content-security-policy"]
    assert "x-frame-options" not in headers
    for bad in (["https://a.example; script-src *"], "'self'", [], ["'none'", "'self'"]):
        with pytest.raises(hd.InvalidInputError):
            Portal(hooks, secret_key=SECRET_KEY, frame_ancestors=bad)


def test_the_page_has_no_inline_script_or_style(world: World, tenant_a: TenantA) -> None:
    page = world.client("acct_a").get(f"{MOUNT}/endpoints/{tenant_a.endpoint.id}").text
    assert "<script>" not in page
    assert " style=" not in page
    assert "<style" not in page
    assert re.findall(r"<script[^>]*src=\"([^\"]+)\"", page) == [f"{MOUNT}/static/portal.js"]
    assert "http://" not in page.replace(tenant_a.endpoint.url, "")  # no CDN, nothing remote


# Validation -------------------------------------------------------------------------


def field_error(html: str, name: str) -> str:
    match = re.search(rf'<p class="field-error" id="{name}-error" role="alert">([^<]*)</p>', html)
    assert match, f"no error shown next to {name}"
    return match.group(1)


def library_error(action: Callable[[], object]) -> str:
    with pytest.raises(hd.InvalidInputError) as caught:
        action()
    return str(escape(str(caught.value)))


def test_validation_errors_show_next_to_their_field(world: World) -> None:
    a = world.client("acct_a")
    token = csrf(a)
    other = hd.Dispatcher(storage=hd.MemoryStorage(), workers=0, catalog=CATALOG)
    cases = [
        ({"url": "ftp://example.com/x", "events": ["*"]}, "url", "ftp://example.com/x", ["*"], ""),
        ({"url": "https://example.com/x", "events": []}, "events", "https://example.com/x", [], ""),
        (
            {"url": "https://example.com/x", "other_events": "users.*"},
            "events",
            "https://example.com/x",
            ["users.*"],
            "",
        ),
        (
            {"url": "https://example.com/x", "events": ["*"], "description": "d" * 2000},
            "description",
            "https://example.com/x",
            ["*"],
            "d" * 2000,
        ),
    ]
    for form, field, url, events, description in cases:
        answer = a.post(f"{MOUNT}/endpoints/new", data={"csrf_token": token, **form})
        assert answer.status_code == 422
        expected = library_error(
            lambda u=url, e=events, d=description: other.add_endpoint(u, events=e, description=d)
        )
        assert field_error(answer.text, field) == expected
        assert 'value="https://example.com/x"' in answer.text or field == "url"  # kept
    assert world.hooks.endpoints() == []
    other.close()


def test_test_event_errors_show_next_to_their_field(world: World, receiver: Receiver) -> None:
    endpoint = world.hooks.add_endpoint(receiver.url, tenant="acct_a")
    a = world.client("acct_a")
    token = csrf(a)
    path = f"{MOUNT}/endpoints/{endpoint.id}/test"
    answer = a.post(path, data={"csrf_token": token, "event_type": "user.created", "data": "{"})
    assert answer.status_code == 422
    assert "not valid JSON" in field_error(answer.text, "data")
    answer = a.post(path, data={"csrf_token": token, "event_type": "user.created", "data": "{}"})
    assert "does not match its schema" in field_error(answer.text, "data")
    answer = a.post(path, data={"csrf_token": token, "event_type": "user.create", "data": "{}"})
    assert "did you mean" in field_error(answer.text, "event_type")
    assert receiver.requests == []


def test_private_addresses_are_refused_as_by_the_library() -> None:
    strict = hd.TargetPolicy()
    hooks = hd.Dispatcher(storage=hd.MemoryStorage(), workers=0, targets=strict)
    world = World(hooks)
    a = world.client("acct_a")
    token = csrf(a)
    for url in ("https://10.0.0.1/hooks", "https://169.254.169.254/latest/", "http://example.com/"):
        answer = a.post(
            f"{MOUNT}/endpoints/new", data={"csrf_token": token, "url": url, "events": ["*"]}
        )
        expected = library_error(lambda u=url: hooks.add_endpoint(u))
        assert answer.status_code == 422
        assert field_error(answer.text, "url") == expected
        api = a.post(f"{MOUNT}/api/endpoints", json={"url": url})
        assert api.status_code == 422
        assert str(escape(api.json()["fields"]["url"])) == expected
    assert hooks.endpoints() == []
    hooks.close()


# Signed links -----------------------------------------------------------------------


def test_a_signed_link_opens_one_tenants_portal_once(world: World, tenant_a: TenantA) -> None:
    guest = TestClient(world.host, follow_redirects=False)  # the host names no tenant
    link = world.portal.link_for("acct_a", base_url=f"http://testserver{MOUNT}")
    assert link.startswith(f"http://testserver{MOUNT}/login?token=")
    answer = guest.get(link)
    assert answer.status_code == 303
    assert answer.headers["location"] == f"{MOUNT}/endpoints"
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert f"Path={MOUNT}/" in cookie
    assert "Max-Age=3600" in cookie
    page = guest.get(f"{MOUNT}/endpoints")
    assert page.status_code == 200
    assert tenant_a.endpoint.url in page.text
    assert guest.get(link).status_code == 403  # used once already
    # Another tenant's link shows none of A's rows.
    other = TestClient(world.host, follow_redirects=False)
    other.get(world.portal.link_for("acct_b", base_url=MOUNT))
    assert tenant_a.endpoint.url not in other.get(f"{MOUNT}/endpoints").text
    assert other.get(f"{MOUNT}/endpoints/{tenant_a.endpoint.id}").status_code == 404


def test_a_tampered_or_expired_link_is_refused(world: World) -> None:
    guest = TestClient(world.host, follow_redirects=False)
    link = world.portal.link_for("acct_a", base_url=MOUNT)
    token = link.split("token=")[1]
    payload, rest = token.split(".", 1)
    for forged in (
        token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB"),
        payload[:-1] + ("A" if payload[-1] != "A" else "B") + "." + rest,
        Portal(world.hooks, secret_key="another-key-" + "z" * 32).link_for("acct_a"),
        "",
        "garbage",
    ):
        forged_token = forged.split("token=")[-1]
        answer = guest.get(f"{MOUNT}/login", params={"token": forged_token})
        assert answer.status_code == 403
        assert "set-cookie" not in answer.headers
    short = world.portal.link_for("acct_a", expires_in=1, base_url=MOUNT)
    time.sleep(1.2)
    assert guest.get(short).status_code == 403
    assert guest.get(f"{MOUNT}/endpoints").status_code == 403
    with pytest.raises(hd.InvalidInputError):
        world.portal.link_for("not a tenant!")
    with pytest.raises(hd.InvalidInputError):
        world.portal.link_for("acct_a", expires_in=0)
    with pytest.raises(hd.InvalidInputError):
        Portal(world.hooks, secret_key="short")


def test_a_forged_session_cookie_is_refused(world: World) -> None:
    guest = TestClient(world.host, follow_redirects=False)
    guest.cookies.set("hookdispatch_portal_session", '{"t": "acct_a", "o": false}')
    assert guest.get(f"{MOUNT}/endpoints").status_code == 403


# Operator mode ----------------------------------------------------------------------


def test_an_operator_sees_every_tenant_with_its_tenant_shown(
    world: World, tenant_a: TenantA, receiver: Receiver
) -> None:
    b_endpoint = world.hooks.add_endpoint(receiver.url + "/b", tenant="acct_b")
    world.hooks.dispatch("user.deleted", {}, tenant="acct_b")
    op = world.client(operator=True)
    listing = op.get(f"{MOUNT}/endpoints").text
    assert tenant_a.endpoint.url in listing
    assert b_endpoint.url in listing
    assert "Operator" in listing
    for row in re.findall(r"<tr data-endpoint-id=.*?</tr>", listing, re.S):
        assert re.search(r'<span class="badge">acct_[ab]</span>', row)
    deliveries = op.get(f"{MOUNT}/deliveries").text
    rows = re.findall(r"<tr data-delivery-id=.*?</tr>", deliveries, re.S)
    assert len(rows) == 3
    assert all(re.search(r'<span class="badge">acct_[ab]</span>', row) for row in rows)
    # An operator adds an endpoint for a tenant, named on the form.
    token = csrf(op)
    made = op.post(
        f"{MOUNT}/endpoints/new",
        data={"csrf_token": token, "tenant": "acct_c", "url": receiver.url, "events": ["*"]},
    )
    assert made.status_code == 303
    assert [e.tenant for e in world.hooks.endpoints(tenant="acct_c")] == ["acct_c"]
    missing = op.post(
        f"{MOUNT}/endpoints/new", data={"csrf_token": token, "url": receiver.url, "events": ["*"]}
    )
    assert missing.status_code == 422
    assert field_error(missing.text, "tenant")


# Replay -----------------------------------------------------------------------------


def test_replay_all_failed_since_confirms_how_many(
    world: World, tenant_a: TenantA, receiver: Receiver
) -> None:
    receiver.status = 500
    for n in range(2):
        world.hooks.dispatch("invoice.paid", {"invoice_id": f"in_{n}"}, tenant="acct_a")
    receiver.status = 200
    a = world.client("acct_a")
    token = csrf(a)
    path = f"{MOUNT}/endpoints/{tenant_a.endpoint.id}/replay-failed"
    confirm = a.post(path, data={"csrf_token": token, "since": "2000-01-01T00:00"})
    assert confirm.status_code == 200
    assert "<strong>3</strong> failed deliveries" in confirm.text
    assert len(world.hooks.deliveries(status="failed")) == 3  # nothing sent yet
    done = a.post(path, data={"csrf_token": token, "since": "2000-01-01T00:00", "confirm": "yes"})
    assert done.status_code == 303
    assert len(world.hooks.deliveries(status="succeeded")) == 4
    again = a.post(path, data={"csrf_token": token, "since": "2000-01-01T00:00"})
    assert "No failed deliveries" in again.text  # already replayed: not counted twice
    bad = a.post(path, data={"csrf_token": token, "since": "yesterday"})
    assert bad.status_code == 422
    assert "since must be" in field_error(bad.text, "since")


def test_endpoint_lifecycle_through_the_pages(world: World, receiver: Receiver) -> None:
    a = world.client("acct_a")
    token = csrf(a)
    made = a.post(
        f"{MOUNT}/endpoints/new",
        data={
            "csrf_token": token,
            "url": receiver.url,
            "events": ["user.created", "invoice.paid"],
            "description": "mine",
        },
    )
    assert made.status_code == 303
    [endpoint] = world.hooks.endpoints(tenant="acct_a")
    assert endpoint.events == ("user.created", "invoice.paid")
    base = f"{MOUNT}/endpoints/{endpoint.id}"
    edit = a.get(f"{base}/edit").text
    assert 'value="user.created" checked' in edit
    assert 'value="user.*"' in edit
    a.post(f"{base}/edit", data={"csrf_token": token, "url": receiver.url, "events": ["user.*"]})
    assert world.hooks.get_endpoint(endpoint.id).events == ("user.*",)
    a.post(f"{base}/disable", data={"csrf_token": token})
    assert not world.hooks.get_endpoint(endpoint.id).enabled
    a.post(f"{base}/enable", data={"csrf_token": token})
    assert world.hooks.get_endpoint(endpoint.id).enabled
    a.post(f"{base}/rotate", data={"csrf_token": token, "grace": "3600"})
    page = a.get(base).text
    assert "Rotation in progress" in page
    a.post(f"{base}/end-rotation", data={"csrf_token": token})
    assert "Rotation in progress" not in a.get(base).text
    confirm = a.get(f"{base}/delete")
    assert "Delete this endpoint?" in confirm.text
    assert a.post(f"{base}/delete", data={"csrf_token": token}).status_code == 303
    assert world.hooks.endpoints(tenant="acct_a") == []


# Both dispatchers -------------------------------------------------------------------


def test_works_with_an_async_dispatcher(receiver: Receiver) -> None:
    async def build() -> hd.AsyncDispatcher:
        return hd.AsyncDispatcher(
            storage=hd.SQLiteStorage(":memory:") if False else hd.MemoryStorage(),
            catalog=CATALOG,
            targets=hd.TargetPolicy.local(),
        )

    hooks = asyncio.run(build())
    portal = Portal(hooks, secret_key=SECRET_KEY, tenant_of=tenant_from_header)
    host = Starlette(routes=[Mount(MOUNT, app=portal)])
    with TestClient(host, headers={"x-test-tenant": "acct_a"}, follow_redirects=False) as a:
        made = a.post(f"{MOUNT}/api/endpoints", json={"url": receiver.url, "events": ["*"]})
        assert made.status_code == 201, made.text
        listing = a.get(f"{MOUNT}/endpoints")
        assert receiver.url in listing.text
        sent = a.post(
            f"{MOUNT}/api/endpoints/{made.json()['id']}/test", json={"event_type": "user.deleted"}
        )
        assert sent.status_code == 201
        assert sent.json()["status"] in ("pending", "succeeded")


def test_sync_storage_calls_run_off_the_event_loop(world: World, tenant_a: TenantA) -> None:
    loop_threads: set[int] = set()
    calls: list[int] = []
    original = world.hooks.deliveries

    def spy(**kwargs: Any) -> Any:
        calls.append(threading.get_ident())
        return original(**kwargs)

    async def on_the_loop(request: Request) -> bool:
        loop_threads.add(threading.get_ident())
        return False

    world.hooks.deliveries = spy  # type: ignore[method-assign]
    portal = Portal(
        world.hooks, secret_key=SECRET_KEY, tenant_of=tenant_from_header, operator=on_the_loop
    )
    host = Starlette(routes=[Mount(MOUNT, app=portal)])
    with TestClient(host, headers={"x-test-tenant": "acct_a"}) as a:  # one event loop
        assert a.get(f"{MOUNT}/deliveries").status_code == 200
        assert a.get(f"{MOUNT}/endpoints").status_code == 200
    assert len(loop_threads) == 1
    assert calls
    assert not loop_threads & set(calls)


# Packaging --------------------------------------------------------------------------


def test_without_the_extra_the_error_names_it() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "sys.modules['starlette'] = None\n"
            "import hookdispatch as hd\n"
            "try:\n"
            "    import hookdispatch.portal\n"
            "except hd.MissingDependencyError as exc:\n"
            "    print(exc)\n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'hookdispatch[portal]'" in result.stdout


def test_the_example_host_app_serves_the_portal() -> None:
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import portal_app  # type: ignore[import-not-found]  # noqa: PLC0415
    finally:
        sys.path.remove(str(ROOT / "examples"))
    with TestClient(portal_app.app, follow_redirects=False) as client:
        assert client.get("/").status_code == 200
        login = client.post("/login", data={"account": "acct_42"})
        assert login.status_code == 303
        page = client.get("/settings/webhooks/endpoints")
        assert page.status_code == 200
        assert "acct_42" in page.text


def test_the_cli_serves_operator_mode_with_a_one_time_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "webhooks.db"
    storage = hd.SQLiteStorage(db)
    hd.Dispatcher(storage=storage, workers=0).add_endpoint(
        "https://example.com/hooks", tenant="acct_7"
    )
    storage.close()
    seen: dict[str, Any] = {}

    def serve(app: Any, *, host: str, port: int) -> None:
        seen["host"], seen["port"] = host, port
        with TestClient(app, base_url=f"http://{host}:{port}", follow_redirects=False) as client:
            seen["refused"] = client.get("/endpoints").status_code
            link = re.search(r"(http://\S+/login\?token=\S+)", seen["stdout"]()).group(1)
            seen["login"] = client.get(link).status_code
            seen["page"] = client.get("/endpoints").text
            seen["again"] = client.get(link).status_code

    monkeypatch.setattr(_portal, "serve", serve)
    runner = CliRunner()
    output: list[str] = []
    seen["stdout"] = lambda: output[0]
    original_echo = _portal.click.echo

    def echo(message: Any = None, **kwargs: Any) -> None:
        output[:] = [(output[0] if output else "") + str(message) + "\n"]
        original_echo(message, **kwargs)

    monkeypatch.setattr(_portal.click, "echo", echo)
    result = runner.invoke(cli, ["--db", str(db), "portal", "--port", "8765"])
    assert result.exit_code == 0, result.output
    assert "operator mode" in result.output
    assert "one-time link" in result.output
    assert seen["host"] == "127.0.0.1"
    assert seen["port"] == 8765
    assert seen["refused"] == 403
    assert seen["login"] == 303
    assert seen["again"] == 403
    assert "https://example.com/hooks" in seen["page"]
    assert "acct_7" in seen["page"]
