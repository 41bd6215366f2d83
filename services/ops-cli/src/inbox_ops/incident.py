"""``inbox-ops incident [--out DIR] [--started ISO]``: the runbook's incident snapshot.

One timestamped folder under ``--out`` (default ``incidents``) with ``snapshot.json`` and
``snapshot.md``: the services' health, the readiness checks, every queue's depth and
consumers (dead-letter queues apart), the last hour of failed webhooks (counts per reason and
the newest ids; never a body), the open alerts, the retry-worker's lock, the channels (never a
token), the versions; a suggested severity by the runbook's triage with its evidence, and the
runbook's communication message filled in.

Secrets never appear: nothing secret is read into the snapshot, and what is written is masked
again for every secret value of the environment (:class:`inbox_ops.report.Redactor`). A part
that cannot be read (the store or the broker is down) says so in its place; the snapshot is
still written: an incident is when it is needed most.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from inbox_common.alerts import RULES, AlertKind, Severity
from inbox_common.health import Status
from inbox_common.settings import redact_url
from inbox_ops.healthcheck import ServiceHealth, check_services
from inbox_ops.healthcheck import document as health_document
from inbox_ops.observe import Observations
from inbox_ops.readiness import ALERTS, Check, readiness_checks, secret_variables
from inbox_ops.readiness import document as readiness_document
from inbox_ops.report import Redactor

SNAPSHOT_JSON = "snapshot.json"
SNAPSHOT_MD = "snapshot.md"
UPDATE_EVERY = timedelta(minutes=10)
PACKAGES = (
    "inbox-ops",
    "inbox-common",
    "inbox-retry-worker",
    "inbox-maintenance",
    "aio-pika",
    "pymongo",
    "aiohttp",
)
# A failing service's place in the runbook's triage, and what it means for the users.
SERVICE_TRIAGE: dict[str, tuple[Severity, str]] = {
    "webhook-ingest": (
        Severity.P0,
        "Meta's webhooks are refused (Meta retries them): new messages and statuses do not "
        "reach the inbox",
    ),
    "inbox-api": (Severity.P0, "agents cannot read or answer conversations"),
    "retry-worker": (Severity.P1, "failed sends are not retried"),
    "maintenance": (Severity.P3, "housekeeping and the alert evaluation do not run"),
}
# What a failing readiness check means for the users, by the check's name (or its prefix).
CHECK_IMPACT: dict[str, str] = {
    "store": "nothing can be read or stored: agents see errors, webhooks wait in the queue",
    "broker": "webhooks are refused with 503 (Meta retries them) and nothing is sent",
    "migrations": "the code and the schema disagree: writes may fail",
    "queue": "messages wait in the queue: nothing stores or sends them",
    "retry lock": "failed sends are not retried",
    "channels": "the disconnected numbers' sends are held",
    "webhook failures": "some webhooks are not stored",
    "setting": "a service refuses to start with these settings",
}


@dataclass(frozen=True, slots=True)
class Evidence:
    severity: Severity
    signal: str
    impact: str

    def document(self) -> dict[str, str]:
        return {"severity": self.severity.value, "signal": self.signal, "impact": self.impact}


def _impact(check: Check) -> str:
    for prefix, impact in CHECK_IMPACT.items():
        if check.name.startswith(prefix):
            return impact
    return "see the check"


def triage(
    health: Sequence[ServiceHealth], checks: Sequence[Check], alerts: Sequence[dict[str, Any]]
) -> list[Evidence]:
    """The runbook's triage (section 2.1) of what was seen, most severe first: the services'
    health, the readiness checks, and each open alert (at the severity its rule gives it)."""
    evidence = []
    for result in health:
        severity, impact = SERVICE_TRIAGE.get(result.service, (Severity.P2, "see its health"))
        if result.status is Status.DOWN:
            signal = f"{result.service} health is down: {result.problems()}"
            evidence.append(Evidence(severity, signal, impact))
        elif result.status is Status.DEGRADED:
            signal = f"{result.service} health is degraded: {result.problems()}"
            evidence.append(Evidence(Severity.P3, signal, f"{result.service} serves in part"))
    for check in checks:
        if check.severity is None or check.name == ALERTS:
            continue
        evidence.append(Evidence(check.severity, f"{check.name}: {check.detail}", _impact(check)))
    for alert in alerts:
        rule = RULES.get(AlertKind(str(alert["kind"])))
        signal = f"alert {alert['kind']} ({alert['status']}): {alert.get('title')}"
        impact = rule.meaning if rule else "see the alert"
        evidence.append(Evidence(Severity(str(alert["severity"])), signal, impact))
    return sorted(evidence, key=lambda e: e.severity.value)


def _alerts(obs: Observations | None) -> list[dict[str, Any]]:
    return (obs.alerts or []) if obs is not None else []


def suggested(evidence: Sequence[Evidence]) -> Severity | None:
    return min((e.severity for e in evidence), default=None)


def started_at(obs: Observations | None, severity: Severity | None, now: datetime) -> datetime:
    """When the incident began, as far as the store knows: the first sighting of the oldest
    open alert at the suggested severity or above; else now."""
    seen = [
        a["first_seen"]
        for a in _alerts(obs)
        if isinstance(a.get("first_seen"), datetime)
        and severity is not None
        and str(a.get("severity")) <= severity.value
    ]
    return min(seen, default=now)


def communication(
    severity: Severity | None, evidence: Sequence[Evidence], started: datetime, now: datetime
) -> str:
    """The runbook's message (section 5): P0/P1 to the incident channel with an update every
    10 minutes; P2 an internal update once the cause is known; below that, nothing."""
    if severity is None or severity is Severity.P3:
        level = severity.value if severity else "no incident signal"
        return (
            f"No broadcast needed ({level}): note the snapshot in the team channel and keep "
            "watching /api/health and the alerts."
        )
    impacts = list(dict.fromkeys(e.impact for e in evidence if e.severity is severity))
    lines = [
        f"Status: investigating ({severity.value})",
        f"Start time: {started:%Y-%m-%d %H:%M} UTC",
        f"Impact: {'; '.join(impacts)}",
    ]
    if severity in (Severity.P0, Severity.P1):
        title = f"[{severity.value}] WhatsApp inbox incident (to the incident channel)"
        lines += [
            "ETA: <to be estimated>",
            f"Next update: {now + UPDATE_EVERY:%H:%M} UTC (every 10 minutes until resolved)",
        ]
    else:
        title = f"[{severity.value}] WhatsApp inbox: internal update"
        lines += ["Cause: <to be identified>", "Estimated fix: <to be estimated>"]
    return "\n".join([title, *lines])


def versions(health: Sequence[ServiceHealth]) -> dict[str, Any]:
    packages: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "packages": packages,
        "services": {r.service: r.version for r in health},
        "git_commit": git_commit(),
    }


def git_commit() -> str | None:
    """``INBOX_GIT_COMMIT`` when the deploy sets it, else the checkout's HEAD, else None."""
    if commit := os.environ.get("INBOX_GIT_COMMIT"):
        return commit
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if done.returncode == 0:
            return done.stdout.strip()
    return None


