"""The whatsapp-sandbox application factory; reads no environment.

Resources, in order: the HTTP client session webhooks go out on, the webhook sender (its
background deliveries are cancelled at shutdown, before the session closes), and the sandbox's
state and rules. The sandbox needs no broker and no store: it keeps its state in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from inbox_common.health import HEALTH_CHECKS, HealthCheck
from inbox_common.metrics import METRICS_REGISTRY
from inbox_common.service import CleanupCtx, create_service_app
from inbox_sandbox import admin
from inbox_sandbox.handlers import GRAPH_MESSAGES, GRAPH_NODE, phone_number, send_message
from inbox_sandbox.keys import HTTP_SESSION, METRICS, SANDBOX, WEBHOOKS
from inbox_sandbox.metrics import SandboxMetrics
from inbox_sandbox.service import Sandbox
from inbox_sandbox.settings import SandboxSettings
from inbox_sandbox.webhooks import WebhookSender

SERVICE = "whatsapp-sandbox"
# Webhook POSTs in flight at once; more wait for a connection rather than open sockets freely.
MAX_CONNECTIONS = 256


def http_session_ctx(settings: SandboxSettings) -> CleanupCtx:
    """The one client session every webhook goes out on."""

    async def http_session(app: web.Application) -> AsyncIterator[None]:
        # Per socket, not in total: a POST waiting for a free connection has not timed out.
        wait = settings.sandbox_webhook_timeout_seconds
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=wait, sock_read=wait)
        connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            app[HTTP_SESSION] = session
            yield

    return http_session


def webhooks_ctx(settings: SandboxSettings) -> CleanupCtx:
    """The webhook sender and its non-critical ``webhook_target`` health check."""

    async def webhooks(app: web.Application) -> AsyncIterator[None]:
        sender = WebhookSender(
            app[HTTP_SESSION],
            app[METRICS],
            url=settings.sandbox_webhook_url,
            secret=settings.signing_secret,
            retry_seconds=settings.sandbox_webhook_retry_seconds,
            duplicates=settings.sandbox_webhook_duplicates,
        )
        app[WEBHOOKS] = sender
        # Without the ingest the sandbox still answers sends: degraded, not down.
        app[HEALTH_CHECKS]["webhook_target"] = HealthCheck(sender.probe, critical=False)
        yield
        await sender.close()

    return webhooks


def sandbox_ctx(settings: SandboxSettings) -> CleanupCtx:
    async def sandbox(app: web.Application) -> AsyncIterator[None]:
        app[SANDBOX] = Sandbox(settings, app[WEBHOOKS], app[METRICS])
        yield

    return sandbox


def create_app(settings: SandboxSettings) -> web.Application:
    app = create_service_app(SERVICE)
    app[METRICS] = SandboxMetrics(app[METRICS_REGISTRY])
    app.router.add_post(GRAPH_MESSAGES, send_message)
    app.router.add_get(GRAPH_NODE, phone_number)
    admin.add_routes(app)
    app.cleanup_ctx.append(http_session_ctx(settings))
    app.cleanup_ctx.append(webhooks_ctx(settings))
    app.cleanup_ctx.append(sandbox_ctx(settings))
    return app
