"""The application keys of retry-worker's own services (shared resources have theirs in the
library)."""

from __future__ import annotations

from aiohttp import web

from inbox_retry.worker import RetryWorker

WORKER = web.AppKey("retry_worker", RetryWorker)
