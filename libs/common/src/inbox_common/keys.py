"""The ``web.AppKey`` values every service shares (health checks, metrics registry)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry

if TYPE_CHECKING:
    from inbox_common.health import HealthCheck

METRICS_REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)
HEALTH_CHECKS: web.AppKey[dict[str, HealthCheck]] = web.AppKey("health_checks")
SERVICE_NAME = web.AppKey("service_name", str)
