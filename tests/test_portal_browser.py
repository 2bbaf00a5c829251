"""The webhooks portal in a real browser: Debian's Chromium (packages ``chromium`` and
``chromium-driver``) driven by Selenium, never a browser downloaded at run time.

The end-to-end flow of the integration guide as tenant A, then tenant B seeing none
of it; hostile receivers and inputs that must render inert; and the screenshots in
docs/img/portal-*.png that docs/portal.md shows. Without the browser the tests skip,
saying why; under CI=true they fail instead (.ci/run installs the packages).
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from pytest_httpserver import HTTPServer
from starlette.applications import Starlette
from starlette.routing import Mount
from werkzeug import Request as WRequest
from werkzeug import Response as WResponse

import hookdispatch as hd
from hookdispatch.portal import Portal

ROOT = Path(__file__).resolve().parent.parent
# The screenshots docs/portal.md shows are rewritten only when asked
# (HOOKDISPATCH_UPDATE_SCREENSHOTS=1 make test), so that a test run leaves the
# checkout as it found it; otherwise they are taken all the same, into a temporary folder.
SCREENSHOTS = (
    ROOT / "docs" / "img"
    if os.environ.get("HOOKDISPATCH_UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.mkdtemp(prefix="portal-screenshots-"))
)
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
MOUNT = "/settings/webhooks"
CATALOG = hd.Catalog(
    [
        hd.EventType(
            "user.created", "Triggered when a new user signs up", example={"user_id": "user_78451"}
        ),
        hd.EventType("user.subscription.updated", "Triggered when a user's subscription changes"),
        hd.EventType("user.deleted", "Triggered when a user account is deleted"),
        hd.EventType(
            "invoice.paid",
            "Triggered when an invoice is paid",
            example={"invoice_id": "in_1", "amount": 4900, "currency": "usd"},
        ),
    ]
)


def _browser_missing() -> str | None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        return (
            f"no browser: {', '.join(missing)} not found (apt-get install chromium"
            " chromium-driver; .ci/run does it)"
        )
    try:
        import selenium  # noqa: F401, PLC0415
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    reason = _browser_missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    from selenium import webdriver  # noqa: PLC0415
    from selenium.webdriver.chrome.options import Options  # noqa: PLC0415
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not download anything
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # as root in a container
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    browser.set_page_load_timeout(30)
    yield browser
    browser.quit()


class Receiver:
    def __init__(self, server: HTTPServer) -> None:
        self.status = 200
        self.body = "ok"
        self.content_type = "text/plain"
        self.requests: list[WRequest] = []
        server.expect_request(re.compile("^/hooks"), method="POST").respond_with_handler(
            self._handle
        )
        self.url = server.url_for("/hooks")

    def _handle(self, request: WRequest) -> WResponse:
        self.requests.append(request)
        return WResponse(self.body, status=self.status, content_type=self.content_type)


class Server:
    """The host app (the portal mounted at MOUNT) under uvicorn on 127.0.0.1."""

    def __init__(self, app: Any) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        self.base = f"http://127.0.0.1:{self.port}{MOUNT}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def receiver(httpserver: HTTPServer) -> Receiver:
    return Receiver(httpserver)


@pytest.fixture
def site(driver: Any) -> Iterator[tuple[hd.Dispatcher, Portal, Server]]:
    hooks = hd.Dispatcher(
        storage=hd.MemoryStorage(),
        workers=0,
        catalog=CATALOG,
        retry=hd.RetryPolicy(max_attempts=1),
        targets=hd.TargetPolicy.local(),
    )
    portal = Portal(hooks, secret_key="browser-test-key-" + "b" * 32, title="Acme · Webhooks")
    server = Server(Starlette(routes=[Mount(MOUNT, app=portal)]))
    driver.delete_all_cookies()
    yield hooks, portal, server
    server.stop()
    hooks.close()


def sign_in(driver: Any, portal: Portal, server: Server, tenant: str) -> None:
    driver.delete_all_cookies()
    driver.get(portal.link_for(tenant, base_url=server.base))
    assert driver.current_url == f"{server.base}/endpoints", driver.page_source[:500]


def shot(driver: Any, name: str, *, width: int = 1280) -> None:
    """A screenshot of the whole page at ``width`` pixels, for docs/portal.md."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, max(600, min(int(height) + 140, 2400)))
    time.sleep(0.1)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / f"portal-{name}.png"))
    driver.set_window_size(1280, 900)


