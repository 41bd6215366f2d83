"""Alerts: what needs an operator, raised by the services and triaged by the runbook's rules.

One document per occurrence of a condition, in ``alerts``::

    {dedupe_key, kind, severity: P0..P3, status: open|acknowledged|resolved,
     tenant (null: platform-wide), title, evidence, runbook, first_seen, last_seen, count,
     acknowledged_by, acknowledged_at, resolved_at, resolved_by}

**The invariant: at most one alert per dedupe key is open or acknowledged** (a unique index,
partial on those two statuses). Raising is one upsert on (dedupe key, not resolved): while a
condition lasts it is the same alert, whose ``count`` and ``last_seen`` move and whose
evidence is refreshed (an acknowledgement stays); once resolved, the same condition raised
again opens a new alert. Two raisers racing on a new key cannot both insert: the loser hits
the unique index and retries as an update. The tenant is part of the dedupe key, so one
tenant's condition can never update another tenant's alert.

**The severity is not the raiser's choice**: :data:`RULES`, the runbook's triage written as
data, gives every kind its severity and the runbook section that says what to do.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from inbox_common.store.client import Database, Document
from inbox_common.store.collections import ALERTS

__all__ = [
    "ACTIVE",
    "RULES",
    "AlertKind",
    "AlertStatus",
    "Alerts",
    "Finding",
    "Reconciled",
    "Rule",
    "Severity",
    "dedupe_key",
    "resolved_before",
]


class Severity(StrEnum):
    """The runbook's triage: P0 critical … P3 low."""

    P0 = "P0"
    P1 = "P1"
    P2 = "P2"
    P3 = "P3"


class AlertStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


# The statuses of an alert whose condition may still hold (the unique index covers these).
ACTIVE: tuple[str, ...] = (AlertStatus.OPEN.value, AlertStatus.ACKNOWLEDGED.value)


class AlertKind(StrEnum):
    STORE_UNREACHABLE = "store_unreachable"
    HEALTH_DOWN = "health_down"
    JOB_LOCK_STALE = "job_lock_stale"
    JOB_FAILING = "job_failing"
    WEBHOOK_FAILURES_RISING = "webhook_failures_rising"
    CHANNELS_DISCONNECTED = "channels_disconnected"
    CHANNEL_DISCONNECTED = "channel_disconnected"
    CHANNEL_CHECK_FAILED = "channel_check_failed"
    CHANNEL_WEBHOOKS_MISSING = "channel_webhooks_missing"
    SENDS_STUCK = "sends_stuck"
    DEAD_LETTERS = "dead_letters"
    WEBHOOK_FAILURES = "webhook_failures"
    CHANNEL_QUIET = "channel_quiet"
    HEALTH_DEGRADED = "health_degraded"
    CAMPAIGN_PAUSED = "campaign_paused"


@dataclass(frozen=True, slots=True)
class Rule:
    """One triage rule: the severity of a kind, the runbook's words for it, and the section
    of ``docs/runbook.md`` to follow."""

    severity: Severity
    meaning: str
    runbook: str


_TRIAGE = "docs/runbook.md#21-severity-triage"
_ACTIONS = "docs/runbook.md#22-immediate-actions"
_RETRY = "docs/runbook.md#retry-worker-stuck"
_WEBHOOKS = "docs/runbook.md#webhook-spike"
_CHANNEL = "docs/runbook.md#channel-disconnected"
_CAMPAIGN = "docs/runbook.md#campaign-paused"

