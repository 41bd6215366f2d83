"""The inbox-api application factory; reads no environment."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta

from aiohttp import web

from inbox_api.agents import AgentService
from inbox_api.campaigns.fanout import CampaignPages, Scheduler, scheduler_ctx
from inbox_api.campaigns.service import CampaignService
from inbox_api.channels import ChannelService
from inbox_api.consumer.handlers import WebhookHandler
from inbox_api.consumer.service import Stores, WebhookProcessor
from inbox_api.conversations import ConversationService
from inbox_api.events import Events
from inbox_api.keys import (
    AGENTS,
    CAMPAIGNS,
    CHANNELS,
    CONVERSATIONS,
    EVENTS,
    OUTBOUND,
    WEBHOOK_LOGS,
)
from inbox_api.live import LIVE, add_live_routes, live_ctx
from inbox_api.outbound import OutboundService
from inbox_api.pacing import Pacers
from inbox_api.rest.auth import TOKEN_CACHE, TokenCache, auth_middleware
from inbox_api.rest.openapi import OPENAPI, build_openapi
from inbox_api.rest.routes import add_routes
from inbox_api.sender import SENDER, Sender
from inbox_api.senders import number_senders_ctx
from inbox_api.settings import InboxApiSettings
from inbox_api.store.inbox import Inbox
from inbox_api.webhook_logs import WebhookLogService
from inbox_common.alerts import Alerts
from inbox_common.broker import topology
from inbox_common.broker.connection import BROKER, NAMES, broker_ctx
from inbox_common.broker.consumer import Handler, RetryPolicy, consumer_ctx
from inbox_common.broker.publisher import PUBLISHER, publisher_ctx
from inbox_common.metrics import METRICS_REGISTRY
from inbox_common.service import CleanupCtx, create_service_app
from inbox_common.store.channels import Channels
from inbox_common.store.client import DATABASE, store_ctx
from inbox_common.store.ledger import Ledger
from inbox_common.store.outbound import Outbound
from inbox_common.whatsapp.cloud_api import CLOUD_API, cloud_api_ctx

SERVICE = "inbox-api"


def services_ctx(settings: InboxApiSettings) -> CleanupCtx:
    """The REST API's services, over the store, the publisher and the live updates."""

    async def services(app: web.Application) -> AsyncIterator[None]:
        db = app[DATABASE]
        ledger = Ledger(db)
        inbox = Inbox(db)
        app[EVENTS] = Events(db, app[LIVE].publish)
        conversations = ConversationService(db, inbox)
        app[CONVERSATIONS] = conversations
        channels = Channels(db, cipher=settings.token_cipher())
        outbound = OutboundService(
            conversations, inbox, Outbound(db), app[PUBLISHER], app[NAMES], app[BROKER], channels
        )
        app[OUTBOUND] = outbound
        app[CHANNELS] = ChannelService(
            channels, ledger, app[PUBLISHER], app[NAMES], outbound, app[CLOUD_API]
        )
        campaigns = CampaignService(db, channels, outbound, app[PUBLISHER], app[NAMES])
        app[CAMPAIGNS] = campaigns
        app[SENDER] = Sender(
            Outbound(db),
            channels,
            app[CLOUD_API],
            stale_after=timedelta(seconds=settings.sender_stale_seconds),
            announce=app[EVENTS],
            pacers=Pacers(settings.sender_messages_per_second),
            campaigns=campaigns.campaigns,
            alerts=Alerts(db),
            pages=CampaignPages(db, campaigns, settings.campaign_page_size),
        )
        app[AGENTS] = AgentService(db)
        app[WEBHOOK_LOGS] = WebhookLogService(ledger)
        yield

    return services


def webhook_handler(app: web.Application) -> Handler:
    processor = WebhookProcessor(Stores.of(app[DATABASE]), on_written=app[EVENTS].written)
    return WebhookHandler(processor, app[METRICS_REGISTRY])


def sender_handler(app: web.Application) -> Handler:
    return app[SENDER]


def campaign_scheduler(settings: InboxApiSettings) -> Callable[[web.Application], Scheduler]:
    def make(app: web.Application) -> Scheduler:
        stalled = timedelta(seconds=settings.campaign_stalled_seconds)
        return Scheduler(app[CAMPAIGNS], stalled_after=stalled)

    return make


def create_app(settings: InboxApiSettings) -> web.Application:
    app = create_service_app(SERVICE)
    app.middlewares.append(auth_middleware)
    app[TOKEN_CACHE] = TokenCache()
    app[OPENAPI] = build_openapi()
    add_routes(app)
    add_live_routes(app)
    app.cleanup_ctx.append(store_ctx(settings, SERVICE))
    # Without the broker the API still serves reads: degraded, not down.
    app.cleanup_ctx.append(broker_ctx(settings, SERVICE, critical=False))
    # Replays go to the webhooks piece, sends and read receipts to the outbound one, and the
    # sender's waits to the delay tiers.
    app.cleanup_ctx.append(
        publisher_ctx(settings, topology.webhooks, topology.outbound, topology.retries)
    )
    app.cleanup_ctx.append(live_ctx())
    app.cleanup_ctx.append(cloud_api_ctx(settings))
    app.cleanup_ctx.append(services_ctx(settings))
    app.cleanup_ctx.append(
        scheduler_ctx(campaign_scheduler(settings), settings.campaign_scheduler_seconds)
    )
    retry = RetryPolicy.of(settings)
    # While the store is unreachable a consumer parks its messages and pauses; it resumes
    # once the mongodb check answers again.
    app.cleanup_ctx.append(
        consumer_ctx(
            topology.webhooks,
            webhook_handler,
            prefetch=settings.inbox_consumer_prefetch,
            retry=retry,
            depends_on=("mongodb",),
        )
    )
    app.cleanup_ctx.append(
        consumer_ctx(
            topology.outbound,
            sender_handler,
            prefetch=settings.sender_prefetch,
            retry=retry,
            depends_on=("mongodb",),
        )
    )
    # Sends wait on their number's queue: one sender at a time per number, whichever replicas
    # run (the shared queue above carries the read receipts).
    app.cleanup_ctx.append(
        number_senders_ctx(
            sender_handler,
            prefetch=settings.sender_prefetch,
            retry=retry,
            depends_on=("mongodb",),
        )
    )
    return app