def snapshot(
    *,
    now: datetime,
    started: datetime,
    health: Sequence[ServiceHealth],
    checks: Sequence[Check],
    obs: Observations | None,
) -> dict[str, Any]:
    evidence = triage(health, checks, _alerts(obs))
    severity = suggested(evidence)
    queues: dict[str, Any] = {"error": "not read: the settings are invalid"}
    store: dict[str, Any] = {"error": "not read: the settings are invalid"}
    if obs is not None:
        queues = _queues(obs)
        store = (
            {"error": obs.store_error}
            if obs.store_error is not None
            else {
                "webhooks": obs.webhooks.document() if obs.webhooks else None,
                "alerts": obs.alerts,
                "retry_lock": obs.lock.document() if obs.lock else None,
                "channels": obs.channels,
            }
        )
    where = {}
    if obs is not None:
        where = {
            "namespace": obs.settings.amqp_namespace,
            "database": obs.settings.mongodb_db,
            "mongodb": redact_url(obs.settings.mongodb_url),
            "rabbitmq": redact_url(obs.settings.rabbitmq_url),
        }
    return {
        "taken_at": now,
        "started_at": started,
        "severity": {
            "suggested": severity.value if severity else None,
            "evidence": [e.document() for e in evidence],
        },
        "communication": communication(severity, evidence, started, now),
        "where": where,
        "health": health_document(health),
        "readiness": readiness_document(checks),
        "queues": queues,
        "store": store,
        "versions": versions(health),
    }


def _queues(obs: Observations) -> dict[str, Any]:
    if obs.queues is None:
        return {"error": obs.broker_error or "not read"}
    states = sorted(obs.queues.values(), key=lambda q: q.name)
    return {
        "queues": [q.document() for q in states if not q.name.endswith(".dead")],
        "dead_letters": [q.document() for q in states if q.name.endswith(".dead")],
    }


# --- snapshot.md ----------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    if not rows:
        return "_none_"
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(doc: Mapping[str, Any]) -> str:
    severity = doc["severity"]
    out = [
        f"# Incident snapshot {doc['taken_at']:%Y-%m-%d %H:%M:%S} UTC",
        "",
        f"Suggested severity: **{severity['suggested'] or 'none (no incident signal)'}** "
        "(the runbook's triage, section 2.1; the on-call decides).",
        "",
        *_md_where(doc["where"]),
        "## Evidence",
        _md_table(
            ("severity", "signal", "impact"),
            [(e["severity"], e["signal"], e["impact"]) for e in severity["evidence"]],
        ),
        "",
        "## Communication (runbook section 5)",
        "```text",
        doc["communication"],
        "```",
        "",
        "## Health",
        _md_table(
            ("service", "status", "HTTP", "latency ms", "failing checks / error", "version"),
            [
                (
                    s["service"],
                    s["status"],
                    s["http_status"],
                    s["latency_ms"],
                    s["error"]
                    or "; ".join(
                        f"{name}={c['status']} {c.get('detail', '')}".strip()
                        for name, c in s["failing_checks"].items()
                    )
                    or "-",
                    s["version"],
                )
                for s in doc["health"]["services"]
            ],
        ),
        "",
        "## Readiness",
        doc["readiness"]["summary"],
        "",
        _md_table(
            ("check", "result", "detail"),
            [(c["check"], c["verdict"], c["detail"]) for c in doc["readiness"]["checks"]],
        ),
        "",
        *_md_queues(doc["queues"]),
        *_md_store(doc["store"]),
        "## Versions",
        _md_table(
            ("what", "version"),
            [
                *doc["versions"]["packages"].items(),
                *((f"{k} (running)", v) for k, v in doc["versions"]["services"].items()),
                ("git commit", doc["versions"]["git_commit"]),
            ],
        ),
        "",
    ]
    return "\n".join(out)


