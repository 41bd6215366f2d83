"""The webhook endpoint: Meta's verify handshake and the signed event POST."""

from __future__ import annotations

import asyncio
import hmac
import time
from datetime import UTC, datetime

from aiohttp import web

from inbox_common import tracing
from inbox_common.broker.publisher import PublishFailedError
from inbox_common.contracts.delivery import WebhookDelivery
from inbox_common.http import REQUEST_ID, ApiError
from inbox_common.logging import bind_message_context, get_logger
from inbox_common.whatsapp.signature import SIGNATURE_HEADER
from inbox_ingest.keys import INGEST

log = get_logger(__name__)

# Above this size hashing moves off the event loop (hashlib releases the GIL).
_THREAD_HASH_BYTES = 256 * 1024
_ACCEPTED = b'{"status":"accepted"}'


async def verify_subscription(request: web.Request) -> web.Response:
    """``GET /webhooks/whatsapp``: echo ``hub.challenge`` when the verify token matches."""
    expected = request.app[INGEST].verify_token
    query = request.query
    token = query.get("hub.verify_token", "")
    if query.get("hub.mode") == "subscribe" and hmac.compare_digest(token.encode(), expected):
        log.info("webhook.subscription_verified")
        return web.Response(text=query.get("hub.challenge", ""), content_type="text/plain")
    log.warning("webhook.subscription_refused", mode=query.get("hub.mode"))
    raise ApiError(
        403,
        "verification_failed",
        "hub.mode must be 'subscribe' and hub.verify_token must equal "
        "WHATSAPP_WEBHOOK_VERIFY_TOKEN",
    )


async def receive_event(request: web.Request) -> web.Response:
    """``POST /webhooks/whatsapp``: 200 only once RabbitMQ confirmed the raw body."""
    ingest = request.app[INGEST]
    metrics = ingest.metrics
    body = await request.read()
    header = request.headers.get(SIGNATURE_HEADER)
    if len(body) > _THREAD_HASH_BYTES:
        sha256 = await asyncio.to_thread(ingest.digest_if_signed, body, header)
    else:
        sha256 = ingest.digest_if_signed(body, header)
    if sha256 is None:
        metrics.bad_signature.inc()
        log.warning(
            "webhook.bad_signature",
            has_header=header is not None,
            body_bytes=len(body),
            remote=request.remote,
        )
        raise ApiError(
            401,
            "invalid_signature",
            f"{SIGNATURE_HEADER} is missing or does not match the body; it must be "
            "sha256=<hex HMAC-SHA256 of the raw body with the app secret> "
            "(WHATSAPP_WEBHOOK_SECRET)",
        )
    bind_message_context(sha256=sha256)
    # Built without validation: every field was just computed here.
    delivery = WebhookDelivery.model_construct(
        sha256=sha256,
        request_id=request[REQUEST_ID],
        received_at=datetime.now(UTC),
        body=body,
        traceparent=tracing.current_traceparent(),
    )
    started = time.perf_counter()
    try:
        await ingest.publisher.publish(delivery)
    except PublishFailedError as exc:
        metrics.received.labels(f"publish_{exc.reason}").inc()
        log.warning("webhook.publish_failed", reason=exc.reason, error=str(exc))
        raise ApiError(
            503,
            "broker_unavailable",
            f"the event was not stored ({exc}); Meta retries, nothing is lost",
        ) from exc
    metrics.publish_seconds.observe(time.perf_counter() - started)
    metrics.body_bytes.observe(len(body))
    metrics.accepted.inc()
    return web.Response(body=_ACCEPTED, content_type="application/json")
