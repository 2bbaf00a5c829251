"""The peer: the usual Celery way to send a webhook, one task per webhook.

The worker runs as ``python -m celery -A benchmarks.celery_peer worker --pool threads
--concurrency N``; the task builds the event document, signs it (hex HMAC-SHA256, the
``X-Webhook-Signature`` scheme) and POSTs it with one ``httpx.Client`` shared by the
worker's threads, retrying with backoff on a failed answer. The broker is Redis
(``HOOKDISPATCH_BENCH_BROKER``), the queue ``HOOKDISPATCH_BENCH_QUEUE``; results
are ignored, as webhook senders do.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
import uuid

import httpx
from celery import Celery

BROKER = os.environ.get("HOOKDISPATCH_BENCH_BROKER", "redis://127.0.0.1:6379/11")
QUEUE = os.environ.get("HOOKDISPATCH_BENCH_QUEUE", "hookdispatch-bench")
CONNECTIONS = int(os.environ.get("HOOKDISPATCH_BENCH_CONNECTIONS", "8"))
SECRET = b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

app = Celery("hookdispatch_bench", broker=BROKER)
app.conf.update(
    task_default_queue=QUEUE,
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)

_client: httpx.Client | None = None


def client() -> httpx.Client:
    global _client
    if _client is None:
        limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
        _client = httpx.Client(limits=limits, timeout=5.0, follow_redirects=False)
    return _client


@app.task(bind=True, max_retries=3)
def send_webhook(self, url: str, event_type: str, data: object) -> None:  # type: ignore[no-untyped-def]
    body = json.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex}",
            "event": event_type,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "data": data,
        },
        separators=(",", ":"),
    ).encode()
    signature = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    try:
        response = client().post(
            url,
            content=body,
            headers={"content-type": "application/json", "x-webhook-signature": signature},
        )
    except httpx.HTTPError as exc:
        raise self.retry(exc=exc, countdown=2**self.request.retries) from exc
    if not 200 <= response.status_code < 300:
        raise self.retry(countdown=2**self.request.retries)
