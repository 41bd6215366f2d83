"""``alerts``: the evaluation of the platform's signals, and the resolution of the alerts
whose condition cleared.

Each kind of alert has one owner that computes its whole condition and reconciles it
(:meth:`Alerts.reconcile`: raise what holds, resolve what no longer does). This task owns:

- **disconnected channels** (from the store, cheap, so it runs often): one P2 per channel,
  and a platform-wide P1 once ``many`` are disconnected. Whoever disconnected the channel
  (the sender on a 190, the token check), its alert clears here once it is reconnected.
- **webhook failures** in the last ``window`` against the usual rate (the ``baseline``
  windows before it): at least ``spike_min`` failures and ``spike_factor`` times the usual
  is a sharp rise (P1); fewer failed webhooks are a light degradation (P3).
- **the services' health**, when ``MAINTENANCE_HEALTH_URLS`` names them: ``down`` or no
  answer is P0 (``store_unreachable`` when its ``mongodb`` check is the one down),
  ``degraded`` is P3.

The other tasks reconcile their own kinds each time they run.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson

from inbox_common.alerts import AlertKind, Alerts, Finding, Reconciled
from inbox_common.settings import redact_url
from inbox_common.store.client import Database
from inbox_common.store.collections import CHANNELS, WEBHOOK_EVENTS
from inbox_common.store.ledger import FAILED
from inbox_maintenance.tasks.context import TaskContext, TaskResult

CHANNEL_KINDS = (AlertKind.CHANNEL_DISCONNECTED, AlertKind.CHANNELS_DISCONNECTED)
WEBHOOK_KINDS = (AlertKind.WEBHOOK_FAILURES_RISING, AlertKind.WEBHOOK_FAILURES)
HEALTH_KINDS = (AlertKind.HEALTH_DOWN, AlertKind.STORE_UNREACHABLE, AlertKind.HEALTH_DEGRADED)
# The usual failure rate is measured over this many windows before the current one.
BASELINE_WINDOWS = 16
HEALTH_TIMEOUT_SECONDS = 5.0
LISTED = 20
BY = "maintenance:alerts"


class AlertEvaluation:
    name = "alerts"
    needs_broker = False

    def __init__(
        self,
        db: Database,
        alerts: Alerts,
        *,
        many_disconnected: int,
        window: timedelta,
        spike_min: int,
        spike_factor: float,
        health_urls: list[str],
        http: aiohttp.ClientSession | None,
    ) -> None:
        self._db = db
        self._alerts = alerts
        self._many = many_disconnected
        self._window = window
        self._spike_min = spike_min
        self._spike_factor = spike_factor
        self._health_urls = health_urls
        self._http = http

    async def run(self, ctx: TaskContext) -> TaskResult:
        channels = await self._alerts.reconcile(
            CHANNEL_KINDS, await self._disconnected_channels(), by=BY
        )
        await ctx.checkpoint()
        webhooks = await self._alerts.reconcile(WEBHOOK_KINDS, await self._webhooks(), by=BY)
        await ctx.checkpoint()
        health = await self._alerts.reconcile(HEALTH_KINDS, await self._health(), by=BY)
        raised = [*channels.raised, *webhooks.raised, *health.raised]
        resolved = [*channels.resolved, *webhooks.resolved, *health.resolved]
        for part, done in (("channels", channels), ("webhooks", webhooks), ("health", health)):
            ctx.say(f"{part}: {_describe(done)}")
        return TaskResult(
            f"{len(raised)} conditions hold ({', '.join(sorted(raised)) or 'none'}); "
            f"{len(resolved)} alerts resolved",
            {"holding": len(raised), "resolved": len(resolved)},
        )

    async def _disconnected_channels(self) -> list[Finding]:
        docs = await self._db[CHANNELS].find({"status": "disconnected"}).sort("_id", 1).to_list()
        findings = [
            Finding(
                AlertKind.CHANNEL_DISCONNECTED,
                title=f"channel {doc['phone_number_id']} ({doc.get('name', '')}) is "
                f"disconnected: {doc.get('disconnected_reason') or 'no reason recorded'}; "
                "its sends are held until it is reconnected with a new token",
                subject=str(doc["_id"]),
                tenant=doc["tenant"],
                evidence={
                    "channel_id": str(doc["_id"]),
                    "phone_number_id": doc["phone_number_id"],
                    "name": doc.get("name"),
                    "reason": doc.get("disconnected_reason"),
                    "code": doc.get("disconnected_code"),
                    "disconnected_at": doc.get("disconnected_at"),
                },
            )
            for doc in docs
        ]
        if len(docs) >= self._many:
            tenants = Counter(str(doc["tenant"]) for doc in docs)
            findings.append(
                Finding(
                    AlertKind.CHANNELS_DISCONNECTED,
                    title=f"{len(docs)} channels are disconnected (in {len(tenants)} tenants)",
                    evidence={
                        "disconnected": len(docs),
                        "by_tenant": dict(tenants),
                        "channels": [
                            {
                                "channel_id": str(d["_id"]),
                                "tenant": d["tenant"],
                                "phone_number_id": d["phone_number_id"],
                            }
                            for d in docs[:LISTED]
                        ],
                        "threshold": self._many,
                    },
                )
            )
        return findings

    async def _webhooks(self) -> list[Finding]:
        now = datetime.now(UTC)
        start = now - self._window
        events = self._db[WEBHOOK_EVENTS]
        failed = await events.count_documents({"status": FAILED, "received_at": {"$gte": start}})
        if failed == 0:
            return []
        before = await events.count_documents(
            {
                "status": FAILED,
                "received_at": {"$gte": start - self._window * BASELINE_WINDOWS, "$lt": start},
            }
        )
        received = await events.count_documents({"received_at": {"$gte": start}})
        usual = before / BASELINE_WINDOWS
        codes = await (
            await events.aggregate(
                [
                    {"$match": {"status": FAILED, "received_at": {"$gte": start}}},
                    {"$group": {"_id": "$error.code", "n": {"$sum": 1}}},
                    {"$sort": {"n": -1}},
                    {"$limit": 5},
                ]
            )
        ).to_list()
        latest = await events.find_one(
            {"status": FAILED, "received_at": {"$gte": start}},
            {"_id": 1},
            sort=[("status", 1), ("received_at", -1)],
        )
        minutes = self._window.total_seconds() / 60
        evidence = {
            "failed": failed,
            "received": received,
            "window_minutes": minutes,
            "usual_failed_per_window": round(usual, 2),
            "error_codes": {str(c["_id"]): int(c["n"]) for c in codes},
            "latest_failed_id": str(latest["_id"]) if latest else None,
        }
        rising = failed >= self._spike_min and failed >= self._spike_factor * usual
        if rising:
            return [
                Finding(
                    AlertKind.WEBHOOK_FAILURES_RISING,
                    title=f"{failed} of {received} webhooks failed in the last {minutes:g} "
                    f"minutes (usually {usual:.1f}); see GET /api/admin/webhook-logs?status=failed",
                    evidence=evidence,
                )
            ]
        return [
            Finding(
                AlertKind.WEBHOOK_FAILURES,
                title=f"{failed} of {received} webhooks failed in the last {minutes:g} minutes",
                evidence=evidence,
            )
        ]

    async def _health(self) -> list[Finding]:
        if not self._health_urls or self._http is None:
            return []
        reports = await asyncio.gather(*(self._probe(url) for url in self._health_urls))
        return [finding for finding in reports if finding is not None]

    async def _probe(self, url: str) -> Finding | None:
        assert self._http is not None
        where = redact_url(url)
        timeout = aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_SECONDS)
        try:
            async with self._http.get(url, timeout=timeout) as response:
                status, raw = response.status, await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            return Finding(
                AlertKind.HEALTH_DOWN,
                title=f"{where} does not answer ({type(exc).__name__}): the service is down",
                subject=where,
                evidence={"url": where, "error": f"{type(exc).__name__}: {exc}"[:300]},
            )
        try:
            report = orjson.loads(raw)
        except orjson.JSONDecodeError:
            report = None
        if not isinstance(report, dict):
            report = {}
        checks = report.get("checks") if isinstance(report.get("checks"), dict) else {}
        failing = {
            name: check
            for name, check in (checks or {}).items()
            if isinstance(check, dict) and check.get("status") != "ok"
        }
        service = str(report.get("service") or where)
        evidence: dict[str, Any] = {
            "url": where,
            "http_status": status,
            "status": report.get("status"),
            "failing_checks": failing,
        }
        store = failing.get("mongodb", {}).get("status") == "down"
        if store:
            return Finding(
                AlertKind.STORE_UNREACHABLE,
                title=f"{service} cannot reach MongoDB: {failing['mongodb'].get('detail', '')}",
                subject=where,
                evidence=evidence,
            )
        if status >= 500 or report.get("status") == "down":
            return Finding(
                AlertKind.HEALTH_DOWN,
                title=f"{service} is down ({', '.join(failing) or f'HTTP {status}'})",
                subject=where,
                evidence=evidence,
            )
        if report.get("status") == "degraded":
            return Finding(
                AlertKind.HEALTH_DEGRADED,
                title=f"{service} is degraded ({', '.join(failing)})",
                subject=where,
                evidence=evidence,
            )
        return None


def _describe(done: Reconciled) -> str:
    return f"{len(done.raised)} holding, {len(done.resolved)} resolved"
