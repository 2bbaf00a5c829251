"""Signatures as receivers check them: the integration guide's Node.js snippet, the
``standardwebhooks`` package, our own verify helpers, and a real HTTP round trip."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

import pytest
from pytest_httpserver import HTTPServer
from standardwebhooks import Webhook, WebhookVerificationError

import hookdispatch as hd
from hookdispatch._core import Claim, prepare

# Non-ASCII on purpose: the body is UTF-8, and every check must agree on its bytes.
DATA = {"user_id": "user_78451", "plan": "Pro ✓", "name": "Zoë 😀", "amount": 12.5}
RFC3339_Z = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")

# The integration guide's check, verbatim in its last line. The payload arrives on
# stdin as raw bytes; `as_string` decodes it first, as a receiver holding the body as
# a string (e.g. express.text()) would.
NODE_CHECK = """
const { createHmac } = require("crypto");
const chunks = [];
process.stdin.on("data", (chunk) => chunks.push(chunk));
process.stdin.on("end", () => {
  const raw = Buffer.concat(chunks);
  const payload = process.env.HD_AS_STRING === "1" ? raw.toString("utf8") : raw;
  const secret = process.env.HD_SECRET;
  const signature = process.env.HD_SIGNATURE;
  const ok = createHmac("sha256", secret).update(payload).digest("hex") === signature;
  process.stdout.write(ok ? "valid" : "invalid");
});
"""


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node is not on PATH: CI must install Node.js to run the guide's check")
        pytest.skip("node is not installed; the integration guide's Node.js check needs it")
    return node


def node_accepts(body: bytes, signature: str, secret: str, *, as_string: bool = False) -> bool:
    """Run the guide's Node.js check in a real ``node`` process."""
    env = {
        **os.environ,
        "HD_SECRET": secret,
        "HD_SIGNATURE": signature,
        "HD_AS_STRING": "1" if as_string else "0",
    }
    result = subprocess.run(
        [node_binary(), "-e", NODE_CHECK],
        input=body,
        capture_output=True,
        env=env,
        timeout=20,
        check=True,
    )
    verdict = result.stdout.decode()
    assert verdict in ("valid", "invalid"), result.stderr.decode()
    return verdict == "valid"


def python_accepts(body: bytes, signature: str, secret: str) -> bool:
    """The same check as the guide's, in plain Python ``hmac``."""
    expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


def make_claim(secret: str | None = None, *, data: object = None) -> Claim:
    """A claim built from validated models, the way a storage backend assembles one."""
    now = datetime(2024, 6, 30, 15, 41, 23, tzinfo=UTC)
    endpoint = hd.Endpoint.create(
        "https://receiver.example/hooks", now=now, secret=secret or hd.generate_secret()
    )
    event = hd.Event.create("user.subscription.updated", DATA if data is None else data, now=now)
    delivery = hd.Delivery.create(event, endpoint, now=now)
    return Claim(
        delivery=delivery,
        endpoint=endpoint,
        event_type=event.type,
        body=event.body,
        lease="lease-token",
    )


@pytest.fixture
def claim() -> Claim:
    return make_claim()


def signed(claim: Claim, *, now: datetime | None = None) -> hd.Request:
    return prepare(claim, now=now or datetime.now(UTC), timeout=5.0)


def tamper(body: bytes) -> bytes:
    return body.replace(b"Pro", b"Max", 1)


# The guide's hex signature -------------------------------------------------------------

CHECKS: dict[str, Callable[[bytes, str, str], bool]] = {
    "python-hmac": python_accepts,
    "node-buffer": node_accepts,
    "node-string": lambda body, sig, secret: node_accepts(body, sig, secret, as_string=True),
}


@pytest.fixture(params=sorted(CHECKS))
def guide_check(request: pytest.FixtureRequest) -> Callable[[bytes, str, str], bool]:
    return CHECKS[request.param]


def test_hex_signature_passes_the_integration_guide_check(
    claim: Claim, guide_check: Callable[[bytes, str, str], bool]
) -> None:
    request = signed(claim)
    signature = request.headers["x-webhook-signature"]
    assert re.fullmatch(r"[0-9a-f]{64}", signature)
    assert guide_check(request.body, signature, claim.endpoint.secret)