# The runbook's severity triage (section 2.1), one row per kind of alert.
RULES: dict[AlertKind, Rule] = {
    # P0: the service cannot serve requests, health is down, or the database is unreachable.
    AlertKind.STORE_UNREACHABLE: Rule(Severity.P0, "the database is unreachable", _ACTIONS),
    AlertKind.HEALTH_DOWN: Rule(
        Severity.P0, "a service cannot serve requests (health status down)", _ACTIONS
    ),
    # P1: the retry worker is down or failing repeatedly, webhook failures rise sharply, many
    # channels are disconnected.
    AlertKind.JOB_LOCK_STALE: Rule(
        Severity.P1, "a job's worker stopped renewing its lock (isStaleLock)", _RETRY
    ),
    AlertKind.JOB_FAILING: Rule(
        Severity.P1, "a job fails repeatedly (consecutiveFailures)", _RETRY
    ),
    AlertKind.WEBHOOK_FAILURES_RISING: Rule(
        Severity.P1, "webhook failures rise sharply", _WEBHOOKS
    ),
    AlertKind.CHANNELS_DISCONNECTED: Rule(Severity.P1, "many channels are disconnected", _CHANNEL),
    # P2: notifications fail or are late, but the functions still work.
    AlertKind.CHANNEL_DISCONNECTED: Rule(
        Severity.P2, "a channel is disconnected: its sends are held", _CHANNEL
    ),
    AlertKind.CHANNEL_CHECK_FAILED: Rule(
        Severity.P2, "Meta refused to read the channel's number with its token", _CHANNEL
    ),
    AlertKind.CHANNEL_WEBHOOKS_MISSING: Rule(
        Severity.P2, "Meta accepted the channel's sends but no webhook came back", _WEBHOOKS
    ),
    AlertKind.SENDS_STUCK: Rule(Severity.P2, "outbound messages are late or stuck", _TRIAGE),
    AlertKind.CAMPAIGN_PAUSED: Rule(
        Severity.P2,
        "Meta sent a risk signal: a campaign was paused until someone resumes it",
        _CAMPAIGN,
    ),
    AlertKind.DEAD_LETTERS: Rule(
        Severity.P2, "messages wait in a dead-letter queue for an operator", _WEBHOOKS
    ),
    # P3: light degradation, not blocking.
    AlertKind.WEBHOOK_FAILURES: Rule(
        Severity.P3, "some webhooks fail, without a sharp rise", _WEBHOOKS
    ),
    AlertKind.CHANNEL_QUIET: Rule(
        Severity.P3, "no webhook for a channel for a long time", _CHANNEL
    ),
    AlertKind.HEALTH_DEGRADED: Rule(
        Severity.P3, "a service serves with a dependency down (health degraded)", _TRIAGE
    ),
}

_MISSING = set(AlertKind) - set(RULES)
if _MISSING:  # every kind is triaged: checked at import
    raise ValueError(f"alert kinds without a triage rule: {sorted(_MISSING)}")


def dedupe_key(kind: AlertKind, tenant: str | None, subject: str = "") -> str:
    """The identity of a condition: its kind, its tenant (``*``: platform-wide) and what it
    is about (a channel id, a job, a queue...)."""
    return f"{kind.value}:{tenant or '*'}:{subject}"


@dataclass(frozen=True, slots=True)
class Finding:
    """A condition seen to hold now: what :meth:`Alerts.raise_alert` is given."""

    kind: AlertKind
    title: str
    subject: str = ""
    tenant: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def dedupe_key(self) -> str:
        return dedupe_key(self.kind, self.tenant, self.subject)


@dataclass(frozen=True, slots=True)
class Reconciled:
    """What :meth:`Alerts.reconcile` did: the dedupe keys raised and resolved."""

    raised: tuple[str, ...]
    resolved: tuple[str, ...]


def resolved_before(cutoff: datetime) -> Document:
    """The filter of alerts resolved before ``cutoff`` (what retention deletes)."""
    return {"status": AlertStatus.RESOLVED.value, "resolved_at": {"$lt": cutoff}}


def _scoped(query: Document, scope: str | None) -> Document:
    return query if scope is None else {**query, "tenant": scope}


# Upserts of one condition racing each other: the losers find the winner's alert next time.
RACE_ATTEMPTS = 5


