"""The webhooks topic: deliver a JSON payload by HTTP POST, signed with HMAC-SHA256.

    python -m jobrunner enqueue topics.webhooks.Deliver \\
        --args '{"url": "https://example.test/hook", "event": "order.paid", "payload": {"id": 7}}'

The body is ``{"event": ..., "payload": ..., "job_id": ..., "attempt": ...}``; the header
``X-Jobrunner-Signature: sha256=<hex>`` is the HMAC-SHA256 of the exact body bytes with
the topic's secret (``[topics.webhooks] options = { secret = "..." }`` or env
``JOBRUNNER_WEBHOOK_SECRET``). A 2xx answer completes the job; 4xx (except 408 and 429)
cancels it (the receiver refused it: retrying cannot help); 5xx, 408, 429, timeouts and
connection errors fail the attempt, so it is retried with the topic's backoff.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Any

from jobrunner import Cancel, Job, Worker

SIGNATURE_HEADER = "X-Jobrunner-Signature"
RETRYABLE_4XX = {408, 429}


class DeliveryError(Exception):
    """The receiver could not take the delivery now (retried later)."""


def sign(secret: str, body: bytes) -> str:
    """The signature header value for ``body``: ``sha256=<hex digest>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """True when ``header`` is the signature of ``body`` (for receivers)."""
    return hmac.compare_digest(sign(secret, body), header)


class Deliver(Worker):
    """POST ``args["payload"]`` to ``args["url"]``, signed."""

    topic = "webhooks"
    max_attempts = 10

    async def perform(self, job: Job) -> Any:
        url = job.args.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return Cancel(f"args.url must be an http(s) URL, got {url!r}")
        secret = os.environ.get("JOBRUNNER_WEBHOOK_SECRET") or str(self.options.get("secret", ""))
        if not secret:
            return Cancel("no signing secret: set [topics.webhooks] options.secret or JOBRUNNER_WEBHOOK_SECRET")
        timeout = float(self.options.get("timeout", 10.0))
        body = json.dumps(
            {"event": job.args.get("event"), "payload": job.args.get("payload"), "job_id": job.id,
             "attempt": job.attempt},
            separators=(",", ":"), sort_keys=True,
        ).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, body),
            "X-Jobrunner-Job": str(job.id),
            "User-Agent": "jobrunner-webhooks/1",
        }
        import httpx  # here: enqueueing, which imports this module, needs no HTTP client

        try:
            async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
                response = await client.post(url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise DeliveryError(f"timed out after {timeout:g}s: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise DeliveryError(f"connection failed: {type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return {"status": status}
        excerpt = response.text[:200]
        if 400 <= status < 500 and status not in RETRYABLE_4XX:
            return Cancel(f"HTTP {status} from {url}: {excerpt}")
        raise DeliveryError(f"HTTP {status} from {url}: {excerpt}")
