"""``GET /api/health``, ``GET /livez`` and ``GET /metrics``, mounted the same way everywhere.

Resources register a :class:`HealthCheck` when they start (in their ``cleanup_ctx``); the
health endpoint runs every check concurrently under a deadline so a hung dependency reports
``down`` instead of hanging the probe.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from inbox_common import __version__
from inbox_common.metrics import METRICS_REGISTRY, metrics_handler


class Status(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    DOWN = "down"


class CheckResult(BaseModel):
    status: Status
    detail: str | None = None
    latency_ms: float | None = None


class HealthReport(BaseModel):
    status: Status
    service: str
    version: str
    checks: dict[str, CheckResult]


Probe = Callable[[], Awaitable[CheckResult | None]]


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """A dependency probe. ``None`` or an ``ok`` result means healthy; raising means down.

    A failing ``critical`` check makes the whole service ``down``; any other failure makes
    it ``degraded``.
    """

    probe: Probe
    critical: bool = True
    timeout: float = 2.0


HEALTH_CHECKS: web.AppKey[dict[str, HealthCheck]] = web.AppKey("health_checks")
SERVICE_NAME = web.AppKey("service_name", str)


async def _run(check: HealthCheck) -> CheckResult:
    started = time.perf_counter()
    try:
        result = await asyncio.wait_for(check.probe(), check.timeout)
    except TimeoutError:
        result = CheckResult(status=Status.DOWN, detail=f"no answer within {check.timeout:g}s")
    except Exception as exc:  # a probe reports, it never crashes the endpoint
        result = CheckResult(status=Status.DOWN, detail=f"{type(exc).__name__}: {exc}"[:300])
    if result is None:
        result = CheckResult(status=Status.OK)
    if result.latency_ms is None:
        result.latency_ms = round((time.perf_counter() - started) * 1000, 2)
    return result


async def evaluate(service: str, checks: dict[str, HealthCheck]) -> HealthReport:
    """Run ``checks`` concurrently and fold them into one report."""
    names = list(checks)
    results = dict(zip(names, await asyncio.gather(*(_run(checks[n]) for n in names)), strict=True))
    status = Status.OK
    for name, result in results.items():
        if result.status is Status.OK:
            continue
        if result.status is Status.DOWN and checks[name].critical:
            status = Status.DOWN
            break
        status = Status.DEGRADED
    return HealthReport(status=status, service=service, version=__version__, checks=results)


async def health_handler(request: web.Request) -> web.Response:
    report = await evaluate(request.app[SERVICE_NAME], request.app[HEALTH_CHECKS])
    return web.Response(
        body=orjson.dumps(report.model_dump(mode="json", exclude_none=True)),
        status=503 if report.status is Status.DOWN else 200,
        content_type="application/json",
    )


async def livez_handler(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def setup_observability(app: web.Application, service: str) -> None:
    """Mount ``/api/health``, ``/livez`` and ``/metrics`` and create the app's registry."""
    app[SERVICE_NAME] = service
    app[HEALTH_CHECKS] = {}
    if METRICS_REGISTRY not in app:
        app[METRICS_REGISTRY] = CollectorRegistry()
    app.router.add_get("/api/health", health_handler)
    app.router.add_get("/livez", livez_handler)
    app.router.add_get("/metrics", metrics_handler)