def test_hex_signature_keys_on_a_user_given_secret_without_prefix(
    guide_check: Callable[[bytes, str, str], bool],
) -> None:
    claim = make_claim("plain-secret-from-the-dashboard")
    request = signed(claim)
    assert guide_check(request.body, request.headers["x-webhook-signature"], claim.endpoint.secret)


def test_hex_signature_fails_the_guide_check_for_a_tampered_body(
    claim: Claim, guide_check: Callable[[bytes, str, str], bool]
) -> None:
    request = signed(claim)
    signature = request.headers["x-webhook-signature"]
    assert not guide_check(tamper(request.body), signature, claim.endpoint.secret)


def test_hex_signature_fails_the_guide_check_for_a_wrong_secret(
    claim: Claim, guide_check: Callable[[bytes, str, str], bool]
) -> None:
    request = signed(claim)
    signature = request.headers["x-webhook-signature"]
    assert not guide_check(request.body, signature, hd.generate_secret())


def test_sign_hex_is_the_documented_hmac() -> None:
    body = b'{"id":"evt_1","data":{}}'
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert hd.sign_hex(body, secret) == expected


# Standard Webhooks ------------------------------------------------------------------


def test_standardwebhooks_package_accepts_our_headers(claim: Claim) -> None:
    request = signed(claim, now=datetime.now(UTC))
    payload = Webhook(claim.endpoint.secret).verify(request.body, dict(request.headers))
    assert payload == json.loads(request.body)
    assert payload["data"] == DATA


def test_standardwebhooks_package_accepts_header_names_in_any_case(claim: Claim) -> None:
    request = signed(claim)
    titled = {key.title(): value for key, value in request.headers.items()}
    Webhook(claim.endpoint.secret).verify(request.body, titled)


def test_standardwebhooks_package_rejects_a_tampered_body(claim: Claim) -> None:
    request = signed(claim)
    with pytest.raises(WebhookVerificationError):
        Webhook(claim.endpoint.secret).verify(tamper(request.body), dict(request.headers))


def test_standardwebhooks_package_rejects_a_wrong_secret(claim: Claim) -> None:
    request = signed(claim)
    with pytest.raises(WebhookVerificationError):
        Webhook(hd.generate_secret()).verify(request.body, dict(request.headers))


def test_standardwebhooks_package_rejects_our_stale_timestamp(claim: Claim) -> None:
    request = signed(claim, now=datetime.now(UTC) - timedelta(minutes=10))
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(claim.endpoint.secret).verify(request.body, dict(request.headers))


def test_standard_signature_of_a_prefixless_secret_uses_its_utf8_bytes() -> None:
    # Documented in _signing: such a secret is used as its UTF-8 bytes, so receivers
    # using the standardwebhooks package must pass those bytes, not the string.
    claim = make_claim("plain-secret-from-the-dashboard")
    request = signed(claim)
    Webhook(claim.endpoint.secret.encode()).verify(request.body, dict(request.headers))


def test_webhook_id_is_the_event_id(claim: Claim) -> None:
    request = signed(claim)
    assert request.headers["webhook-id"] == claim.delivery.event_id
    assert json.loads(request.body)["id"] == claim.delivery.event_id


def test_webhook_timestamp_and_signature_are_fresh_per_attempt(claim: Claim) -> None:
    first_at = datetime.now(UTC)
    first = signed(claim, now=first_at)
    second = signed(claim, now=first_at + timedelta(seconds=7))
    assert int(second.headers["webhook-timestamp"]) == int(first.headers["webhook-timestamp"]) + 7
    assert first.headers["webhook-timestamp"] == str(int(first_at.timestamp()))
    assert first.headers["webhook-signature"] != second.headers["webhook-signature"]
    # Same event, same bytes: the id, body and hex signature do not change.
    assert first.body == second.body
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.headers["x-webhook-signature"] == second.headers["x-webhook-signature"]
    for request in (first, second):
        Webhook(claim.endpoint.secret).verify(request.body, dict(request.headers))


