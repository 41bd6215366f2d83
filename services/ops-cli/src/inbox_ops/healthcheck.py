"""``inbox-ops healthcheck [--json] [--url SERVICE=URL]``: every service's ``/api/health``.

The runbook's first immediate action. Each service is asked concurrently, each call under its
own deadline; a service that does not answer (refused, timed out, not a health report) counts
as ``down`` with what went wrong as the detail. The exit status is the worst: 0 every service
is ``ok``, 1 one is ``degraded``, 2 one is ``down`` or unreachable.

The base URLs come from ``WEBHOOK_INGEST_URL``, ``INBOX_API_URL``, ``RETRY_WORKER_URL`` and
``MAINTENANCE_URL`` (defaults: the services' default ports on 127.0.0.1); ``--url`` overrides
one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from pydantic import ValidationError

from inbox_common.health import CheckResult, HealthReport, Status
from inbox_common.settings import redact_url
from inbox_ops.report import table

HEALTH_PATH = "/api/health"
EXIT_STATUS = {Status.OK: 0, Status.DEGRADED: 1, Status.DOWN: 2}
_RANK = {Status.OK: 0, Status.DEGRADED: 1, Status.DOWN: 2}


@dataclass(frozen=True, slots=True)
class ServiceHealth:
    """One service's answer, or why there was none (``error``)."""

    service: str
    url: str  # the health URL, password masked
    status: Status
    latency_ms: float
    http_status: int | None = None
    version: str | None = None
    failing: dict[str, CheckResult] = field(default_factory=dict)
    error: str | None = None

    def problems(self) -> str:
        """The failing checks with their detail, or the error; ``-`` when none."""
        if self.error is not None:
            return self.error
        parts = []
        for name, check in self.failing.items():
            detail = f" ({check.detail})" if check.detail else ""
            parts.append(f"{name}={check.status.value}{detail}")
        return "; ".join(parts) or "-"

    def document(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "url": self.url,
            "status": self.status.value,
            "http_status": self.http_status,
            "latency_ms": self.latency_ms,
            "version": self.version,
            "failing_checks": {
                name: check.model_dump(mode="json", exclude_none=True)
                for name, check in self.failing.items()
            },
            "error": self.error,
        }


def health_url(base: str) -> str:
    """``base`` with ``/api/health`` appended, unless it names the health path already."""
    base = base.rstrip("/")
    return base if base.endswith(HEALTH_PATH) else base + HEALTH_PATH


def parse_overrides(values: Sequence[str], known: Sequence[str]) -> dict[str, str]:
    """``--url SERVICE=URL`` values, by service; ValueError names a bad one."""
    urls: dict[str, str] = {}
    for value in values:
        service, sep, url = (part.strip() for part in value.partition("="))
        if not sep or service not in known:
            raise ValueError(
                f"--url {value.split('=')[0]!r}...: expected SERVICE=URL with SERVICE one of "
                f"{', '.join(known)}"
            )
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"--url {service}=...: the URL must start with http:// or https://")
        urls[service] = url
    return urls


async def _probe(
    session: aiohttp.ClientSession, service: str, url: str, seconds: float
) -> ServiceHealth:
    where = redact_url(url)
    started = time.perf_counter()

    def elapsed() -> float:
        return round((time.perf_counter() - started) * 1000, 1)

    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=seconds)) as response:
            http_status, raw = response.status, await response.read()
    except TimeoutError:
        return ServiceHealth(
            service, where, Status.DOWN, elapsed(), error=f"unreachable: no answer in {seconds:g}s"
        )
    except aiohttp.ClientError as exc:
        return ServiceHealth(
            service,
            where,
            Status.DOWN,
            elapsed(),
            error=f"unreachable: {type(exc).__name__}: {exc}",
        )
    latency = elapsed()
    try:
        report = HealthReport.model_validate_json(raw)
    except ValidationError:
        return ServiceHealth(
            service,
            where,
            Status.DOWN,
            latency,
            http_status,
            error=f"HTTP {http_status}, not a health report: is {where} this service?",
        )
    failing = {name: c for name, c in report.checks.items() if c.status is not Status.OK}
    return ServiceHealth(
        service, where, report.status, latency, http_status, report.version, failing
    )


async def check_services(targets: Mapping[str, str], *, seconds: float) -> list[ServiceHealth]:
    """Every service's health, asked concurrently, in the order of ``targets``."""
    async with aiohttp.ClientSession() as session:
        return list(
            await asyncio.gather(
                *(
                    _probe(session, service, health_url(base), seconds)
                    for service, base in targets.items()
                )
            )
        )


def worst(results: Sequence[ServiceHealth]) -> Status:
    return max((r.status for r in results), key=_RANK.__getitem__, default=Status.OK)


def render(results: Sequence[ServiceHealth]) -> str:
    rows = [
        (
            r.service,
            r.status.value,
            str(r.http_status or "-"),
            f"{r.latency_ms:.0f} ms",
            r.problems(),
        )
        for r in results
    ]
    overall = worst(results)
    body = table(("SERVICE", "STATUS", "HTTP", "LATENCY", "FAILING CHECKS"), rows)
    return f"{body}\n\noverall: {overall.value}"


def document(results: Sequence[ServiceHealth]) -> dict[str, Any]:
    return {"status": worst(results).value, "services": [r.document() for r in results]}


async def healthcheck(
    targets: Mapping[str, str], *, seconds: float, as_json: bool
) -> tuple[int, str]:
    """The exit status of the worst service, and what to print (a table, or JSON)."""
    results = await check_services(targets, seconds=seconds)
    if as_json:
        text = orjson.dumps(document(results), option=orjson.OPT_INDENT_2).decode()
    else:
        text = render(results)
    return EXIT_STATUS[worst(results)], text
