"""The maintenance service as it runs: a task message consumed runs the task, a bad one is
dead-lettered with the reason, a stale one is skipped; the health says when a task is
overdue; the metrics carry each task's last success and the channels by status."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aio_pika.abc import AbstractChannel
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from inbox_common.broker.consumer import REASON_HEADER
from inbox_common.broker.publisher import ConfirmedPublisher
from inbox_common.broker.topology import MAINTENANCE_ROUTING_KEY, Names
from inbox_common.store.client import Database, Document
from inbox_common.store.collections import CHANNELS, JOB_LOCKS
from inbox_maintenance.app import create_app
from inbox_maintenance.settings import TASKS, MaintenanceSettings
from inbox_testkit.broker import header_str
from inbox_testkit.polling import wait_until
from tests.maintenance.conftest import settings_values

pytestmark = pytest.mark.integration

Client = TestClient[web.Request, web.Application]


def schedule(**periods: str) -> str:
    """Only the given tasks scheduled."""
    return ",".join(f"{task}={periods.get(task, 'off')}" for task in TASKS)


@pytest.fixture
def service_settings(
    amqp_url: str, names: Names, mongo_url: str, mongo_db_name: str
) -> MaintenanceSettings:
    return MaintenanceSettings.model_validate(
        settings_values(amqp_url, names, mongo_url, mongo_db_name)
        | {"maintenance_schedule": schedule(retention="1d"), "maintenance_tick_seconds": 0.05}
    )


@pytest.fixture
async def service(service_settings: MaintenanceSettings, db: Database) -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(service_settings))) as client:

        async def consuming() -> bool:
            body = await (await client.get("/api/health")).json()
            return bool(body["checks"].get("maintenance_consumer", {}).get("status") == "ok")

        await wait_until(consuming, "the maintenance consumer", timeout=15)
        yield client


async def lock_of(db: Database, task: str) -> Document | None:
    return await db[JOB_LOCKS].find_one({"_id": f"maintenance.{task}"})


async def publish(publisher: ConfirmedPublisher, names: Names, body: Any) -> None:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    await publisher.publish(
        names.maintenance_exchange, MAINTENANCE_ROUTING_KEY, raw, content_type="application/json"
    )


async def test_a_scheduled_task_runs_at_start_and_its_last_success_is_a_metric(
    service: Client, db: Database
) -> None:
    async def ran() -> bool:
        doc = await lock_of(db, "retention")
        return doc is not None and doc.get("lastSuccessAt") is not None and not doc["lockedBy"]

    await wait_until(ran, "the first retention run, recorded and released", timeout=15)
    doc = await lock_of(db, "retention")
    assert doc is not None
    assert doc["lastPass"]["trigger"] == "schedule"
    metrics = await (await service.get("/metrics")).text()
    line = next(
        line
        for line in metrics.splitlines()
        if line.startswith('job_last_success_timestamp_seconds{job="retention"}')
    )
    assert abs(float(line.split()[-1]) - doc["lastSuccessAt"].timestamp()) < 5
    health = await (await service.get("/api/health")).json()
    assert health["status"] == "ok"
    assert health["checks"]["maintenance_tasks"]["detail"] == "1 scheduled tasks on time"


async def test_the_channels_by_status_gauge_counts_the_stores_channels(
    service: Client, db: Database
) -> None:
    await db[CHANNELS].insert_many(
        [
            {"tenant": "t1", "phone_number_id": "1001", "status": "connected"},
            {"tenant": "t1", "phone_number_id": "1002", "status": "disconnected"},
            {"tenant": "t2", "phone_number_id": "1003", "status": "disconnected"},
        ]
    )

    async def counted() -> dict[str, float]:
        metrics = await (await service.get("/metrics")).text()
        return {
            line.split('"')[1]: float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("channels_by_status{")
        }

    async def both() -> bool:
        return await counted() == {"connected": 1.0, "disconnected": 2.0}

    await wait_until(both, "channels_by_status counting 1 connected, 2 disconnected", timeout=15)


async def test_an_overdue_task_makes_the_service_degraded_naming_it(
    service: Client, db: Database
) -> None:
    async def ran() -> bool:
        doc = await lock_of(db, "retention")
        return doc is not None and doc.get("lastSuccessAt") is not None and not doc["lockedBy"]

    await wait_until(ran, "the first retention run", timeout=15)
    three_days_ago = datetime.now(UTC) - timedelta(days=3)
    await db[JOB_LOCKS].update_one(
        {"_id": "maintenance.retention"},
        {"$set": {"lastSuccessAt": three_days_ago, "lastError": "store error: boom"}},
    )

    response = await service.get("/api/health")

    assert response.status == 200
    body = await response.json()
    assert body["status"] == "degraded"
    detail = body["checks"]["maintenance_tasks"]["detail"]
    assert detail.startswith("overdue: retention (last success 2592")
    assert "runs every 86400s, last error: store error: boom" in detail


async def test_a_task_message_runs_the_task_through_the_consumer(
    service: Client, db: Database, names: Names, publisher: ConfirmedPublisher
) -> None:
    await publish(publisher, names, {"task": "stuck_sends", "trigger": "manual"})

    async def ran() -> bool:
        doc = await lock_of(db, "stuck_sends")
        return doc is not None and doc.get("lastRunAt") is not None

    await wait_until(ran, "stuck_sends to run", timeout=15)
    doc = await lock_of(db, "stuck_sends")
    assert doc is not None
    assert doc["lastPass"]["trigger"] == "manual"
    assert doc["consecutiveFailures"] == 0


async def test_a_message_more_than_two_periods_late_is_skipped(
    service: Client, db: Database, names: Names, publisher: ConfirmedPublisher
) -> None:
    long_ago = datetime.now(UTC) - timedelta(minutes=3)
    await publish(
        publisher,
        names,
        {"task": "stale_locks", "period": long_ago.isoformat(), "every_seconds": 60},
    )
    await publish(publisher, names, {"task": "stuck_sends"})  # a marker behind it

    async def marker_ran() -> bool:
        return await lock_of(db, "stuck_sends") is not None

    await wait_until(marker_ran, "the message after the stale one", timeout=15)
    assert await lock_of(db, "stale_locks") is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "invalid_task_message: the body is not JSON"),
        (
            {"name": "retention"},
            "invalid_task_message: the body is not a task message (check task)",
        ),
        ({"task": "vacuum"}, "unknown_task: no task named 'vacuum'"),
    ],
    ids=["not-json", "no-task", "unknown-task"],
)
async def test_a_bad_task_message_is_dead_lettered_with_the_reason(
    service: Client,
    names: Names,
    publisher: ConfirmedPublisher,
    amqp_channel: AbstractChannel,
    body: Any,
    reason: str,
) -> None:
    await publish(publisher, names, body)
    dead = await amqp_channel.get_queue(names.dead_letter_queue(names.maintenance_queue))

    message = None

    async def dead_lettered() -> bool:
        nonlocal message
        message = await dead.get(fail=False, timeout=2)
        return message is not None

    await wait_until(dead_lettered, "the dead letter", timeout=15)
    assert message is not None
    assert (header_str(message.headers, REASON_HEADER) or "").startswith(reason)
