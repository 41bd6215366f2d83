"""The inbox-api application factory; reads no environment."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from inbox_api.consumer.handlers import WebhookHandler
from inbox_api.consumer.service import Stores, WebhookProcessor
from inbox_api.keys import BROKER, CHANNELS, DB, INBOX, LEDGER, MONGO, NAMES, PUBLISHER, SETTINGS
from inbox_api.rest.auth import TOKEN_CACHE, TokenCache, auth_middleware
from inbox_api.rest.handlers import add_routes
from inbox_api.rest.openapi import OPENAPI_KEY, build_openapi
from inbox_api.settings import InboxApiSettings
from inbox_api.store.channels import Channels
from inbox_api.store.inbox import Inbox
from inbox_api.store.ledger import Ledger
from inbox_common.broker.connection import Broker
from inbox_common.broker.consumer import Consumer, ConsumerMetrics
from inbox_common.broker.publisher import ConfirmedPublisher
from inbox_common.broker.topology import Names, declare, topology
from inbox_common.health import HealthCheck, setup_observability
from inbox_common.http import error_middleware
from inbox_common.keys import HEALTH_CHECKS, METRICS_REGISTRY
from inbox_common.metrics import HttpMetrics, http_metrics_middleware
from inbox_common.store.client import MongoProbe, create_client

SERVICE = "inbox-api"


async def mongo_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    client = create_client(
        settings.mongodb_url, app_name=SERVICE, timeout_ms=settings.mongodb_timeout_ms
    )
    db = client[settings.mongodb_db]
    app[MONGO] = client
    app[DB] = db
    app[CHANNELS] = Channels(db)
    app[INBOX] = Inbox(db)
    app[LEDGER] = Ledger(db)
    app[HEALTH_CHECKS]["mongodb"] = HealthCheck(MongoProbe(db, settings.mongodb_url))
    yield
    await client.close()


async def consumer_ctx(app: web.Application) -> AsyncIterator[None]:
    """The broker connection and the webhook consumer (after the store is open)."""
    settings = app[SETTINGS]
    names = Names(settings.amqp_namespace)
    broker = Broker(settings.rabbitmq_url, name=SERVICE)
    # One confirm channel for dead letters and replays.
    publisher = ConfirmedPublisher(broker, timeout=settings.amqp_publish_timeout)
    app[BROKER] = broker
    app[PUBLISHER] = publisher
    app[NAMES] = names
    processor = WebhookProcessor(Stores(app[LEDGER], app[CHANNELS], app[INBOX]))
    consumer = Consumer(
        broker,
        names.webhooks_queue,
        WebhookHandler(processor),
        dead_letter_exchange=names.dead_letter_exchange,
        dead_letters=publisher,
        metrics=ConsumerMetrics(app[METRICS_REGISTRY]),
        prefetch=settings.inbox_consumer_prefetch,
    )
    # Without the broker the API still serves reads: degraded, not down.
    app[HEALTH_CHECKS]["rabbitmq"] = HealthCheck(broker.probe, critical=False)
    app[HEALTH_CHECKS]["webhook_consumer"] = HealthCheck(consumer.probe, critical=False)

    async def setup() -> None:
        channel = await broker.connection.channel()
        await declare(channel, topology(names))
        await publisher.start()
        await consumer.start()

    broker.start()
    broker.when_connected(setup, what="webhook consumer")
    yield
    await consumer.stop()
    await broker.close()


def create_app(settings: InboxApiSettings) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024, middlewares=[error_middleware])
    app[SETTINGS] = settings
    setup_observability(app, SERVICE)
    app.middlewares.append(http_metrics_middleware(HttpMetrics(app[METRICS_REGISTRY])))
    app.middlewares.append(auth_middleware)
    app[TOKEN_CACHE] = TokenCache()
    app[OPENAPI_KEY] = build_openapi()
    add_routes(app)
    app.cleanup_ctx.append(mongo_ctx)
    app.cleanup_ctx.append(consumer_ctx)
    return app
