"""``inbox-ops readiness [--json]``: the go/no-go after a deploy (and after a rollback).

One row per check, each ``pass``, ``warn`` or ``fail``; the exit status is 0 when every check
passes, 1 when one warns, 2 when one fails. The checks:

- **settings**: the environment every service reads, validated by the services' own settings
  classes: present (``missing`` when a required one is not), well-formed (``malformed``, with
  the validator's reason). A value is never printed: secrets are only ``set``.
- **store**: MongoDB answers; **migrations**: the live schema is what this code expects
  (``db-deploy --check``'s comparison).
- **broker**: RabbitMQ answers; **queue <name>**: each work queue of the namespace is declared
  and has a consumer (``<ns>.retry.due`` has none by design: retry-worker takes due jobs with
  basic.get under its lock).
- **retry lock**: the ``campaign-retry`` lock is not stale (fail) and its job does not keep
  failing (``consecutiveFailures`` at ``RETRY_WORKER_FAILURE_THRESHOLD``: warn).
- **channels**: a disconnected channel warns, with its phone_number_id.
- **webhook failures**: failed / received in the last hour above
  ``READINESS_WEBHOOK_FAILURE_RATE`` warns.
- **alerts**: an open P0/P1 alert fails, a P2 warns.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings

from inbox_common.alerts import Severity
from inbox_common.settings import BrokerSettings, MongoSettings, ServiceSettings, redact_url
from inbox_common.store.token_cipher import TokenCipherSettings
from inbox_common.whatsapp.cloud_api import CloudApiSettings
from inbox_maintenance.settings import MaintenanceSettings, MaintenanceTaskSettings
from inbox_ops.observe import Observations, QueueState, WorkQueue, observe
from inbox_ops.report import Verdict, table
from inbox_ops.settings import ReadinessSettings
from inbox_retry.settings import RetryWorkerSettings

EXIT_STATUS = {Verdict.PASS: 0, Verdict.WARN: 1, Verdict.FAIL: 2}
_RANK = {Verdict.PASS: 0, Verdict.WARN: 1, Verdict.FAIL: 2}
# Where the services find their store and broker: shown even when left to their defaults.
CONNECTIONS = ("MONGODB_URL", "MONGODB_DB", "RABBITMQ_URL", "AMQP_NAMESPACE")
# A default that points at this machine: fine for a laptop, rarely what a deploy means.
LOCAL_DEFAULTS = ("MONGODB_URL", "RABBITMQ_URL")
LISTED = 5
# The checks' names (an incident snapshot tells them apart by these).
SETTING = "setting "
STORE = "store"
MIGRATIONS = "migrations"
BROKER = "broker"
QUEUE = "queue "
RETRY_LOCK = "retry lock"
CHANNELS = "channels"
WEBHOOKS = "webhook failures"
ALERTS = "alerts"
# Disconnected channels that make the runbook's P1, as maintenance counts them.
MANY_DISCONNECTED: int = MaintenanceTaskSettings.model_fields[
    "maintenance_many_channels_disconnected"
].default


class IngestRequirements(BrokerSettings, ServiceSettings):
    """webhook-ingest's settings as far as readiness checks them. Its own class
    (``inbox_ingest.settings.IngestSettings``) is not installed with inbox-ops; these two
    fields and their rule (present, not blank) are the same."""

    whatsapp_webhook_secret: SecretStr = Field(
        description="Meta's app secret (two comma-separated secrets during a rotation)"
    )
    whatsapp_webhook_verify_token: SecretStr = Field(
        description="the verify token configured in Meta's webhook settings"
    )

    @field_validator("whatsapp_webhook_secret", "whatsapp_webhook_verify_token")
    @classmethod
    def _not_blank(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip(" ,"):
            raise ValueError("must not be empty")
        return value


class InboxApiRequirements(BrokerSettings, MongoSettings, TokenCipherSettings, CloudApiSettings):
    """What inbox-api needs from the environment: its store, broker, token keys and Cloud
    API (``inbox_api.settings.InboxApiSettings``, not installed with inbox-ops, adds only
    ports and tuning knobs with defaults)."""


# Each service's settings, as readiness validates them against this environment.
SERVICE_SETTINGS: dict[str, type[BaseSettings]] = {
    "webhook-ingest": IngestRequirements,
    "inbox-api": InboxApiRequirements,
    "retry-worker": RetryWorkerSettings,
    "maintenance": MaintenanceSettings,
    "inbox-ops": ReadinessSettings,
}


@dataclass(frozen=True, slots=True)
class Check:
    """One row. ``severity``: where a failing check stands in the runbook's triage (what an
    incident snapshot suggests from it); None for a check that passed or was not run."""

    name: str
    verdict: Verdict
    detail: str
    severity: Severity | None = None

    def document(self) -> dict[str, str | None]:
        return {
            "check": self.name,
            "verdict": self.verdict.value,
            "detail": self.detail,
            "severity": self.severity.value if self.severity else None,
        }


def secret_variables() -> list[str]:
    """The variables the services hold as secrets (``SecretStr`` fields)."""
    found = {
        name.upper()
        for cls in SERVICE_SETTINGS.values()
        for name, info in cls.model_fields.items()
        if info.annotation is SecretStr
    }
    return sorted(found)


def _message(error: Any) -> str:
    return str(error["msg"]).removeprefix("Value error, ")


def settings_checks() -> list[Check]:
    """One row per variable of the environment that a service requires, that says where the
    store and broker are, or that a service refuses; never a value."""
    given = {name.upper() for name in os.environ}
    readers: dict[str, list[str]] = {}
    required: set[str] = set()
    defaults: dict[str, Any] = {}
    missing: dict[str, list[str]] = {}
    malformed: dict[str, dict[str, list[str]]] = {}
    for service, cls in SERVICE_SETTINGS.items():
        for name, info in cls.model_fields.items():
            variable = name.upper()
            readers.setdefault(variable, []).append(service)
            if info.is_required():
                required.add(variable)
            else:
                defaults[variable] = info.default
        try:
            cls()
        except ValidationError as exc:
            for error in exc.errors():
                variable = str(error["loc"][0]).upper() if error["loc"] else "SETTINGS"
                if error["type"] == "missing":
                    missing.setdefault(variable, []).append(service)
                else:
                    by_reason = malformed.setdefault(variable, {})
                    by_reason.setdefault(_message(error), []).append(service)
    shown = sorted(required | set(CONNECTIONS) | set(missing) | set(malformed))
    checks = []
    for variable in shown:
        who = ", ".join(missing.get(variable) or readers.get(variable, ["?"]))
        name = f"{SETTING}{variable}"
        if variable in missing:
            detail = f"missing: {who} cannot start without it; set it"
            checks.append(Check(name, Verdict.FAIL, detail, Severity.P2))
        elif variable in malformed:
            reasons = "; ".join(
                f"{reason} ({', '.join(services)})"
                for reason, services in malformed[variable].items()
            )
            checks.append(Check(name, Verdict.FAIL, f"malformed: {reasons}", Severity.P2))
        elif variable in given:
            checks.append(Check(name, Verdict.PASS, "set"))
        elif variable in LOCAL_DEFAULTS:
            default = redact_url(str(defaults[variable]))
            detail = f"not set: {who} use the default {default}; set it unless that is meant"
            checks.append(Check(name, Verdict.WARN, detail, Severity.P3))
        else:
            checks.append(Check(name, Verdict.PASS, f"not set: the default {defaults[variable]!r}"))
    return checks


def _store_checks(obs: Observations) -> list[Check]:
    if obs.store_error is not None:
        skipped = [
            Check(part, Verdict.FAIL, "not checked: the store is unreachable")
            for part in (MIGRATIONS, RETRY_LOCK, CHANNELS, WEBHOOKS, ALERTS)
        ]
        return [Check(STORE, Verdict.FAIL, obs.store_error, Severity.P0), *skipped]
    checks = [Check(STORE, Verdict.PASS, "MongoDB answers")]
    problems = obs.schema_problems or []
    if problems:
        listed = "; ".join(problems[:LISTED]) + (" ..." if len(problems) > LISTED else "")
        detail = (
            f"the live schema does not match this code: {listed}; run `inbox-ops db-deploy` "
            "(`inbox-ops db-deploy --check` lists every difference)"
        )
        checks.append(Check(MIGRATIONS, Verdict.FAIL, detail, Severity.P2))
    else:
        checks.append(Check(MIGRATIONS, Verdict.PASS, "every migration applied, schema ok"))
    return [
        *checks,
        _lock_check(obs),
        _channels_check(obs),
        _webhooks_check(obs),
        _alerts_check(obs),
    ]


def _lock_check(obs: Observations) -> Check:
    lock, settings = obs.lock, obs.settings
    assert lock is not None
    threshold = settings.retry_worker_failure_threshold
    failing = lock.consecutive_failures >= threshold
    failures = (
        f"{lock.consecutive_failures} passes failed in a row (last error: "
        f"{lock.last_error or 'none recorded'}); see the retry-worker's log"
    )
    if lock.is_stale:
        detail = (
            f"stale (isStaleLock): {lock.locked_by} has not renewed it for "
            f"{lock.heartbeat_age or 0:.0f}s (stale after {lock.stale_after.total_seconds():g}s); "
            "restart the retry-worker, then run `inbox-ops job campaign-retry` once"
        )
        detail = f"{detail}; {failures}" if failing else detail
        return Check(RETRY_LOCK, Verdict.FAIL, detail, Severity.P1)
    if failing:
        detail = (
            f"{failures} (RETRY_WORKER_FAILURE_THRESHOLD {threshold}); then run `inbox-ops "
            "job campaign-retry` once and watch it"
        )
        return Check(RETRY_LOCK, Verdict.WARN, detail, Severity.P1)
    if lock.locked_by is not None:
        detail = f"held by {lock.locked_by}, heartbeat {lock.heartbeat_age or 0:.1f}s ago"
        return Check(RETRY_LOCK, Verdict.PASS, detail)
    if lock.last_run_at is None:
        detail = (
            "no retry-worker has run yet: start the retry-worker (daemon), or schedule "
            "`retry-worker --once` (cron)"
        )
        return Check(RETRY_LOCK, Verdict.WARN, detail, Severity.P3)
    return Check(
        RETRY_LOCK,
        Verdict.PASS,
        f"free; last run {lock.last_run_at:%Y-%m-%d %H:%M:%S} UTC (cron, or between two daemons)",
    )


def _channels_check(obs: Observations) -> Check:
    channels = obs.channels or []
    down = [c for c in channels if c.get("status") == "disconnected"]
    if down:
        listed = ", ".join(
            f"{c['phone_number_id']} ({c.get('disconnected_reason') or 'no reason recorded'})"
            for c in down
        )
        detail = (
            f"{len(down)} of {len(channels)} disconnected: {listed}; their sends are held: "
            "reconnect each with a valid token (POST /api/channels/{id}/reconnect)"
        )
        # The runbook's P1 is "many channels disconnected": maintenance's own threshold.
        many = len(down) >= MANY_DISCONNECTED
        return Check(CHANNELS, Verdict.WARN, detail, Severity.P1 if many else Severity.P2)
    if not channels:
        return Check(CHANNELS, Verdict.PASS, "no channel yet")
    return Check(CHANNELS, Verdict.PASS, f"{len(channels)} connected")


def _webhooks_check(obs: Observations) -> Check:
    stats = obs.webhooks
    assert stats is not None
    limit = obs.settings.readiness_webhook_failure_rate
    if stats.total == 0:
        return Check(WEBHOOKS, Verdict.PASS, "no webhook received in the last hour")
    share = f"{stats.failed} of {stats.total} failed in the last hour ({stats.failure_rate:.1%})"
    if stats.failed and stats.failure_rate > limit:
        reasons = ", ".join(f"{code} ({n})" for code, n in list(stats.by_reason.items())[:LISTED])
        detail = (
            f"{share}, above {limit:.1%} (READINESS_WEBHOOK_FAILURE_RATE); reasons: {reasons}; "
            "see GET /api/admin/webhook-logs?status=failed"
        )
        # A sharp rise against the usual rate (P1) is maintenance's alert, counted below.
        return Check(WEBHOOKS, Verdict.WARN, detail, Severity.P3)
    return Check(WEBHOOKS, Verdict.PASS, share)


def _alerts_check(obs: Observations) -> Check:
    alerts = obs.alerts or []
    counts = Counter(str(a.get("severity")) for a in alerts)
    urgent = [a for a in alerts if a.get("severity") in (Severity.P0, Severity.P1)]
    medium = [a for a in alerts if a.get("severity") == Severity.P2]
    shown = urgent or medium
    listed = "; ".join(f"[{a['severity']}] {a.get('title')}" for a in shown[:LISTED])
    summary = ", ".join(f"{n} {severity}" for severity, n in sorted(counts.items()))
    highest = min((Severity(str(a["severity"])) for a in alerts), default=None)
    if urgent:
        detail = (
            f"open: {summary}: {listed}; follow each alert's runbook section (GET "
            "/api/admin/alerts)"
        )
        return Check(ALERTS, Verdict.FAIL, detail, highest)
    if medium:
        return Check(ALERTS, Verdict.WARN, f"open: {summary}: {listed}", highest)
    return Check(ALERTS, Verdict.PASS, f"open: {summary}" if alerts else "none open", highest)


def _broker_checks(obs: Observations) -> list[Check]:
    if obs.broker_error is not None or obs.queues is None:
        skipped = [
            Check(f"{QUEUE}{q.name}", Verdict.FAIL, "not checked: the broker is unreachable")
            for q in obs.work_queues
        ]
        detail = obs.broker_error or "not checked"
        return [Check(BROKER, Verdict.FAIL, detail, Severity.P0), *skipped]
    checks = [Check(BROKER, Verdict.PASS, "RabbitMQ answers")]
    checks.extend(_queue_check(work, obs.queues[work.name]) for work in obs.work_queues)
    return checks


def _queue_check(work: WorkQueue, state: QueueState) -> Check:
    name = f"{QUEUE}{work.name}"
    if not state.declared:
        when = "within seconds of the channel's creation" if work.number else "when it starts"
        declarer = work.consumer or "retry-worker"
        detail = (
            f"not declared: {declarer} declares it {when}; is it running? check its /api/health"
        )
        return Check(name, Verdict.FAIL, detail, Severity.P2)
    if work.consumer is None:
        detail = (
            f"{state.messages} due; no consumer by design (retry-worker takes due jobs with "
            "basic.get under its lock)"
        )
        return Check(name, Verdict.PASS, detail)
    if state.consumers == 0:
        detail = (
            f"no consumer ({state.messages} messages wait): {work.consumer} is down, paused "
            f"or cut off from RabbitMQ; check {work.consumer}'s /api/health"
        )
        return Check(name, Verdict.FAIL, detail, Severity.P2)
    return Check(name, Verdict.PASS, f"{state.consumers} consumer(s), {state.messages} waiting")


def judge(obs: Observations) -> list[Check]:
    """The store's and the broker's rows from what was observed."""
    return [*_store_checks(obs), *_broker_checks(obs)]


def not_checked() -> list[Check]:
    reason = "not checked: fix the settings above first"
    return [Check(STORE, Verdict.FAIL, reason), Check(BROKER, Verdict.FAIL, reason)]


def load_readiness_settings() -> ReadinessSettings | None:
    """inbox-ops's own settings; None when they are invalid (the settings rows say why)."""
    try:
        return ReadinessSettings()
    except ValidationError:
        return None


