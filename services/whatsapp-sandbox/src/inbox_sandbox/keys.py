"""The application keys of whatsapp-sandbox's own services (shared resources have theirs in
the library)."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from inbox_sandbox.metrics import SandboxMetrics
from inbox_sandbox.service import Sandbox
from inbox_sandbox.webhooks import WebhookSender

HTTP_SESSION = web.AppKey("http_session", aiohttp.ClientSession)
METRICS = web.AppKey("sandbox_metrics", SandboxMetrics)
SANDBOX = web.AppKey("sandbox", Sandbox)
WEBHOOKS = web.AppKey("webhooks", WebhookSender)
