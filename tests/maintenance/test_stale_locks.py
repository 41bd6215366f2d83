"""``stale_locks`` against the real store: a stale lock raises the P1 alert and is left to the
next worker's compare-and-set; a job failing again and again raises the other P1."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from inbox_common.alerts import AlertKind
from inbox_common.jobs import JobLock
from inbox_common.store.client import Database
from inbox_common.store.collections import JOB_LOCKS
from inbox_maintenance.service import Maintenance
from tests.maintenance.conftest import active, run_ok

pytestmark = pytest.mark.integration

JOB = "campaign-retry"
# The retry-worker's default stale bound; maintenance alerts past its own (120 s).
WORKER_STALE = timedelta(seconds=30)


def worker(db: Database, owner: str) -> JobLock:
    return JobLock(db, JOB, owner=owner, stale_after=WORKER_STALE)


async def age_heartbeat(db: Database, seconds: float) -> None:
    """As if the holder stopped renewing ``seconds`` ago (its process died)."""
    past = datetime.now(UTC) - timedelta(seconds=seconds)
    await db[JOB_LOCKS].update_one({"_id": JOB}, {"$set": {"heartbeatAt": past}})


async def test_a_stale_lock_raises_the_p1_and_is_left_for_the_next_worker_to_take(
    runner: Maintenance, db: Database
) -> None:
    dead = worker(db, "host-a:41:dead")
    assert await dead.acquire() is not None
    await age_heartbeat(db, 300)
    before = await db[JOB_LOCKS].find_one({"_id": JOB})

    outcome = await run_ok(runner, "stale_locks")

    [alert] = await active(db, AlertKind.JOB_LOCK_STALE)
    assert alert["severity"] == "P1"
    assert alert["tenant"] is None
    assert alert["evidence"]["lockedBy"] == "host-a:41:dead"
    assert alert["evidence"]["isStaleLock"] is True
    assert alert["evidence"]["heartbeatAgeSeconds"] >= 299
    assert "the campaign-retry lock is stale: host-a:41:dead" in alert["title"]
    assert "1 stale" in outcome.summary
    # Reported, not touched: the lock is exactly as the dead worker left it...
    assert await db[JOB_LOCKS].find_one({"_id": JOB}) == before
    # ...and the next worker takes it over by compare-and-set.
    grant = await worker(db, "host-b:7:next").acquire()
    assert grant is not None
    assert grant.taken_from == "host-a:41:dead"


async def test_the_alert_is_resolved_once_the_lock_is_live_again_and_counts_while_stale(
    runner: Maintenance, db: Database
) -> None:
    assert await worker(db, "a").acquire() is not None
    await age_heartbeat(db, 600)
    await run_ok(runner, "stale_locks")
    await run_ok(runner, "stale_locks")
    [alert] = await active(db, AlertKind.JOB_LOCK_STALE)
    assert alert["count"] == 2

    assert await worker(db, "b").acquire() is not None  # taken over: fresh heartbeat
    outcome = await run_ok(runner, "stale_locks")

    assert await active(db, AlertKind.JOB_LOCK_STALE) == []
    resolved = await db["alerts"].find_one({"_id": alert["_id"]})
    assert resolved is not None
    assert resolved["status"] == "resolved"
    assert resolved["resolved_by"] == "maintenance:stale_locks"
    assert "1 alerts resolved" in outcome.summary


async def test_a_fresh_or_released_lock_raises_nothing(runner: Maintenance, db: Database) -> None:
    live = worker(db, "live")
    assert await live.acquire() is not None
    other = JobLock(db, "other-job", owner="x", stale_after=WORKER_STALE)
    assert await other.acquire() is not None
    await other.release()
    await db[JOB_LOCKS].update_one(
        {"_id": "other-job"}, {"$set": {"heartbeatAt": datetime.now(UTC) - timedelta(days=3)}}
    )

    await run_ok(runner, "stale_locks")

    assert await active(db, AlertKind.JOB_LOCK_STALE) == []


async def test_consecutive_failures_at_the_threshold_raise_the_failing_p1(
    runner: Maintenance, db: Database
) -> None:
    lock = worker(db, "a")
    assert await lock.acquire() is not None
    for _ in range(2):
        await lock.record(ok=False, error="broker unavailable: ConnectionError")
    await run_ok(runner, "stale_locks")
    assert await active(db, AlertKind.JOB_FAILING) == []  # 2 < 3

    await lock.record(ok=False, error="broker unavailable: ConnectionError")
    await run_ok(runner, "stale_locks")

    [alert] = await active(db, AlertKind.JOB_FAILING)
    assert alert["severity"] == "P1"
    assert alert["evidence"]["consecutiveFailures"] == 3
    assert "campaign-retry failed 3 times in a row" in alert["title"]
    assert "broker unavailable" in alert["title"]

    await lock.record(ok=True)
    await run_ok(runner, "stale_locks")
    assert await active(db, AlertKind.JOB_FAILING) == []