class Alerts:
    """The ``alerts`` collection; see the module docstring.

    ``scope`` is a reader's tenant: its alerts only (a platform-wide alert belongs to no
    tenant); ``None`` reads every alert (a superadmin, or the platform itself).
    """

    def __init__(self, db: Database) -> None:
        self._alerts = db[ALERTS]

    async def raise_alert(
        self,
        kind: AlertKind,
        *,
        title: str,
        subject: str = "",
        tenant: str | None = None,
        evidence: dict[str, Any] | None = None,
    ) -> Document:
        """Open an alert for the condition, or count one more sighting of the open (or
        acknowledged) one: ``count`` + 1, ``last_seen``, title and evidence refreshed.
        ``evidence`` must be plain data (strings, numbers, dates; ids as strings)."""
        rule = RULES[kind]
        now = datetime.now(UTC)
        key = dedupe_key(kind, tenant, subject)
        update = {
            "$set": {
                "title": title,
                "evidence": evidence or {},
                "last_seen": now,
                "severity": rule.severity.value,
                "runbook": rule.runbook,
            },
            "$inc": {"count": 1},
            "$setOnInsert": {
                "kind": kind.value,
                "tenant": tenant,
                "subject": subject,
                "status": AlertStatus.OPEN.value,
                "first_seen": now,
                "acknowledged_by": None,
                "acknowledged_at": None,
                "resolved_at": None,
                "resolved_by": None,
            },
        }
        query = {"dedupe_key": key, "status": {"$in": list(ACTIVE)}}
        for _ in range(RACE_ATTEMPTS):
            try:
                doc = await self._alerts.find_one_and_update(
                    query, update, upsert=True, return_document=ReturnDocument.AFTER
                )
            except DuplicateKeyError:
                # A concurrent raiser inserted it first: now the update finds it.
                continue
            # A MongoDB-compatible store (SecantusDB) can answer a racing upsert with no
            # document although it applied the update: read the alert rather than count the
            # sighting twice.
            if doc is None:
                doc = await self._alerts.find_one(query)
            if doc is not None:
                return doc
        raise RuntimeError(f"alert {key!r}: the upsert kept losing races; raise it again")

    async def resolve(
        self, kind: AlertKind, *, subject: str = "", tenant: str | None = None, by: str
    ) -> Document | None:
        """Resolve the open (or acknowledged) alert of a condition that cleared; None when
        there is none."""
        return await self._alerts.find_one_and_update(
            {"dedupe_key": dedupe_key(kind, tenant, subject), "status": {"$in": list(ACTIVE)}},
            {"$set": _resolution(by)},
            return_document=ReturnDocument.AFTER,
        )

    async def reconcile(
        self,
        kinds: Collection[AlertKind],
        findings: Iterable[Finding],
        *,
        keep: Collection[str] = (),
        by: str,
    ) -> Reconciled:
        """Make the alerts of ``kinds`` say what a complete check just found: raise every
        finding, and resolve every other open alert of those kinds, except those whose dedupe
        key is in ``keep`` (their condition could not be checked this time)."""
        raised = []
        for finding in findings:
            if finding.kind not in kinds:
                raise ValueError(f"{finding.kind} is not among the reconciled kinds")
            await self.raise_alert(
                finding.kind,
                title=finding.title,
                subject=finding.subject,
                tenant=finding.tenant,
                evidence=finding.evidence,
            )
            raised.append(finding.dedupe_key)
        standing = set(raised) | set(keep)
        cleared = await self._alerts.find(
            {
                "kind": {"$in": [kind.value for kind in kinds]},
                "status": {"$in": list(ACTIVE)},
                "dedupe_key": {"$nin": sorted(standing)},
            },
            {"dedupe_key": 1},
        ).to_list()
        if cleared:
            await self._alerts.update_many(
                {"_id": {"$in": [doc["_id"] for doc in cleared]}, "status": {"$in": list(ACTIVE)}},
                {"$set": _resolution(by)},
            )
        return Reconciled(tuple(raised), tuple(doc["dedupe_key"] for doc in cleared))

    async def get(self, alert_id: ObjectId, *, scope: str | None) -> Document | None:
        return await self._alerts.find_one(_scoped({"_id": alert_id}, scope))

    async def page(
        self,
        *,
        scope: str | None,
        status: str | None = None,
        severity: str | None = None,
        kind: str | None = None,
        before: ObjectId | None = None,
        limit: int = 50,
    ) -> list[Document]:
        """Newest first (by when each alert was opened)."""
        query: Document = {}
        for field_, value in (("status", status), ("severity", severity), ("kind", kind)):
            if value is not None:
                query[field_] = value
        if before is not None:
            query["_id"] = {"$lt": before}
        cursor = self._alerts.find(_scoped(query, scope)).sort("_id", -1).limit(limit)
        return await cursor.to_list()

    async def active(self, kinds: Sequence[AlertKind] = ()) -> list[Document]:
        """The open and acknowledged alerts (of ``kinds``; every kind when empty)."""
        query: Document = {"status": {"$in": list(ACTIVE)}}
        if kinds:
            query["kind"] = {"$in": [kind.value for kind in kinds]}
        return await self._alerts.find(query).sort("_id", 1).to_list()

    async def acknowledge(
        self, alert_id: ObjectId, *, scope: str | None, by: str
    ) -> Document | None:
        """Acknowledge an open alert (an acknowledged one stays as it is); returns the alert
        as it is now, resolved ones included (the caller refuses those), None when there is
        no such alert in ``scope``."""
        doc = await self._alerts.find_one_and_update(
            _scoped({"_id": alert_id, "status": AlertStatus.OPEN.value}, scope),
            {
                "$set": {
                    "status": AlertStatus.ACKNOWLEDGED.value,
                    "acknowledged_by": by,
                    "acknowledged_at": datetime.now(UTC),
                }
            },
            return_document=ReturnDocument.AFTER,
        )
        return doc if doc is not None else await self.get(alert_id, scope=scope)

    async def resolve_id(
        self, alert_id: ObjectId, *, scope: str | None, by: str
    ) -> Document | None:
        """Resolve an alert by hand (a resolved one stays as it is); None when there is no
        such alert in ``scope``."""
        doc = await self._alerts.find_one_and_update(
            _scoped({"_id": alert_id, "status": {"$in": list(ACTIVE)}}, scope),
            {"$set": _resolution(by)},
            return_document=ReturnDocument.AFTER,
        )
        return doc if doc is not None else await self.get(alert_id, scope=scope)


def _resolution(by: str) -> Document:
    return {
        "status": AlertStatus.RESOLVED.value,
        "resolved_at": datetime.now(UTC),
        "resolved_by": by,
    }