def _md_where(where: Mapping[str, Any]) -> list[str]:
    if not where:
        return []
    return ["## Where", _md_table(("what", "value"), list(where.items())), ""]


def _md_queues(queues: Mapping[str, Any]) -> list[str]:
    if "error" in queues:
        return ["## Queues", f"Not read: {queues['error']}", ""]
    headers = ("queue", "declared", "messages", "consumers")

    def rows(key: str) -> list[tuple[Any, ...]]:
        return [(q["name"], q["declared"], q["messages"], q["consumers"]) for q in queues[key]]

    return [
        "## Queues",
        _md_table(headers, rows("queues")),
        "",
        "## Dead-letter queues",
        _md_table(headers, rows("dead_letters")),
        "",
    ]


def _md_store(store: Mapping[str, Any]) -> list[str]:
    if "error" in store:
        return ["## Store", f"Not read: {store['error']}", ""]
    out = []
    webhooks = store["webhooks"]
    if webhooks is not None:
        out += [
            f"## Webhooks, last {webhooks['window_minutes']:g} minutes",
            f"{webhooks['failed']} failed of {webhooks['total']} "
            f"(failure rate {webhooks['failure_rate']:.1%}).",
            "",
            _md_table(("failed because", "events"), list(webhooks["failed_by_reason"].items())),
            "",
            "Newest failed events (`GET /api/admin/webhook-logs/<id>`):",
            "",
            _md_table(
                ("id", "received", "reason", "numbers", "attempts"),
                [
                    (
                        e["id"],
                        e["received_at"],
                        e["reason"],
                        ", ".join(e["phone_number_ids"]),
                        e["attempts"],
                    )
                    for e in webhooks["latest_failed"]
                ],
            ),
            "",
        ]
    out += [
        "## Open alerts",
        _md_table(
            ("severity", "kind", "status", "tenant", "title", "first seen", "count"),
            [
                (
                    a["severity"],
                    a["kind"],
                    a["status"],
                    a["tenant"],
                    a["title"],
                    a["first_seen"],
                    a["count"],
                )
                for a in store["alerts"] or []
            ],
        ),
        "",
    ]
    lock = store["retry_lock"]
    if lock is not None:
        out += [
            "## Retry-worker lock",
            _md_table(("field", "value"), [(k, v) for k, v in lock.items() if k != "lastPass"]),
            "",
        ]
    out += [
        "## Channels",
        _md_table(
            ("phone_number_id", "tenant", "name", "status", "reason", "since"),
            [
                (
                    c.get("phone_number_id"),
                    c.get("tenant"),
                    c.get("name"),
                    c.get("status"),
                    c.get("disconnected_reason"),
                    c.get("disconnected_at"),
                )
                for c in store["channels"] or []
            ],
        ),
        "",
    ]
    return out


# --- taking one -----------------------------------------------------------------------------


def _folder(out: Path, now: datetime) -> Path:
    """A new folder ``incident-<UTC time>`` under ``out`` (``-2``, ``-3``... when taken)."""
    stem = f"incident-{now:%Y%m%dT%H%M%SZ}"
    for n in range(1, 1000):
        folder = out / (stem if n == 1 else f"{stem}-{n}")
        try:
            folder.mkdir(parents=True)
        except FileExistsError:
            continue
        return folder
    raise FileExistsError(f"{out / stem}: a thousand snapshots in one second")


async def take_snapshot(
    out: Path, *, targets: Mapping[str, str], seconds: float, started: datetime | None
) -> tuple[Path, Severity | None]:
    """Write a snapshot under ``out``; its folder and the suggested severity."""
    now = datetime.now(UTC)
    health, (checks, obs) = await asyncio.gather(
        check_services(targets, seconds=seconds), readiness_checks()
    )
    severity = suggested(triage(health, checks, _alerts(obs)))
    when = started or started_at(obs, severity, now)
    doc = snapshot(now=now, started=when, health=health, checks=checks, obs=obs)
    redact = Redactor.of_environment(names=secret_variables())
    folder = _folder(out, now)
    data = orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str)
    (folder / SNAPSHOT_JSON).write_text(redact(data.decode()) + "\n", encoding="utf-8")
    (folder / SNAPSHOT_MD).write_text(redact(markdown(doc)), encoding="utf-8")
    return folder, severity
