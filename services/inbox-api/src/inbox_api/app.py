"""The inbox-api application factory; reads no environment."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from inbox_api.channels import ChannelService
from inbox_api.consumer.handlers import WebhookHandler
from inbox_api.consumer.service import Stores, WebhookProcessor
from inbox_api.conversations import ConversationService
from inbox_api.keys import CHANNELS, CONVERSATIONS, WEBHOOK_LOGS
from inbox_api.rest.auth import TOKEN_CACHE, TokenCache, auth_middleware
from inbox_api.rest.handlers import add_routes
from inbox_api.rest.openapi import OPENAPI, build_openapi
from inbox_api.settings import InboxApiSettings
from inbox_api.store.inbox import Inbox
from inbox_api.webhook_logs import WebhookLogService
from inbox_common.broker import topology
from inbox_common.broker.connection import NAMES, broker_ctx
from inbox_common.broker.consumer import Handler, RetryPolicy, consumer_ctx
from inbox_common.broker.publisher import PUBLISHER, publisher_ctx
from inbox_common.service import create_service_app
from inbox_common.store.channels import Channels
from inbox_common.store.client import DATABASE, store_ctx
from inbox_common.store.ledger import Ledger

SERVICE = "inbox-api"


async def services_ctx(app: web.Application) -> AsyncIterator[None]:
    """The REST API's services, over the store and the publisher."""
    db = app[DATABASE]
    ledger = Ledger(db)
    app[CHANNELS] = ChannelService(Channels(db), ledger, app[PUBLISHER], app[NAMES])
    app[CONVERSATIONS] = ConversationService(Inbox(db))
    app[WEBHOOK_LOGS] = WebhookLogService(ledger)
    yield


def webhook_handler(app: web.Application) -> Handler:
    return WebhookHandler(WebhookProcessor(Stores.of(app[DATABASE])))


def create_app(settings: InboxApiSettings) -> web.Application:
    app = create_service_app(SERVICE)
    app.middlewares.append(auth_middleware)
    app[TOKEN_CACHE] = TokenCache()
    app[OPENAPI] = build_openapi()
    add_routes(app)
    app.cleanup_ctx.append(store_ctx(settings, SERVICE))
    # Without the broker the API still serves reads: degraded, not down.
    app.cleanup_ctx.append(broker_ctx(settings, SERVICE, critical=False))
    # Dead letters and replays go to the webhooks piece.
    app.cleanup_ctx.append(publisher_ctx(settings, topology.webhooks))
    app.cleanup_ctx.append(services_ctx)
    # While the store is unreachable the consumer parks its messages and pauses; it resumes
    # once the mongodb check answers again.
    app.cleanup_ctx.append(
        consumer_ctx(
            topology.webhooks,
            webhook_handler,
            prefetch=settings.inbox_consumer_prefetch,
            retry=RetryPolicy.of(settings),
            depends_on=("mongodb",),
        )
    )
    return app
