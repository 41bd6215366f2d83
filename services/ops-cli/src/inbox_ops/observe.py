"""What the store and the broker say about the platform now: what ``readiness`` judges and
``incident`` records, read once through the library's own readers.

Nothing here writes, and nothing here reads a secret into what it returns: channels come
back without their access token, webhook events without their body, the lock with its
recorded error as the job lock keeps it (URL passwords masked).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError, ChannelNotFoundEntity
from pymongo.errors import PyMongoError

from inbox_common.alerts import Alerts
from inbox_common.broker.topology import PIECES, Names, Topology, everything, number_sends
from inbox_common.jobs import JobLock, LockState
from inbox_common.settings import redact_url
from inbox_common.store.channels import Channels
from inbox_common.store.client import Database, create_client
from inbox_common.store.ledger import FAILED, Ledger, LedgerFilter
from inbox_common.store.migrations import check_schema
from inbox_common.store.schema import WEBHOOK_EVENTS
from inbox_ops.settings import ReadinessSettings
from inbox_retry.worker import JOB

# The last hour of the webhook ledger: what readiness and a snapshot count.
WEBHOOK_WINDOW = timedelta(hours=1)
LATEST_FAILED = 10
# Which service consumes the work queue of each piece of the topology (its label). None: no
# consumer by design: retry-worker takes due jobs with basic.get under its job lock (see
# deploy/prometheus/rules/inbox.rules.yml, QueueWithoutConsumers).
CONSUMERS: dict[str, str | None] = {
    "webhook": "inbox-api",
    "outbound": "inbox-api",
    "number": "inbox-api",
    "maintenance": "maintenance",
    "retry": None,
}
# What a broker failure looks like from aio-pika.
BROKER_ERRORS = (AMQPError, ConnectionError, ChannelInvalidStateError, TimeoutError, OSError)
# A channel as a snapshot shows it: never its access token.
CHANNEL_FIELDS = (
    "tenant",
    "name",
    "phone_number_id",
    "waba_id",
    "display_phone_number",
    "status",
    "disconnected_reason",
    "disconnected_code",
    "disconnected_at",
    "reconnected_at",
)
ALERT_FIELDS = (
    "severity",
    "kind",
    "status",
    "tenant",
    "title",
    "evidence",
    "runbook",
    "first_seen",
    "last_seen",
    "count",
    "acknowledged_by",
)


@dataclass(frozen=True, slots=True)
class WorkQueue:
    """A queue some service consumes, and which one (None: nothing, by design); ``number``
    when it is one channel's send queue."""

    name: str
    consumer: str | None
    number: bool = False


@dataclass(frozen=True, slots=True)
class QueueState:
    """A queue as a passive declare answers: ``declared`` False when it does not exist."""

    name: str
    declared: bool
    messages: int = 0
    consumers: int = 0

    def document(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "declared": self.declared,
            "messages": self.messages,
            "consumers": self.consumers,
        }


@dataclass(frozen=True, slots=True)
class WebhookStats:
    """The ledger's last ``window``: entries by status, failures by reason (their error
    code), and the newest failed entries (ids, never bodies)."""

    window: timedelta
    by_status: dict[str, int]
    by_reason: dict[str, int]
    latest_failed: list[dict[str, Any]]

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def failed(self) -> int:
        return self.by_status.get(FAILED, 0)

    @property
    def failure_rate(self) -> float:
        return self.failed / self.total if self.total else 0.0

    def document(self) -> dict[str, Any]:
        return {
            "window_minutes": self.window.total_seconds() / 60,
            "total": self.total,
            "failed": self.failed,
            "failure_rate": round(self.failure_rate, 4),
            "by_status": self.by_status,
            "failed_by_reason": self.by_reason,
            "latest_failed": self.latest_failed,
        }


@dataclass(slots=True)
class Observations:
    """Everything read, or why a part could not be: ``store_error`` (then every store part
    is None), ``broker_error`` (then ``queues`` is None)."""

    settings: ReadinessSettings
    store_error: str | None = None
    schema_problems: list[str] | None = None
    channels: list[dict[str, Any]] | None = None
    webhooks: WebhookStats | None = None
    lock: LockState | None = None
    alerts: list[dict[str, Any]] | None = None
    broker_error: str | None = None
    work_queues: list[WorkQueue] = field(default_factory=list)
    queues: dict[str, QueueState] | None = None

    @property
    def names(self) -> Names:
        return Names(self.settings.amqp_namespace, self.settings.amqp_delivery_limit)

    def numbers(self) -> list[str]:
        """The channels' phone_number_ids (each has a send queue)."""
        return sorted({str(c["phone_number_id"]) for c in self.channels or []})


def namespace_topology(names: Names, numbers: Sequence[str]) -> list[Topology]:
    """Every piece of the namespace, each channel's send queue included."""
    return [piece(names) for piece in PIECES] + [number_sends(n)(names) for n in numbers]


def work_queues(names: Names, numbers: Sequence[str]) -> list[WorkQueue]:
    return [
        WorkQueue(piece.consumed, CONSUMERS[piece.label], number=piece.label == "number")
        for piece in namespace_topology(names, numbers)
        if piece.consumed is not None
    ]