def test_standard_signature_format() -> None:
    key = bytes(range(32))
    secret = "whsec_" + base64.b64encode(key).decode()
    body = b'{"a":1}'
    expected = base64.b64encode(hmac.new(key, b"msg_1.1700000000." + body, "sha256").digest())
    assert hd.sign_standard(body, secret, msg_id="msg_1", timestamp=1700000000) == (
        "v1," + expected.decode()
    )


# hd.verify_signature -----------------------------------------------------------------


def test_verify_signature_accepts_the_right_body_and_secret(claim: Claim) -> None:
    request = signed(claim)
    signature = request.headers["x-webhook-signature"]
    assert hd.verify_signature(request.body, signature, claim.endpoint.secret) is True
    # Receivers sometimes upper-case or pad header values.
    assert hd.verify_signature(request.body, f" {signature.upper()} ", claim.endpoint.secret)


@pytest.mark.parametrize(
    "signature",
    ["", "garbage", "0" * 64, "v1,abc", "g" * 64],
    ids=["empty", "garbage", "zeros", "standard-format", "non-hex"],
)
def test_verify_signature_rejects_garbage(claim: Claim, signature: str) -> None:
    request = signed(claim)
    assert hd.verify_signature(request.body, signature, claim.endpoint.secret) is False


@pytest.mark.parametrize("signature", [None, 123, b"abc", ["x"]], ids=repr)
def test_verify_signature_rejects_non_str_signatures(claim: Claim, signature: object) -> None:
    request = signed(claim)
    assert hd.verify_signature(request.body, signature, claim.endpoint.secret) is False  # type: ignore[arg-type]


def test_verify_signature_rejects_a_tampered_body_and_a_wrong_secret(claim: Claim) -> None:
    request = signed(claim)
    signature = request.headers["x-webhook-signature"]
    assert hd.verify_signature(tamper(request.body), signature, claim.endpoint.secret) is False
    assert hd.verify_signature(request.body, signature, hd.generate_secret()) is False


def test_verify_signature_rejects_non_ascii_garbage(claim: Claim) -> None:
    request = signed(claim)
    assert hd.verify_signature(request.body, "ü" * 64, claim.endpoint.secret) is False


# hd.verify_standard_webhook ----------------------------------------------------------


def verify_standard(
    body: bytes, headers: Mapping[str, str], secret: str, *, now: float, **kw: float
) -> bool:
    return hd.verify_standard_webhook(body, headers, secret, now=now, **kw)


def test_verify_standard_webhook_accepts_within_tolerance(claim: Claim) -> None:
    sent_at = datetime(2024, 6, 30, 15, 41, 23, tzinfo=UTC)
    request = signed(claim, now=sent_at)
    t = sent_at.timestamp()
    secret = claim.endpoint.secret
    for now in (t, t + 299, t - 299, t + 300):
        assert verify_standard(request.body, request.headers, secret, now=now), now
    upper = {key.upper(): value for key, value in request.headers.items()}
    assert verify_standard(request.body, upper, secret, now=t)


def test_verify_standard_webhook_rejects_stale_and_future_timestamps(claim: Claim) -> None:
    sent_at = datetime(2024, 6, 30, 15, 41, 23, tzinfo=UTC)
    request = signed(claim, now=sent_at)
    t = sent_at.timestamp()
    secret = claim.endpoint.secret
    assert not verify_standard(request.body, request.headers, secret, now=t + 301)
    assert not verify_standard(request.body, request.headers, secret, now=t - 301)
    assert not verify_standard(request.body, request.headers, secret, now=t + 3600)
    assert not verify_standard(request.body, request.headers, secret, now=t + 11, tolerance=10)
    assert verify_standard(request.body, request.headers, secret, now=t + 3600, tolerance=3600)


