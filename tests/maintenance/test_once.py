"""``maintenance --once [TASK…]`` and ``inbox-ops maintenance run [TASK…]`` as processes: the
same runs as the daemon's, progress lines, a summary and the exit statuses."""

from __future__ import annotations

from datetime import timedelta

import pytest

from inbox_common.jobs import JobLock
from inbox_common.local.ports import free_port
from inbox_common.store.client import Database
from inbox_common.store.collections import JOB_LOCKS, WEBHOOK_EVENTS
from inbox_maintenance.settings import TASKS, MaintenanceTaskSettings
from tests.maintenance.conftest import ledger_event, process_env, run_command

pytestmark = pytest.mark.integration

ONCE = ["-m", "inbox_maintenance", "--once"]
OPS = ["-m", "inbox_ops"]


async def test_named_tasks_run_with_progress_lines_and_a_summary(
    task_settings: MaintenanceTaskSettings, db: Database
) -> None:
    for _ in range(3):
        await ledger_event(db, status="processed", age=timedelta(days=20))
    env = process_env(task_settings) | {"MAINTENANCE_RETENTION_BATCH": "1"}

    done = run_command([*ONCE, "retention", "stale_locks"], env)

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "maintenance: retention: running"
    assert "maintenance: retention: batch 3: deleted 3 processed webhook events so far" in lines
    assert any(
        line.startswith("maintenance: retention: ok in ")
        and line.endswith("deleted 3 processed webhook events older than 14 days and 0 resolved "
                          "alerts older than 90 days, in 3 batches of at most 1")
        for line in lines
    ), lines  # fmt: skip
    assert any(line.startswith("maintenance: stale_locks: ok in ") for line in lines)
    assert lines[-1].startswith("maintenance: 2 tasks in ")
    assert lines[-1].endswith(": 2 ok")
    assert await db[WEBHOOK_EVENTS].count_documents({}) == 0
    for task in ("retention", "stale_locks"):
        lock = await db[JOB_LOCKS].find_one({"_id": f"maintenance.{task}"})
        assert lock is not None
        assert lock["lastPass"]["trigger"] == "once"
        assert lock["lockedBy"] is None


async def test_no_task_named_runs_every_task(
    task_settings: MaintenanceTaskSettings, db: Database
) -> None:
    done = run_command(ONCE, process_env(task_settings))

    assert done.returncode == 0, done.stdout + done.stderr
    assert [
        line.split(":")[1].strip() for line in done.stdout.splitlines() if ": running" in line
    ] == list(TASKS)
    assert done.stdout.splitlines()[-1].endswith(f"{len(TASKS)} ok")


async def test_a_task_a_live_replica_runs_is_skipped_naming_it_and_exits_4(
    task_settings: MaintenanceTaskSettings, db: Database
) -> None:
    holder = JobLock(
        db, "maintenance.stuck_sends", owner="host-b:12:live", stale_after=timedelta(minutes=1)
    )
    assert await holder.acquire() is not None

    done = run_command([*ONCE, "stuck_sends"], process_env(task_settings))

    assert done.returncode == 4, done.stdout + done.stderr
    assert "maintenance: stuck_sends: skipped: host-b:12:live runs it since" in done.stdout
    assert done.stdout.splitlines()[-1].endswith(": 1 skipped")


async def test_the_store_unreachable_exits_3_naming_mongodb_url(
    task_settings: MaintenanceTaskSettings,
) -> None:
    env = process_env(task_settings) | {
        "MONGODB_URL": f"mongodb://127.0.0.1:{free_port()}/?directConnection=true",
        "MONGODB_TIMEOUT_MS": "300",
    }

    done = run_command([*ONCE, "retention", "stale_locks"], env)

    assert done.returncode == 3, done.stdout + done.stderr
    assert "retention: FAILED" in done.stdout
    assert "stale_locks" not in done.stdout  # stopped at the first: the rest would fail alike
    assert "is unreachable; check MONGODB_URL" in done.stderr


async def test_the_broker_unreachable_exits_3_only_for_a_task_that_needs_it(
    task_settings: MaintenanceTaskSettings,
) -> None:
    env = process_env(task_settings) | {
        "RABBITMQ_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    }

    without = run_command([*ONCE, "retention"], env)
    needs = run_command([*ONCE, "dead_letters"], env, timeout=90)

    assert without.returncode == 0, without.stdout + without.stderr
    assert needs.returncode == 3, needs.stdout + needs.stderr
    assert "check RABBITMQ_URL" in needs.stderr


def test_an_unknown_task_or_a_bad_setting_exits_2(task_settings: MaintenanceTaskSettings) -> None:
    unknown = run_command([*ONCE, "vacuum"], process_env(task_settings))
    bad = run_command(
        [*ONCE, "retention"], process_env(task_settings) | {"MAINTENANCE_RETENTION_BATCH": "0"}
    )
    schedule = run_command(
        ["-m", "inbox_maintenance"],
        process_env(task_settings) | {"MAINTENANCE_SCHEDULE": "retention=soon"},
    )

    assert unknown.returncode == 2
    assert "invalid choice: 'vacuum'" in unknown.stderr
    assert bad.returncode == 2
    assert "MAINTENANCE_RETENTION_BATCH" in bad.stderr
    assert schedule.returncode == 2
    assert "MAINTENANCE_SCHEDULE" in schedule.stderr
    assert "'soon' (retention) is not a duration like 30s, 5m, 1h, 1d, or off" in schedule.stderr


async def test_inbox_ops_maintenance_run_is_the_same_run(
    task_settings: MaintenanceTaskSettings, db: Database
) -> None:
    await ledger_event(db, status="processed", age=timedelta(days=20))

    done = run_command([*OPS, "maintenance", "run", "retention"], process_env(task_settings))

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0] == "maintenance: retention: running"
    assert "maintenance: retention: ok in " in done.stdout
    assert await db[WEBHOOK_EVENTS].count_documents({}) == 0
    lock = await db[JOB_LOCKS].find_one({"_id": "maintenance.retention"})
    assert lock is not None
    assert lock["lastPass"]["trigger"] == "once"
    usage = run_command([*OPS, "maintenance", "run", "--help"], process_env(task_settings))
    assert "retention" in usage.stdout
    unknown = run_command([*OPS, "maintenance", "run", "vacuum"], process_env(task_settings))
    assert unknown.returncode == 2
    assert "'vacuum' is not one of 'retention'" in unknown.stderr


async def test_inbox_ops_maintenance_run_without_a_task_runs_them_all(
    task_settings: MaintenanceTaskSettings,
) -> None:
    done = run_command([*OPS, "maintenance", "run"], process_env(task_settings), timeout=90)

    assert done.returncode == 0, done.stdout + done.stderr
    for task in TASKS:
        assert f"maintenance: {task}: ok in " in done.stdout, done.stdout
