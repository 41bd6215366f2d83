"""``retention`` against the real store: what goes, what stays, and the bounded batches."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from inbox_common.alerts import AlertKind, Alerts
from inbox_common.broker.topology import Names
from inbox_common.jobs import JobLock
from inbox_common.store.client import Database
from inbox_common.store.collections import ALERTS, WEBHOOK_EVENTS
from inbox_maintenance.service import Maintenance
from inbox_maintenance.settings import MaintenanceTaskSettings
from inbox_maintenance.tasks.context import TaskContext
from inbox_maintenance.tasks.retention import Retention
from tests.maintenance.conftest import ledger_event, new_runner, run_ok

pytestmark = pytest.mark.integration

DAY = timedelta(days=1)


async def shas(db: Database) -> set[str]:
    return {doc["sha256"] async for doc in db[WEBHOOK_EVENTS].find({}, {"sha256": 1})}


async def test_processed_events_past_retention_go_and_failed_or_recent_ones_stay(
    runner: Maintenance, db: Database
) -> None:
    old = [await ledger_event(db, status="processed", age=15 * DAY) for _ in range(3)]
    recent = await ledger_event(db, status="processed", age=13 * DAY)
    failed = await ledger_event(db, status="failed", age=20 * DAY)
    received = await ledger_event(db, status="received", age=20 * DAY)

    outcome = await run_ok(runner, "retention")

    assert await shas(db) == {recent, failed, received}
    assert not set(old) & await shas(db)
    assert "deleted 3 processed webhook events older than 14 days" in outcome.summary


async def test_resolved_alerts_past_retention_go_and_open_ones_stay_however_old(
    runner: Maintenance, db: Database
) -> None:
    alerts = Alerts(db)
    old = await alerts.raise_alert(AlertKind.DEAD_LETTERS, title="old", subject="q1")
    await alerts.resolve(AlertKind.DEAD_LETTERS, subject="q1", by="test")
    young = await alerts.raise_alert(AlertKind.DEAD_LETTERS, title="young", subject="q2")
    await alerts.resolve(AlertKind.DEAD_LETTERS, subject="q2", by="test")
    still_open = await alerts.raise_alert(AlertKind.DEAD_LETTERS, title="open", subject="q3")
    long_ago = datetime.now(UTC) - 200 * DAY
    await db[ALERTS].update_one({"_id": old["_id"]}, {"$set": {"resolved_at": long_ago}})
    recently = datetime.now(UTC) - 89 * DAY
    await db[ALERTS].update_one({"_id": young["_id"]}, {"$set": {"resolved_at": recently}})
    await db[ALERTS].update_one({"_id": still_open["_id"]}, {"$set": {"first_seen": long_ago}})

    outcome = await run_ok(runner, "retention")

    left = {doc["_id"] async for doc in db[ALERTS].find({})}
    assert left == {young["_id"], still_open["_id"]}
    assert "and 1 resolved alerts older than 90 days" in outcome.summary


async def test_deletes_go_in_batches_of_the_configured_size_with_a_pause_between(
    task_settings: MaintenanceTaskSettings, db: Database, names: Names
) -> None:
    settings = task_settings.model_copy(
        update={"maintenance_retention_batch": 2, "maintenance_retention_pause_seconds": 0.2}
    )
    runner = new_runner(settings, db, names)
    for _ in range(5):
        await ledger_event(db, status="processed", age=30 * DAY - timedelta(hours=1))
    lines: list[str] = []

    started = time.monotonic()
    outcome = await runner.run("retention", progress=lines.append, trigger="test")
    took = time.monotonic() - started

    assert outcome.ok, outcome.line()
    assert await shas(db) == set()
    assert [line for line in lines if "webhook" in line] == [
        "batch 1: deleted 2 processed webhook events so far",
        "batch 2: deleted 4 processed webhook events so far",
        "batch 3: deleted 5 processed webhook events so far",
    ]
    assert took >= 0.4  # two pauses: after the first and the second full batch
    lock = await db["job_locks"].find_one({"_id": "maintenance.retention"})
    assert lock is not None
    assert lock["lastPass"]["counts"]["batches"] == 3


async def test_a_run_stops_at_its_budget_and_the_next_one_deletes_the_rest(
    db: Database,
) -> None:
    for _ in range(4):
        await ledger_event(db, status="processed", age=20 * DAY)
    lock = JobLock(db, "maintenance.retention", owner="test", stale_after=timedelta(seconds=30))
    assert await lock.acquire() is not None
    ctx = TaskContext(lock)

    def retention(budget: float) -> Retention:
        return Retention(
            db, webhook_days=14, alert_days=90, batch=1, pause_seconds=0.0, budget_seconds=budget
        )

    cut = await retention(0.0).run(ctx)
    assert cut.counts["complete"] is False
    assert "the next run deletes the rest" in cut.summary
    assert len(await shas(db)) == 4

    rest = await retention(60.0).run(ctx)
    assert rest.counts["complete"] is True
    assert rest.counts["webhook_events_deleted"] == 4
    assert await shas(db) == set()
