"""Signing and verifying webhook bodies. Standard library only, no I/O.

Two schemes, both on every request by default:

* ``X-Webhook-Signature``: lowercase hex HMAC-SHA256 of the exact body bytes, keyed by
  the UTF-8 bytes of the whole secret string (``whsec_`` prefix included). This is
  what Node's ``createHmac("sha256", secret).update(body).digest("hex")`` computes.
* Standard Webhooks (https://www.standardwebhooks.com): ``webhook-id``,
  ``webhook-timestamp`` and ``webhook-signature: v1,<base64>``, an HMAC-SHA256 over
  ``{id}.{timestamp}.{body}``. The key is the base64-decoded part after ``whsec_``;
  a secret without that prefix is used as its UTF-8 bytes.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
from collections.abc import Mapping

__all__ = [
    "sign_hex",
    "sign_standard",
    "verify_signature",
    "verify_standard_webhook",
]

_PREFIX = "whsec_"


@functools.lru_cache(maxsize=1024)
def _keyed_hex(secret: str) -> hmac.HMAC:
    return hmac.new(secret.encode(), digestmod=hashlib.sha256)


@functools.lru_cache(maxsize=1024)
def _keyed_standard(secret: str) -> hmac.HMAC:
    prefixed = secret.startswith(_PREFIX)
    key = base64.b64decode(secret[len(_PREFIX) :]) if prefixed else secret.encode()
    return hmac.new(key, digestmod=hashlib.sha256)


# Each secret's keyed HMAC state is made once and copied per message: one-shot HMAC
# (hmac.digest) sets the key up and looks the digest up in OpenSSL on every call,
# several times the cost of the hashing itself on a hot path. The cached states are
# never updated, only copied, so threads may share them.


def sign_hex(body: bytes, secret: str) -> str:
    """The ``X-Webhook-Signature`` value: hex HMAC-SHA256 of ``body`` keyed by ``secret``."""
    mac = _keyed_hex(secret).copy()
    mac.update(body)
    return mac.hexdigest()


def sign_standard(body: bytes, secret: str, *, msg_id: str, timestamp: int) -> str:
    """The Standard Webhooks signature (``v1,<base64>``) of ``body`` at ``timestamp``."""
    mac = _keyed_standard(secret).copy()
    mac.update(f"{msg_id}.{timestamp}.".encode())
    mac.update(body)
    return "v1," + binascii.b2a_base64(mac.digest(), newline=False).decode("ascii")


def verify_signature(body: bytes, signature: str, secret: str) -> bool:
    """Check an ``X-Webhook-Signature`` header against ``body``, in constant time.

    For receivers: pass the raw request body bytes (not re-encoded JSON), the header
    value, and the endpoint's secret. Returns ``True`` only when they match.
    """
    if not isinstance(signature, str):
        return False
    expected = sign_hex(body, secret).encode()
    return hmac.compare_digest(expected, signature.strip().lower().encode(errors="replace"))


def verify_standard_webhook(
    body: bytes,
    headers: Mapping[str, str],
    secret: str,
    *,
    now: float,
    tolerance: float = 300.0,
) -> bool:
    """Check Standard Webhooks headers against ``body``, in constant time.

    ``headers`` is looked up case-insensitively. The timestamp must be within
    ``tolerance`` seconds of ``now`` (Unix seconds), which is the replay protection the
    scheme offers. Any one of the space-separated ``v1,`` signatures may match.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    msg_id = lowered.get("webhook-id")
    timestamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not msg_id or not timestamp or not signatures:
        return False
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    if abs(now - sent_at) > tolerance:
        return False
    expected = sign_standard(body, secret, msg_id=msg_id, timestamp=sent_at).encode()
    return any(
        hmac.compare_digest(expected, candidate.encode(errors="replace"))
        for candidate in signatures.split()
    )
