"""The application keys of webhook-ingest (the shared resources have theirs in the library)."""

from __future__ import annotations

from aiohttp import web

from inbox_ingest.service import WebhookIngest

INGEST = web.AppKey("ingest", WebhookIngest)
