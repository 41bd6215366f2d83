"""The maintenance application factory; reads no environment.

Resources, in order: the store and the broker (critical: without either no task can run,
and the service is down), the publisher of the maintenance piece (the schedule publishes
there), the Cloud API client (channel_health's token checks), the HTTP session the alert
evaluation checks the services' health with, the tasks and their runner, the consumer of
``<ns>.maintenance.tasks`` (one task at a time per replica), and the schedule.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from inbox_common.broker import topology
from inbox_common.broker.connection import BROKER, NAMES, broker_ctx
from inbox_common.broker.consumer import Handler, RetryPolicy, consumer_ctx
from inbox_common.broker.publisher import PUBLISHER, publisher_ctx
from inbox_common.health import HEALTH_CHECKS, HealthCheck
from inbox_common.metrics import METRICS_REGISTRY
from inbox_common.service import CleanupCtx, create_service_app
from inbox_common.store.client import DATABASE, store_ctx
from inbox_common.whatsapp.cloud_api import CLOUD_API, cloud_api_ctx
from inbox_maintenance.handlers import TaskHandler
from inbox_maintenance.keys import HEALTH_HTTP, MAINTENANCE, SCHEDULE
from inbox_maintenance.metrics import MaintenanceMetrics
from inbox_maintenance.schedule import Schedule
from inbox_maintenance.service import Resources, build_maintenance
from inbox_maintenance.settings import MaintenanceSettings

SERVICE = "maintenance"


def health_http_ctx() -> CleanupCtx:
    """The client session the alert evaluation reads the services' /api/health with."""

    async def health_http(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:
            app[HEALTH_HTTP] = session
            yield

    return health_http


def maintenance_ctx(settings: MaintenanceSettings) -> CleanupCtx:
    """The tasks and their runner, and the non-critical ``maintenance_tasks`` check (degraded
    while a scheduled task is overdue)."""

    async def maintenance(app: web.Application) -> AsyncIterator[None]:
        resources = Resources(
            db=app[DATABASE],
            names=app[NAMES],
            broker=app[BROKER],
            cloud_api=app[CLOUD_API],
            http=app[HEALTH_HTTP],
        )
        runner = build_maintenance(
            settings,
            resources,
            MaintenanceMetrics(app[METRICS_REGISTRY]),
            periods=settings.periods,
        )
        app[MAINTENANCE] = runner
        app[HEALTH_CHECKS]["maintenance_tasks"] = HealthCheck(runner.probe, critical=False)

        async def stopping(_: web.Application) -> None:
            # Before the consumer's grace period: a long task stops at its next checkpoint.
            runner.stop()

        app.on_shutdown.append(stopping)
        yield

    return maintenance


def schedule_ctx(settings: MaintenanceSettings) -> CleanupCtx:
    """The built-in schedule (``MAINTENANCE_SCHEDULE``), ticking in the background."""

    async def schedule(app: web.Application) -> AsyncIterator[None]:
        runner, broker = app[MAINTENANCE], app[BROKER]
        ticking = Schedule(
            app[DATABASE],
            app[PUBLISHER],
            app[NAMES],
            settings.periods,
            runner.metrics,
            owner=runner.owner,
            ready=lambda: broker.connected and broker.ready.is_set(),
        )
        app[SCHEDULE] = ticking
        ticking.start(settings.maintenance_tick_seconds, also=runner.refresh)
        yield
        await ticking.close()

    return schedule


def task_handler(app: web.Application) -> Handler:
    return TaskHandler(app[MAINTENANCE])


def create_app(settings: MaintenanceSettings) -> web.Application:
    app = create_service_app(SERVICE)
    app.cleanup_ctx.append(store_ctx(settings, SERVICE))
    app.cleanup_ctx.append(broker_ctx(settings, SERVICE))
    app.cleanup_ctx.append(publisher_ctx(settings, topology.maintenance))
    app.cleanup_ctx.append(cloud_api_ctx(settings))
    app.cleanup_ctx.append(health_http_ctx())
    app.cleanup_ctx.append(maintenance_ctx(settings))
    # One task at a time per replica: tasks are long and run under their own locks anyway.
    app.cleanup_ctx.append(
        consumer_ctx(
            topology.maintenance,
            task_handler,
            prefetch=1,
            retry=RetryPolicy.of(settings),
            depends_on=("mongodb",),
        )
    )
    app.cleanup_ctx.append(schedule_ctx(settings))
    return app