def by_css(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    return driver.find_element(By.CSS_SELECTOR, selector)


def all_css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def wait_for_navigation(driver: Any, *, away_from: str, seconds: float = 10.0) -> None:
    """Wait until the browser has left ``away_from``: a click that submits a form can
    return before the browser has followed the answer's redirect."""
    from selenium.webdriver.support.ui import WebDriverWait  # noqa: PLC0415

    WebDriverWait(driver, seconds).until(lambda d: d.current_url != away_from)


def click_link(driver: Any, text: str) -> None:
    """Follow a link, and wait until the browser has left the page it was on."""
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    leaving = driver.current_url
    driver.find_element(By.PARTIAL_LINK_TEXT, text).click()
    wait_for_navigation(driver, away_from=leaving)


def test_the_guides_flow_end_to_end(
    driver: Any, site: tuple[hd.Dispatcher, Portal, Server], receiver: Receiver
) -> None:
    hooks, portal, server = site
    sign_in(driver, portal, server, "acct_a")
    assert "No endpoints yet" in driver.page_source
    shot(driver, "empty")

    # Add an endpoint pointing at the local receiver, picking two catalog events.
    click_link(driver, "Add endpoint")
    by_css(driver, "#url").send_keys(receiver.url + "/acme")
    by_css(driver, "#description").send_keys("Production: user sync and billing")
    for event_type in ("user.created", "invoice.paid"):
        by_css(driver, f'input[name="events"][value="{event_type}"]').click()
    shot(driver, "add-endpoint")
    adding = driver.current_url
    by_css(driver, "form.form button[type=submit]").click()
    wait_for_navigation(driver, away_from=adding)
    assert "/endpoints/ep_" in driver.current_url, driver.page_source[-3000:]
    [endpoint] = hooks.endpoints(tenant="acct_a")
    assert endpoint.events == ("user.created", "invoice.paid")
    assert driver.current_url.startswith(f"{server.base}/endpoints/{endpoint.id}")
    assert endpoint.secret not in driver.page_source  # hidden until revealed

    # Reveal the secret (a form: its answer is the page at .../secret).
    showing = driver.current_url
    by_css(driver, "#reveal-secret").click()
    wait_for_navigation(driver, away_from=showing)
    assert by_css(driver, "#secret-value").text == endpoint.secret
    assert endpoint.secret not in driver.current_url

    # Send a test event (the catalog's example) and see it delivered.
    click_link(driver, "Send test event")
    assert json.loads(by_css(driver, "#data").get_attribute("value")) == {"user_id": "user_78451"}
    shot(driver, "test-event")
    testing = driver.current_url
    by_css(driver, "#send-test").click()
    wait_for_navigation(driver, away_from=testing)
    assert "/deliveries/dlv_" in driver.current_url
    assert by_css(driver, "h1 .status").text.lower() == "succeeded"
    assert "HTTP 200" in by_css(driver, ".attempt").text
    [request] = receiver.requests
    assert hd.verify_signature(
        request.get_data(), request.headers["x-webhook-signature"], endpoint.secret
    )

    # The receiver fails: the failed attempt shows its response body.
    receiver.status, receiver.body = 503, "maintenance: back at 16:00 UTC"
    driver.get(f"{server.base}/endpoints/{endpoint.id}/test?type=invoice.paid")
    testing = driver.current_url
    by_css(driver, "#send-test").click()
    wait_for_navigation(driver, away_from=testing)
    assert by_css(driver, "h1 .status").text.lower() == "failed"
    attempt = by_css(driver, ".attempt-failed")
    assert "HTTP 503" in attempt.text
    assert "http status" in attempt.text
    assert by_css(driver, "pre.response-body").text == "maintenance: back at 16:00 UTC"
    shot(driver, "delivery-failed")
    failed_url = driver.current_url

    # Replay it once the receiver is back: it succeeds.
    receiver.status, receiver.body = 200, "ok"
    by_css(driver, "#replay").click()
    wait_for_navigation(driver, away_from=failed_url)
    assert driver.current_url != failed_url
    assert by_css(driver, "h1 .status").text.lower() == "succeeded"
    assert len(receiver.requests) == 3

    # The endpoint list and the delivery log.
    driver.get(f"{server.base}/endpoints")
    row = by_css(driver, f'tr[data-endpoint-id="{endpoint.id}"]')
    assert "67%" in row.text  # 2 of the 3 deliveries succeeded
    shot(driver, "endpoints")
    driver.get(f"{server.base}/endpoints/{endpoint.id}")
    shot(driver, "endpoint")
    click_link(driver, "Deliveries")
    assert len(all_css(driver, "tr[data-delivery-id]")) == 3
    shot(driver, "deliveries")
    driver.get(failed_url)
    shot(driver, "delivery-phone", width=390)
    driver.get(f"{server.base}/endpoints")
    shot(driver, "endpoints-phone", width=390)

    # Tenant B sees none of it.
    sign_in(driver, portal, server, "acct_b")
    assert "No endpoints yet" in driver.page_source
    assert endpoint.url not in driver.page_source
    driver.get(f"{server.base}/deliveries")
    assert all_css(driver, "tr[data-delivery-id]") == []
    driver.get(f"{server.base}/endpoints/{endpoint.id}")
    assert "Not found" in driver.title
    assert endpoint.url not in driver.page_source
    driver.get(failed_url)
    assert "Not found" in driver.title
    assert "maintenance" not in driver.page_source


XSS = '<script>window.__xss = "script"</script><img src=x onerror="window.__xss = \'img\'">'


def test_hostile_content_renders_inert(
    driver: Any, site: tuple[hd.Dispatcher, Portal, Server], receiver: Receiver
) -> None:
    hooks, portal, server = site
    receiver.status, receiver.content_type, receiver.body = 500, "text/html", XSS
    endpoint = hooks.add_endpoint(
        receiver.url + "/x?q=%3Cscript%3E",
        events=["*"],
        tenant="acct_x",
        description=XSS,
    )
    event = hooks.dispatch("user.created", {"name": XSS, XSS: XSS}, tenant="acct_x")
    [delivery] = hooks.deliveries(event_id=event.id)
    assert delivery.status == "failed"
    sign_in(driver, portal, server, "acct_x")
    pages = [
        f"{server.base}/endpoints",
        f"{server.base}/endpoints/{endpoint.id}",
        f"{server.base}/endpoints/{endpoint.id}/edit",
        f"{server.base}/deliveries",
        f"{server.base}/deliveries/{delivery.id}",
        f"{server.base}/endpoints/{endpoint.id}/test?type=" + "%3Cscript%3Ewindow.__xss%3D1",
    ]
    for page in pages:
        driver.get(page)
        time.sleep(0.2)  # let an injected image fail to load, if there were one
        assert driver.execute_script("return window.__xss") is None, page
        assert all_css(driver, "img") == [], page
        assert len(all_css(driver, "script")) == 1, page  # ours, from /static
    driver.get(f"{server.base}/deliveries/{delivery.id}")
    assert by_css(driver, "pre.response-body").text == XSS  # shown as text
    assert json.loads(by_css(driver, "#payload").text)["data"] == {"name": XSS, XSS: XSS}
    driver.get(f"{server.base}/endpoints/{endpoint.id}")
    assert XSS in driver.page_source.replace("&lt;", "<").replace("&gt;", ">").replace(
        "&quot;", '"'
    ).replace("&#34;", '"').replace("&#39;", "'")
    assert driver.execute_script("return window.__xss") is None
