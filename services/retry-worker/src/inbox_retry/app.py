"""The retry-worker application factory; reads no environment.

Resources, in order: the store, the broker (critical: without either the worker can do
nothing, and the service is down), the publisher (declaring the retries piece it reads and
the outbound piece it sends jobs back to), and the worker, whose daemon loop runs passes
while it holds the job lock and releases the lock at shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from inbox_common.broker import topology
from inbox_common.broker.connection import BROKER, NAMES, broker_ctx
from inbox_common.broker.publisher import PUBLISHER, publisher_ctx
from inbox_common.health import HEALTH_CHECKS, HealthCheck
from inbox_common.metrics import METRICS_REGISTRY
from inbox_common.service import CleanupCtx, create_service_app
from inbox_common.store.client import DATABASE, store_ctx
from inbox_retry.handlers import JOBS_PATH, JobsApi
from inbox_retry.keys import WORKER
from inbox_retry.settings import RetryWorkerSettings
from inbox_retry.worker import build_worker

SERVICE = "retry-worker"


def worker_ctx(settings: RetryWorkerSettings) -> CleanupCtx:
    """The worker, its daemon loop and its non-critical ``campaign_retry_job`` check."""

    async def worker(app: web.Application) -> AsyncIterator[None]:
        retry = build_worker(
            settings,
            db=app[DATABASE],
            broker=app[BROKER],
            publisher=app[PUBLISHER],
            names=app[NAMES],
            registry=app[METRICS_REGISTRY],
            interval=settings.retry_worker_interval_seconds,
        )
        app[WORKER] = retry
        app[HEALTH_CHECKS]["campaign_retry_job"] = HealthCheck(retry.probe, critical=False)
        retry.start()
        yield
        await retry.close()

    return worker


def create_app(settings: RetryWorkerSettings) -> web.Application:
    app = create_service_app(SERVICE)
    api = JobsApi(settings.jobs_api_token)
    app.router.add_get(JOBS_PATH, api.status)
    app.router.add_post(JOBS_PATH, api.trigger)
    app.cleanup_ctx.append(store_ctx(settings, SERVICE))
    app.cleanup_ctx.append(broker_ctx(settings, SERVICE))
    app.cleanup_ctx.append(publisher_ctx(settings, topology.retries, topology.outbound))
    app.cleanup_ctx.append(worker_ctx(settings))
    return app