def all_queues(names: Names, numbers: Sequence[str]) -> list[str]:
    """Every queue of the namespace: work, delay and dead-letter queues."""
    whole = everything(names)
    for number in numbers:
        whole = whole + number_sends(number)(names)
    return sorted(q.name for q in whole.queues)


async def queue_states(url: str, queues: Sequence[str], *, seconds: float) -> dict[str, QueueState]:
    """Each queue's ready messages and consumers, by passive declares (which change nothing);
    raises one of :data:`BROKER_ERRORS` when RabbitMQ does not answer."""
    connection = await aio_pika.connect(
        url, timeout=seconds, client_properties={"connection_name": "inbox-ops"}
    )
    states: dict[str, QueueState] = {}
    async with connection:
        channel: AbstractChannel | None = None
        for queue in queues:
            if channel is None:
                channel = await connection.channel()
            try:
                declared = await channel.declare_queue(queue, passive=True, timeout=seconds)
            except ChannelNotFoundEntity:
                # The broker closed the channel on the 404: the next queue gets a new one.
                states[queue] = QueueState(queue, declared=False)
                channel = None
                continue
            answer = declared.declaration_result
            states[queue] = QueueState(
                queue, True, int(answer.message_count or 0), int(answer.consumer_count or 0)
            )
    return states


async def webhook_stats(db: Database, window: timedelta = WEBHOOK_WINDOW) -> WebhookStats:
    since = datetime.now(UTC) - window
    events = db[WEBHOOK_EVENTS]

    async def counts(match: dict[str, Any], key: str) -> dict[str, int]:
        cursor = await events.aggregate(
            [{"$match": match}, {"$group": {"_id": key, "n": {"$sum": 1}}}, {"$sort": {"n": -1}}]
        )
        return {str(doc["_id"]): int(doc["n"]) async for doc in cursor}

    by_status = await counts({"received_at": {"$gte": since}}, "$status")
    by_reason = await counts({"status": FAILED, "received_at": {"$gte": since}}, "$error.code")
    newest = await Ledger(db).page(LedgerFilter(status=FAILED), before=None, limit=LATEST_FAILED)
    latest = [
        {
            "id": str(doc["_id"]),
            "received_at": doc.get("received_at"),
            "reason": (doc.get("error") or {}).get("code"),
            "phone_number_ids": doc.get("phone_number_ids") or [],
            "attempts": doc.get("attempts"),
            "request_id": doc.get("request_id"),
        }
        for doc in newest
    ]
    return WebhookStats(window, by_status, by_reason, latest)


async def channel_states(db: Database) -> list[dict[str, Any]]:
    return [
        {"id": str(doc["_id"]), **{f: doc[f] for f in CHANNEL_FIELDS if doc.get(f) is not None}}
        for doc in await Channels(db).for_tenant(None)
    ]


async def open_alerts(db: Database) -> list[dict[str, Any]]:
    """Open and acknowledged alerts, oldest first."""
    return [
        {"id": str(doc["_id"]), **{f: doc.get(f) for f in ALERT_FIELDS}}
        for doc in await Alerts(db).active()
    ]


def _failure(exc: BaseException) -> str:
    """The error's first words: PyMongo's server-selection errors go on with the topology."""
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return text.split(" (configured timeouts")[0].split(", Timeout:")[0][:300]


async def _observe_store(obs: Observations) -> None:
    settings = obs.settings
    client = create_client(
        settings.mongodb_url, app_name="inbox-ops", timeout_ms=settings.mongodb_timeout_ms
    )
    db = client[settings.mongodb_db]
    try:
        await db.command("ping")
        obs.schema_problems = await check_schema(db)
        obs.channels = await channel_states(db)
        obs.webhooks = await webhook_stats(db)
        obs.lock = await JobLock(
            db, JOB, owner="inbox-ops", stale_after=settings.stale_after
        ).state()
        obs.alerts = await open_alerts(db)
    except PyMongoError as exc:
        obs.store_error = (
            f"MongoDB at {redact_url(settings.mongodb_url)} failed: {_failure(exc)}; check "
            "MONGODB_URL and that the database is reachable"
        )
        obs.schema_problems = obs.channels = obs.alerts = None
        obs.webhooks = obs.lock = None
    finally:
        with contextlib.suppress(PyMongoError):
            await client.close()


async def _observe_broker(obs: Observations) -> None:
    settings = obs.settings
    names, numbers = obs.names, obs.numbers()
    obs.work_queues = work_queues(names, numbers)
    try:
        obs.queues = await asyncio.wait_for(
            queue_states(
                settings.rabbitmq_url,
                all_queues(names, numbers),
                seconds=settings.readiness_broker_timeout_seconds,
            ),
            settings.readiness_broker_timeout_seconds * 4,
        )
    except BROKER_ERRORS as exc:
        obs.broker_error = (
            f"RabbitMQ at {redact_url(settings.rabbitmq_url)} failed: {_failure(exc)}; check "
            "RABBITMQ_URL and that the broker is running"
        )


async def observe(settings: ReadinessSettings) -> Observations:
    """Read the store, then the broker (its send queues are the channels')."""
    obs = Observations(settings)
    await _observe_store(obs)
    await _observe_broker(obs)
    return obs