async def readiness_checks() -> tuple[list[Check], Observations | None]:
    """Every check, and what the store and broker said (None when the settings are too
    broken to reach them)."""
    checks = settings_checks()
    settings = load_readiness_settings()
    if settings is None:
        return [*checks, *not_checked()], None
    obs = await observe(settings)
    return [*checks, *judge(obs)], obs


def worst(checks: Sequence[Check]) -> Verdict:
    return max((c.verdict for c in checks), key=_RANK.__getitem__, default=Verdict.PASS)


def summary(checks: Sequence[Check]) -> str:
    counts = Counter(c.verdict for c in checks)
    decision = {Verdict.PASS: "GO", Verdict.WARN: "GO with warnings", Verdict.FAIL: "NO-GO"}
    return (
        f"readiness: {counts[Verdict.FAIL]} fail, {counts[Verdict.WARN]} warn, "
        f"{counts[Verdict.PASS]} pass: {decision[worst(checks)]}"
    )


def render(checks: Sequence[Check]) -> str:
    rows = [(c.name, c.verdict.value, c.detail) for c in checks]
    return f"{table(('CHECK', 'RESULT', 'DETAIL'), rows)}\n\n{summary(checks)}"


def document(checks: Sequence[Check]) -> dict[str, Any]:
    return {
        "verdict": worst(checks).value,
        "summary": summary(checks),
        "checks": [c.document() for c in checks],
    }


async def readiness(*, as_json: bool) -> tuple[int, str]:
    """The exit status and what to print."""
    checks, _ = await readiness_checks()
    if as_json:
        text = orjson.dumps(document(checks), option=orjson.OPT_INDENT_2).decode()
    else:
        text = render(checks)
    return EXIT_STATUS[worst(checks)], text
