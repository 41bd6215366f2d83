"""The webhook-ingest application factory; reads no environment."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from inbox_common.broker import topology
from inbox_common.broker.connection import NAMES, broker_ctx
from inbox_common.broker.publisher import PUBLISHER, publisher_ctx
from inbox_common.metrics import METRICS_REGISTRY
from inbox_common.service import CleanupCtx, create_service_app
from inbox_ingest.handlers import receive_event, verify_subscription
from inbox_ingest.keys import INGEST
from inbox_ingest.metrics import IngestMetrics
from inbox_ingest.service import WebhookIngest
from inbox_ingest.settings import IngestSettings

SERVICE = "webhook-ingest"
WEBHOOK_PATH = "/webhooks/whatsapp"


def ingest_ctx(settings: IngestSettings) -> CleanupCtx:
    async def ingest(app: web.Application) -> AsyncIterator[None]:
        metrics = IngestMetrics(app[METRICS_REGISTRY])
        app[INGEST] = WebhookIngest(settings, app[PUBLISHER], app[NAMES], metrics)
        yield

    return ingest


def create_app(settings: IngestSettings) -> web.Application:
    app = create_service_app(SERVICE, client_max_size=settings.webhook_max_body_bytes)
    app.router.add_get(WEBHOOK_PATH, verify_subscription)
    app.router.add_post(WEBHOOK_PATH, receive_event)
    # Without the broker nothing can be accepted: the service is down, not degraded.
    app.cleanup_ctx.append(broker_ctx(settings, SERVICE, critical=True))
    app.cleanup_ctx.append(publisher_ctx(settings, topology.webhooks))
    app.cleanup_ctx.append(ingest_ctx(settings))
    return app
