"""The service kit: a new service is an app factory, its handlers and its settings.

:func:`create_service_app` gives every service the same skeleton: a span per request, the
JSON error shape and request ids, HTTP metrics, and ``/api/health``, ``/livez``,
``/metrics``. Resources are one
``cleanup_ctx`` entry each, defined next to their concept, and chained in this order (each
one may use the ones before it; they are closed in reverse)::

    app = create_service_app("my-service", settings)
    app.cleanup_ctx.append(store_ctx(settings, "my-service"))       # DATABASE
    app.cleanup_ctx.append(broker_ctx(settings, "my-service"))      # BROKER, NAMES
    app.cleanup_ctx.append(publisher_ctx(settings, topology.outbound))  # PUBLISHER
    app.cleanup_ctx.append(consumer_ctx(topology.outbound, make_handler, prefetch=32))

and the whole ``__main__`` is ``run(MySettings, create_app)``.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import uvloop
from aiohttp import web

from inbox_common import __version__
from inbox_common.health import SERVICE_NAME, setup_observability
from inbox_common.http import MAX_BODY_KEY, ServiceRunner, error_middleware, tracing_middleware
from inbox_common.logging import configure_logging, get_logger
from inbox_common.metrics import METRICS_REGISTRY, HttpMetrics, http_metrics_middleware
from inbox_common.settings import ServiceSettings, load_settings
from inbox_common.tracing import configure_tracing, shutdown_tracing

log = get_logger(__name__)

CleanupCtx = Callable[[web.Application], AsyncIterator[None]]

DEFAULT_MAX_BODY = 1024 * 1024
SHUTDOWN_SECONDS = 10


SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


def create_service_app(service: str, *, client_max_size: int = DEFAULT_MAX_BODY) -> web.Application:
    """An application with the error shape, HTTP metrics and the observability routes."""
    app = web.Application(
        client_max_size=client_max_size, middlewares=[tracing_middleware, error_middleware]
    )
    app[MAX_BODY_KEY] = client_max_size
    setup_observability(app, service)
    app.middlewares.append(http_metrics_middleware(HttpMetrics(app[METRICS_REGISTRY])))
    return app


def serve(app: web.Application, *, host: str, port: int) -> None:
    """Serve ``app`` on uvloop until SIGINT/SIGTERM, then run its cleanup."""
    log.info("service.starting", host=host, port=port)
    uvloop.run(_serve(app, host, port))


async def _serve(app: web.Application, host: str, port: int) -> None:
    runner = ServiceRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_SECONDS
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        log.info("service.stopping")
    finally:
        await runner.cleanup()


def run(settings_type: type[SettingsT], create_app: Callable[[SettingsT], web.Application]) -> None:
    """A service's whole ``__main__``: settings (exit 2 when invalid), logging, serve."""
    settings = load_settings(settings_type)
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    exported = configure_tracing(
        app[SERVICE_NAME],
        endpoint=settings.otel_exporter_otlp_endpoint,
        traces_endpoint=settings.otel_exporter_otlp_traces_endpoint,
        version=__version__,
    )
    log.info("tracing.configured", exported=exported)
    try:
        serve(app, host=settings.http_host, port=settings.http_port)
    finally:
        shutdown_tracing()
