"""The webhook-ingest application factory; reads no environment."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from inbox_common.broker.connection import Broker
from inbox_common.broker.publisher import ConfirmedPublisher
from inbox_common.broker.topology import Names, declare, topology
from inbox_common.health import HealthCheck, setup_observability
from inbox_common.http import MAX_BODY_KEY, error_middleware
from inbox_common.keys import HEALTH_CHECKS, METRICS_REGISTRY
from inbox_common.metrics import HttpMetrics, http_metrics_middleware
from inbox_ingest.handlers import receive_event, verify_subscription
from inbox_ingest.keys import BROKER, METRICS, NAMES, PUBLISHER, SETTINGS, WEBHOOK_PUBLISHER
from inbox_ingest.metrics import IngestMetrics
from inbox_ingest.service import WebhookPublisher
from inbox_ingest.settings import IngestSettings

SERVICE = "webhook-ingest"
WEBHOOK_PATH = "/webhooks/whatsapp"


async def broker_ctx(app: web.Application) -> AsyncIterator[None]:
    """The broker connection, the topology and the confirm channel."""
    settings = app[SETTINGS]
    broker = Broker(settings.rabbitmq_url, name=SERVICE)
    publisher = ConfirmedPublisher(broker, timeout=settings.amqp_publish_timeout)
    app[BROKER] = broker
    app[PUBLISHER] = publisher
    app[WEBHOOK_PUBLISHER] = WebhookPublisher(publisher, app[NAMES])
    app[HEALTH_CHECKS]["rabbitmq"] = HealthCheck(broker.probe)

    async def setup() -> None:
        channel = await broker.connection.channel()
        await declare(channel, topology(app[NAMES]))
        await publisher.start()

    broker.start()
    broker.when_connected(setup, what="publisher")
    yield
    await broker.close()


def create_app(settings: IngestSettings) -> web.Application:
    app = web.Application(
        client_max_size=settings.webhook_max_body_bytes,
        middlewares=[error_middleware],
    )
    app[SETTINGS] = settings
    app[NAMES] = Names(settings.amqp_namespace)
    app[MAX_BODY_KEY] = settings.webhook_max_body_bytes
    setup_observability(app, SERVICE)
    app[METRICS] = IngestMetrics(app[METRICS_REGISTRY])
    app.middlewares.append(http_metrics_middleware(HttpMetrics(app[METRICS_REGISTRY])))
    app.router.add_get(WEBHOOK_PATH, verify_subscription)
    app.router.add_post(WEBHOOK_PATH, receive_event)
    app.cleanup_ctx.append(broker_ctx)
    return app