def test_verify_standard_webhook_rejects_tampering_and_wrong_secret(claim: Claim) -> None:
    now = datetime.now(UTC)
    request = signed(claim, now=now)
    t = now.timestamp()
    secret = claim.endpoint.secret
    assert not verify_standard(tamper(request.body), request.headers, secret, now=t)
    assert not verify_standard(request.body, request.headers, hd.generate_secret(), now=t)
    # A replayed signature under a new timestamp does not match.
    moved = {**request.headers, "webhook-timestamp": str(int(t) + 1)}
    assert not verify_standard(request.body, moved, secret, now=t)
    other_id = {**request.headers, "webhook-id": "evt_other"}
    assert not verify_standard(request.body, other_id, secret, now=t)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_verify_standard_webhook_rejects_missing_headers(claim: Claim, missing: str) -> None:
    now = datetime.now(UTC)
    request = signed(claim, now=now)
    headers = {k: v for k, v in request.headers.items() if k != missing}
    assert not verify_standard(request.body, headers, claim.endpoint.secret, now=now.timestamp())
    emptied = {**request.headers, missing: ""}
    assert not verify_standard(request.body, emptied, claim.endpoint.secret, now=now.timestamp())


def test_verify_standard_webhook_rejects_a_non_numeric_timestamp(claim: Claim) -> None:
    now = datetime.now(UTC)
    request = signed(claim, now=now)
    headers = {**request.headers, "webhook-timestamp": "yesterday"}
    assert not verify_standard(request.body, headers, claim.endpoint.secret, now=now.timestamp())


def test_verify_standard_webhook_accepts_any_of_several_signatures(claim: Claim) -> None:
    now = datetime.now(UTC)
    request = signed(claim, now=now)
    good = request.headers["webhook-signature"]
    rotated = {**request.headers, "webhook-signature": f"v1,AAAA {good}"}
    assert verify_standard(request.body, rotated, claim.endpoint.secret, now=now.timestamp())


# Real HTTP, end to end -----------------------------------------------------------------


def test_dispatched_request_verifies_on_the_received_bytes(
    httpserver: HTTPServer, make_dispatcher: Callable[..., hd.Dispatcher]
) -> None:
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    hooks = make_dispatcher(storage=hd.MemoryStorage(), workers=0)
    endpoint = hooks.add_endpoint(httpserver.url_for("/hook"))
    event = hooks.dispatch("user.subscription.updated", DATA)

    assert len(httpserver.log) == 1
    received, _ = httpserver.log[0]
    body = received.get_data()
    headers = dict(received.headers)
    secret = endpoint.secret

    assert received.headers["Content-Type"] == "application/json"
    document = json.loads(body)
    assert list(document) == ["id", "event", "created_at", "data"]
    assert document["id"] == event.id
    assert document["event"] == "user.subscription.updated"
    assert RFC3339_Z.fullmatch(document["created_at"]), document["created_at"]
    assert document["data"] == DATA
    assert body == event.body

    signature = received.headers["X-Webhook-Signature"]
    assert python_accepts(body, signature, secret)
    assert hd.verify_signature(body, signature, secret)
    assert Webhook(secret).verify(body, headers) == document
    assert received.headers["webhook-id"] == event.id
    assert hd.verify_standard_webhook(body, headers, secret, now=datetime.now(UTC).timestamp())

    [delivery] = hooks.deliveries(event_id=event.id)
    assert delivery.status is hd.DeliveryStatus.SUCCEEDED
    assert delivery.attempt_count == 1


def test_dispatched_request_passes_the_node_check(
    httpserver: HTTPServer, make_dispatcher: Callable[..., hd.Dispatcher]
) -> None:
    node_binary()  # skip (or fail on CI) before doing any work
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    hooks = make_dispatcher(storage=hd.MemoryStorage(), workers=0)
    endpoint = hooks.add_endpoint(httpserver.url_for("/hook"))
    hooks.dispatch("user.subscription.updated", DATA)

    [(received, _)] = httpserver.log
    body = received.get_data()
    signature = received.headers["X-Webhook-Signature"]
    assert node_accepts(body, signature, endpoint.secret)
    assert node_accepts(body, signature, endpoint.secret, as_string=True)
    assert not node_accepts(tamper(body), signature, endpoint.secret)
