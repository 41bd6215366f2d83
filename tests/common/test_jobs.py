"""The job lock against the real store: compare-and-set by the store's clock, stale takeover,
release, recorded runs, and racers that never both win."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from inbox_common.jobs import JobLock, worker_id
from inbox_common.store.client import Database
from inbox_common.store.collections import JOB_LOCKS

pytestmark = pytest.mark.integration

JOB = "campaign-retry"
STALE = timedelta(seconds=30)


def lock(db: Database, owner: str, job: str = JOB, stale: timedelta = STALE) -> JobLock:
    return JobLock(db, job, owner=owner, stale_after=stale)


async def age_heartbeat(db: Database, job: str, seconds: float) -> None:
    """As if the holder stopped renewing ``seconds`` ago (its process died)."""
    past = datetime.now(UTC) - timedelta(seconds=seconds)
    await db[JOB_LOCKS].update_one({"_id": job}, {"$set": {"heartbeatAt": past}})


def test_worker_id_names_host_pid_and_a_random_part() -> None:
    host, pid, rand = worker_id().split(":")
    assert host
    assert pid.isdigit()
    assert len(rand) == 8
    assert worker_id() != worker_id()


async def test_first_acquire_creates_the_document_with_the_runbooks_fields(db: Database) -> None:
    a = lock(db, "a")
    grant = await a.acquire()
    assert grant is not None
    assert not grant.renewed
    assert grant.taken_from is None
    assert a.held
    doc = await db[JOB_LOCKS].find_one({"_id": JOB})
    assert doc is not None
    assert doc["lockedBy"] == "a"
    assert doc["lockedAt"] == doc["heartbeatAt"]
    assert doc["consecutiveFailures"] == 0
    state = await a.state()
    assert state.document()["isStaleLock"] is False
    assert {"lockedBy", "lockedAt", "heartbeatAt", "consecutiveFailures", "lastRunAt",
            "lastSuccessAt", "lastError", "isStaleLock"} <= set(state.document())  # fmt: skip


async def test_a_live_holder_keeps_the_lock_and_renewing_keeps_locked_at(db: Database) -> None:
    a, b = lock(db, "a"), lock(db, "b")
    assert await a.acquire() is not None
    first = await db[JOB_LOCKS].find_one({"_id": JOB})
    assert await b.acquire() is None
    assert not b.held
    await asyncio.sleep(0.01)
    grant = await a.acquire()
    assert grant is not None
    assert grant.renewed
    after = await db[JOB_LOCKS].find_one({"_id": JOB})
    assert first is not None
    assert after is not None
    assert after["lockedAt"] == first["lockedAt"]
    assert after["heartbeatAt"] >= first["heartbeatAt"]
    assert after["lockedBy"] == "a"


async def test_a_stale_lock_is_taken_over_and_its_old_holder_cannot_renew(db: Database) -> None:
    a, b = lock(db, "a"), lock(db, "b")
    assert await a.acquire() is not None
    await age_heartbeat(db, JOB, 31)
    state = await b.state()
    assert state.is_stale
    assert state.document()["isStaleLock"] is True
    grant = await b.acquire()
    assert grant is not None
    assert grant.taken_from == "a"
    assert await a.renew() is False
    assert not a.held
    assert await a.record(ok=True) is False  # only the holder records
    assert (await b.state()).locked_by == "b"


async def test_a_heartbeat_younger_than_the_bound_is_not_stale(db: Database) -> None:
    a, b = lock(db, "a"), lock(db, "b")
    assert await a.acquire() is not None
    await age_heartbeat(db, JOB, 25)
    assert not (await b.state()).is_stale
    assert await b.acquire() is None


async def test_release_frees_the_lock_at_once_and_a_free_lock_is_not_stale(db: Database) -> None:
    a, b = lock(db, "a"), lock(db, "b")
    assert await a.acquire() is not None
    assert await a.release() is True
    state = await b.state()
    assert state.locked_by is None
    assert not state.is_stale
    grant = await b.acquire()
    assert grant is not None
    assert grant.taken_from is None


async def test_record_counts_failures_and_a_success_resets_them(db: Database) -> None:
    a = lock(db, "a")
    assert await a.acquire() is not None
    secret_url = "amqp://guest:hunter2@rabbit:5672/"
    assert await a.record(ok=False, error=f"broker at {secret_url} said no", summary={"seen": 1})
    assert await a.record(ok=False, error="still no")
    state = await a.state()
    assert state.consecutive_failures == 2
    assert state.last_error == "still no"
    assert state.last_run_at is not None
    assert state.last_success_at is None
    first = await a.record(ok=False, error=f"broker at {secret_url} said no")
    assert first
    state = await a.state()
    assert state.last_error is not None
    assert "hunter2" not in state.last_error
    assert "guest:***@rabbit" in state.last_error
    assert await a.record(ok=True, summary={"seen": 3})
    state = await a.state()
    assert state.consecutive_failures == 0
    assert state.last_error is None
    assert state.last_success_at is not None
    assert state.last_pass == {"seen": 3}


async def test_two_acquirers_never_both_win_a_fresh_lock(db: Database) -> None:
    for round_ in range(20):
        job = f"race-{round_}"
        racers = [lock(db, f"w{i}", job) for i in range(4)]
        grants = await asyncio.gather(*(r.acquire() for r in racers))
        winners = [r.owner for r, g in zip(racers, grants, strict=True) if g is not None]
        assert len(winners) == 1, f"round {round_}: {winners}"
        assert (await racers[0].state()).locked_by == winners[0]


async def test_two_acquirers_never_both_take_over_a_stale_lock(db: Database) -> None:
    for round_ in range(20):
        job = f"stale-race-{round_}"
        assert await lock(db, "dead", job).acquire() is not None
        await age_heartbeat(db, job, 60)
        racers = [lock(db, f"w{i}", job) for i in range(4)]
        grants = await asyncio.gather(*(r.acquire() for r in racers))
        winners = [g for g in grants if g is not None]
        assert len(winners) == 1, f"round {round_}: {len(winners)} winners"
        assert winners[0].taken_from == "dead"
