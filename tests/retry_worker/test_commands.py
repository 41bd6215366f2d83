"""``retry-worker --once`` (cron) and ``inbox-ops job campaign-retry`` as the operator runs
them: real processes over the test's broker and store, one pass each, their exit statuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aio_pika.abc import AbstractChannel

from inbox_common.broker.publisher import ConfirmedPublisher
from inbox_common.broker.topology import Names
from inbox_common.jobs import JobLock
from inbox_common.store.client import Database
from inbox_common.store.collections import JOB_LOCKS, MESSAGES
from inbox_retry.settings import RetryJobSettings
from inbox_retry.worker import JOB
from tests.retry_worker.conftest import (
    drain,
    process_env,
    publish_due,
    run_command,
    store_outbound,
)

pytestmark = pytest.mark.integration

ONCE = ["-m", "inbox_retry", "--once"]
OPS_JOB = ["-m", "inbox_ops", "job", "campaign-retry"]


async def lock_doc(db: Database) -> dict[str, object]:
    doc = await db[JOB_LOCKS].find_one({"_id": JOB})
    assert doc is not None
    return doc


def json_lines(stdout: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stdout.splitlines() if line.startswith("{")]


async def test_once_runs_one_pass_releases_the_lock_and_exits_0(
    job_settings: RetryJobSettings, db: Database, publisher: ConfirmedPublisher, names: Names,
    amqp_channel: AbstractChannel,
) -> None:  # fmt: skip
    done = await store_outbound(db, send_state="accepted")
    await publish_due(publisher, names, {"kind": "read"}, message_id="read-1")
    await publish_due(publisher, names, {"message_id": str(done["_id"])})

    ran = run_command(ONCE, process_env(job_settings))

    assert ran.returncode == 0, ran.stderr
    [back] = await drain(amqp_channel, names.outbound_queue)
    assert back.message_id == "read-1"
    [finished] = [e for e in json_lines(ran.stdout) if e["event"] == "retry.once_finished"]
    assert finished["ok"] is True
    assert finished["summary"] == "seen 2, requeued 1, dropped 1 (done 1), dead-lettered 0"
    doc = await lock_doc(db)
    assert doc["lockedBy"] is None  # released
    assert doc["lastSuccessAt"] is not None


async def test_once_exits_4_naming_the_live_holder_and_touches_nothing(
    job_settings: RetryJobSettings, db: Database, publisher: ConfirmedPublisher, names: Names,
    amqp_channel: AbstractChannel,
) -> None:  # fmt: skip
    daemon = JobLock(db, JOB, owner="daemon-host:99:cafe", stale_after=timedelta(seconds=30))
    assert await daemon.acquire() is not None
    await publish_due(publisher, names, {"kind": "read"})

    ran = run_command(ONCE, process_env(job_settings))

    assert ran.returncode == 4
    assert "held by daemon-host:99:cafe since " in ran.stderr
    since = (await lock_doc(db))["lockedAt"]
    assert isinstance(since, datetime)
    assert since.isoformat() in ran.stderr
    assert len(await drain(amqp_channel, names.retry_due_queue)) == 1
    assert (await lock_doc(db))["lockedBy"] == "daemon-host:99:cafe"


async def test_once_takes_over_a_crashed_daemons_stale_lock(
    job_settings: RetryJobSettings, db: Database, publisher: ConfirmedPublisher, names: Names,
    amqp_channel: AbstractChannel,
) -> None:  # fmt: skip
    await db[JOB_LOCKS].insert_one(
        {
            "_id": JOB,
            "lockedBy": "crashed:7:dead",
            "lockedAt": datetime.now(UTC) - timedelta(hours=2),
            "heartbeatAt": datetime.now(UTC) - timedelta(minutes=5),
            "consecutiveFailures": 4,
        }
    )
    await publish_due(publisher, names, {"kind": "read"})

    ran = run_command(ONCE, process_env(job_settings))

    assert ran.returncode == 0, ran.stderr
    [finished] = [e for e in json_lines(ran.stdout) if e["event"] == "retry.once_finished"]
    assert finished["taken_from"] == "crashed:7:dead"
    assert len(await drain(amqp_channel, names.outbound_queue)) == 1
    doc = await lock_doc(db)
    assert doc["consecutiveFailures"] == 0
    assert doc["lockedBy"] is None


async def test_once_exits_3_when_the_store_is_unreachable(job_settings: RetryJobSettings) -> None:
    env = process_env(job_settings) | {
        "MONGODB_URL": "mongodb://ops:s3cret@127.0.0.1:1/?directConnection=true",
        "MONGODB_TIMEOUT_MS": "300",
    }
    ran = run_command(ONCE, env)
    assert ran.returncode == 3
    assert "MONGODB_URL" in ran.stderr
    assert "s3cret" not in ran.stderr + ran.stdout


def test_the_daemon_refuses_to_start_without_a_jobs_token(job_settings: RetryJobSettings) -> None:
    env = process_env(job_settings) | {"JOBS_API_TOKEN": "  "}
    ran = run_command(["-m", "inbox_retry"], env, timeout=30)
    assert ran.returncode == 2
    assert "JOBS_API_TOKEN: Value error, must not be empty" in ran.stderr


async def test_inbox_ops_job_prints_progress_and_a_summary(
    job_settings: RetryJobSettings, db: Database, publisher: ConfirmedPublisher, names: Names,
    amqp_channel: AbstractChannel,
) -> None:  # fmt: skip
    paused = await store_outbound(db, send_state="retrying", campaign_id="c-1")
    await db["campaigns"].insert_one(
        {"_id": "c-1", "tenant": paused["tenant"], "channel_id": None, "status": "paused"}
    )
    for n in range(3):
        await publish_due(publisher, names, {"kind": "read"}, message_id=f"read-{n}")
    await publish_due(publisher, names, {"message_id": str(paused["_id"])})

    ran = run_command([*OPS_JOB, "--every", "2"], process_env(job_settings))

    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[0] == f"{JOB}: taking the lock (namespace {names.namespace!r})"
    assert f"{JOB}: seen 2, requeued 2, dropped 0, dead-lettered 0" in lines
    assert f"{JOB}: seen 4, requeued 3, dropped 1 (paused 1), dead-lettered 0" in lines
    assert lines[-1].startswith(f"{JOB}: done in ")
    assert lines[-1].endswith("seen 4, requeued 3, dropped 1 (paused 1), dead-lettered 0")
    assert len(await drain(amqp_channel, names.outbound_queue)) == 3
    message = await db[MESSAGES].find_one({"_id": paused["_id"]})
    assert message is not None
    assert message["send_state"] == "paused"


async def test_inbox_ops_job_exits_4_while_a_live_worker_holds_the_lock(
    job_settings: RetryJobSettings, db: Database
) -> None:
    daemon = JobLock(db, JOB, owner="daemon-host:99:cafe", stale_after=timedelta(seconds=30))
    assert await daemon.acquire() is not None
    ran = run_command(OPS_JOB, process_env(job_settings))
    assert ran.returncode == 4
    assert "not run: the campaign-retry lock is held by daemon-host:99:cafe" in ran.stderr


async def test_inbox_ops_job_exits_1_when_the_pass_failed(
    job_settings: RetryJobSettings, db: Database, publisher: ConfirmedPublisher, names: Names,
    amqp_channel: AbstractChannel,
) -> None:  # fmt: skip
    # A document no code should write (send_state a list): the pass meets a bug, gives the job
    # back to the due queue and fails.
    broken = await store_outbound(db, send_state="retrying")
    await db[MESSAGES].update_one({"_id": broken["_id"]}, {"$set": {"send_state": ["x"]}})
    await publish_due(publisher, names, {"message_id": str(broken["_id"])})

    ran = run_command(OPS_JOB, process_env(job_settings))

    assert ran.returncode == 1
    last = ran.stdout.splitlines()[-1]
    assert last.startswith(f"{JOB}: FAILED after ")
    assert "crashed: TypeError" in last
    assert len(await drain(amqp_channel, names.retry_due_queue)) == 1
    doc = await lock_doc(db)
    assert doc["consecutiveFailures"] == 1
