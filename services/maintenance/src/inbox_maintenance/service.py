"""Running a maintenance task: under its job lock, recorded, measured.

Every run, whether a scheduled message brought it or ``--once`` asked for it, takes the same
path (:meth:`Maintenance.run`):

1. take the task's lock in ``job_locks`` (``maintenance.<task>``, ``inbox_common.jobs``):
   while another live replica runs the task, this run is skipped (the same work is being
   done); a lock whose holder died is taken over;
2. run the task; its checkpoints renew the lock, and stop it when the service stops;
3. record the run on the lock document (``lastRunAt``, ``lastSuccessAt``,
   ``consecutiveFailures``, ``lastError``, ``lastPass``: the same fields as every job) and
   release the lock.

A task that fails is recorded failed and tried again at its next period; only an unreachable
store is reported as such (the consumer then waits for the store before trying again).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
from pymongo.errors import PyMongoError

from inbox_common.alerts import Alerts
from inbox_common.broker.connection import Broker
from inbox_common.broker.topology import Names
from inbox_common.health import CheckResult, Status
from inbox_common.jobs import JobLock, LockState, worker_id
from inbox_common.logging import get_logger
from inbox_common.store.channels import Channels
from inbox_common.store.client import Database, is_transient
from inbox_common.store.collections import CHANNELS, JOB_LOCKS
from inbox_common.whatsapp.cloud_api import CloudApiClient
from inbox_maintenance import metrics
from inbox_maintenance.metrics import CHANNEL_STATUSES, MaintenanceMetrics
from inbox_maintenance.settings import TASKS, MaintenanceTaskSettings
from inbox_maintenance.tasks.channel_health import ChannelHealth
from inbox_maintenance.tasks.context import (
    LockLostError,
    Progress,
    Task,
    TaskContext,
    TaskFailedError,
    TaskInterruptedError,
)
from inbox_maintenance.tasks.dead_letters import DeadLetters
from inbox_maintenance.tasks.evaluation import AlertEvaluation
from inbox_maintenance.tasks.retention import Retention
from inbox_maintenance.tasks.stale_locks import StaleLocks
from inbox_maintenance.tasks.stuck_sends import StuckSends

log = get_logger(__name__)

JOB_PREFIX = "maintenance."
# A task is overdue once its last success is older than twice its period and this.
OVERDUE_GRACE_SECONDS = 60.0


def job_of(task: str) -> str:
    """The task's document in ``job_locks``."""
    return f"{JOB_PREFIX}{task}"


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    """A run: ``status`` is one of ``metrics.RESULTS``; ``holder`` who runs the task when this
    run was skipped."""

    task: str
    status: str
    summary: str = ""
    error: str | None = None
    seconds: float = 0.0
    holder: LockState | None = None
    taken_from: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == metrics.OK

    def line(self) -> str:
        """``retention: ok in 1.20s: deleted …`` (what ``--once`` prints)."""
        if self.status == metrics.OK:
            took = f" (took over the stale lock of {self.taken_from})" if self.taken_from else ""
            return f"{self.task}: ok in {self.seconds:.2f}s{took}: {self.summary}"
        if self.status == metrics.SKIPPED:
            return f"{self.task}: skipped: {describe_holder(self.holder)}"
        return f"{self.task}: FAILED after {self.seconds:.2f}s: {self.error}"


def describe_holder(state: LockState | None) -> str:
    if state is None or state.locked_by is None:
        return "another replica runs it now"
    since = state.locked_at.isoformat() if state.locked_at else "an unknown time"
    age = state.heartbeat_age
    beat = f"{age:.1f}s ago" if age is not None else "never"
    return f"{state.locked_by} runs it since {since} (last heartbeat {beat})"


@dataclass(frozen=True, slots=True)
class Resources:
    """What the tasks run on; a task that needs a missing one fails saying so."""

    db: Database
    names: Names
    broker: Broker | None = None
    cloud_api: CloudApiClient | None = None
    http: aiohttp.ClientSession | None = None


class Maintenance:
    """The tasks of one replica (or one ``--once`` run), and how they are run; see the module
    docstring. ``periods`` (seconds, None: not scheduled) feed the overdue check."""

    def __init__(
        self,
        db: Database,
        tasks: Mapping[str, Task],
        metrics_: MaintenanceMetrics,
        *,
        lock_stale_after: timedelta,
        periods: Mapping[str, float | None] | None = None,
        owner: str | None = None,
    ) -> None:
        self._db = db
        self.tasks = dict(tasks)
        self.metrics = metrics_
        self.owner = owner or worker_id()
        self._stale_after = lock_stale_after
        self.periods = dict(periods or {})
        self._stopping = asyncio.Event()
        self._started = time.time()

    def lock(self, task: str) -> JobLock:
        return JobLock(self._db, job_of(task), owner=self.owner, stale_after=self._stale_after)

    def stop(self) -> None:
        """Running tasks stop at their next checkpoint (the service is shutting down)."""
        self._stopping.set()

    async def run(
        self, task: str, *, progress: Progress | None = None, trigger: str = "schedule"
    ) -> TaskOutcome:
        """Run ``task`` under its lock and record it (see the module docstring)."""
        lock = self.lock(task)
        started = time.monotonic()
        try:
            grant = await lock.acquire()
            if grant is None:
                return self._finish(
                    TaskOutcome(task, metrics.SKIPPED, holder=await lock.state()), trigger
                )
        except PyMongoError as exc:
            return self._finish(_store_failure(task, exc, time.monotonic() - started), trigger)
        log.info(
            "maintenance.task_started",
            task=task,
            trigger=trigger,
            worker=self.owner,
            taken_from=grant.taken_from,
        )
        ctx = TaskContext(lock, progress=progress, stopping=self._stopping)
        error: str | None = None
        status = metrics.OK
        interrupted = False
        summary = ""
        counts: dict[str, object] = {}
        try:
            result = await self.tasks[task].run(ctx)
            summary, counts = result.summary, result.counts
        except (TaskFailedError, TaskInterruptedError, LockLostError) as exc:
            status, error = metrics.FAILED, str(exc)
            interrupted = isinstance(exc, TaskInterruptedError)
        except PyMongoError as exc:
            failure = _store_failure(task, exc, 0.0)
            status, error = failure.status, failure.error
        except Exception as exc:  # a bug: loud, recorded, and the next period tries again
            log.exception("maintenance.task_crashed", task=task)
            status, error = metrics.FAILED, f"crashed: {type(exc).__name__}: {exc}"[:500]
        seconds = time.monotonic() - started
        pass_ = {
            "trigger": trigger,
            "summary": summary or None,
            "counts": counts,
            "seconds": round(seconds, 3),
        }
        try:
            # A run cut short by a shutdown is not a failure of the task: not recorded.
            if not interrupted:
                await lock.record(ok=status == metrics.OK, error=error, summary=pass_)
            await lock.release()
        except PyMongoError as exc:
            log.warning("maintenance.record_failed", task=task, error=type(exc).__name__)
            if status == metrics.OK and is_transient(exc):
                status, error = metrics.UNREACHABLE, f"the run could not be recorded: {exc}"
        outcome = TaskOutcome(task, status, summary, error, seconds, taken_from=grant.taken_from)
        return self._finish(outcome, trigger)

    def _finish(self, outcome: TaskOutcome, trigger: str) -> TaskOutcome:
        self.metrics.runs.labels(outcome.task, outcome.status).inc()
        if outcome.status != metrics.SKIPPED:
            self.metrics.duration.labels(outcome.task).observe(outcome.seconds)
        if outcome.ok:
            self.metrics.last_success.labels(outcome.task).set(time.time())
            log.info(
                "maintenance.task_finished",
                task=outcome.task,
                trigger=trigger,
                seconds=round(outcome.seconds, 3),
                summary=outcome.summary,
            )
        elif outcome.status == metrics.SKIPPED:
            holder = outcome.holder.locked_by if outcome.holder else None
            log.info("maintenance.task_skipped", task=outcome.task, trigger=trigger, holder=holder)
        else:
            log.warning(
                "maintenance.task_failed",
                task=outcome.task,
                trigger=trigger,
                result=outcome.status,
                error=outcome.error,
            )
        return outcome

    async def states(self) -> dict[str, LockState]:
        """Every task's lock, by the store's clock; refreshes the last-success gauges."""
        cursor = await self._db[JOB_LOCKS].aggregate(
            [
                {"$match": {"_id": {"$in": [job_of(task) for task in self.tasks]}}},
                {"$set": {"storeNow": "$$NOW"}},
            ]
        )
        docs = {doc["_id"]: doc async for doc in cursor}
        now = datetime.now(UTC)
        states = {}
        for task in self.tasks:
            doc = docs.get(job_of(task))
            at = doc.pop("storeNow") if doc is not None else now
            states[task] = LockState.of(job_of(task), doc, at, self._stale_after)
            if states[task].last_success_at is not None:
                success = states[task].last_success_at
                assert success is not None
                self.metrics.last_success.labels(task).set(success.timestamp())
        return states

    async def refresh(self) -> None:
        """Every schedule tick: the last-success gauges and ``channels_by_status``."""
        await self.states()
        counts = dict.fromkeys(CHANNEL_STATUSES, 0)
        cursor = await self._db[CHANNELS].aggregate(
            [{"$group": {"_id": "$status", "n": {"$sum": 1}}}]
        )
        async for row in cursor:
            if row["_id"] in counts:
                counts[row["_id"]] = row["n"]
        for status, n in counts.items():
            self.metrics.channels.labels(status).set(n)

    async def probe(self) -> CheckResult:
        """Health: degraded when a scheduled task is overdue (no success for twice its period
        and a minute; since the service started, for a task that never succeeded)."""
        states = await self.states()
        now = time.time()
        overdue = []
        for task, every in self.periods.items():
            if every is None or task not in states:
                continue
            last = states[task].last_success_at
            since = last.timestamp() if last is not None else self._started
            if now - since > 2 * every + OVERDUE_GRACE_SECONDS:
                what = f"last success {now - since:.0f}s ago" if last else "no success yet"
                error = states[task].last_error
                overdue.append(
                    f"{task} ({what}, runs every {every:g}s"
                    + (f", last error: {error}" if error else "")
                    + ")"
                )
        if overdue:
            return CheckResult(status=Status.DEGRADED, detail="overdue: " + "; ".join(overdue))
        scheduled = sum(every is not None for every in self.periods.values())
        return CheckResult(status=Status.OK, detail=f"{scheduled} scheduled tasks on time")


def _store_failure(task: str, exc: PyMongoError, seconds: float) -> TaskOutcome:
    if is_transient(exc):
        return TaskOutcome(
            task,
            metrics.UNREACHABLE,
            error=f"the store is unreachable ({type(exc).__name__}); check MONGODB_URL",
            seconds=seconds,
        )
    return TaskOutcome(
        task,
        metrics.FAILED,
        error=f"store error: {type(exc).__name__}: {exc}"[:500],
        seconds=seconds,
    )


def build_tasks(settings: MaintenanceTaskSettings, resources: Resources) -> dict[str, Task]:
    """Every task over ``resources``, in :data:`TASKS` order."""
    db = resources.db
    alerts = Alerts(db)
    tasks: dict[str, Task] = {
        "retention": Retention(
            db,
            webhook_days=settings.maintenance_webhook_retention_days,
            alert_days=settings.maintenance_alert_retention_days,
            batch=settings.maintenance_retention_batch,
            pause_seconds=settings.maintenance_retention_pause_seconds,
        ),
        "stale_locks": StaleLocks(
            db,
            alerts,
            stale_after=timedelta(seconds=settings.maintenance_stale_lock_alert_seconds),
            failure_threshold=settings.maintenance_job_failure_threshold,
        ),
        "stuck_sends": StuckSends(
            db, alerts, stuck_after=timedelta(minutes=settings.maintenance_stuck_send_minutes)
        ),
        "channel_health": ChannelHealth(
            db,
            alerts,
            Channels(db, cipher=settings.token_cipher()),
            resources.cloud_api,
            quiet_after=timedelta(hours=settings.maintenance_channel_quiet_hours),
        ),
        "dead_letters": DeadLetters(db, alerts, resources.broker, resources.names),
        "alerts": AlertEvaluation(
            db,
            alerts,
            many_disconnected=settings.maintenance_many_channels_disconnected,
            window=timedelta(minutes=settings.maintenance_webhook_failure_window_minutes),
            spike_min=settings.maintenance_webhook_spike_min,
            spike_factor=settings.maintenance_webhook_spike_factor,
            health_urls=settings.health_urls,
            http=resources.http,
        ),
    }
    assert tuple(tasks) == TASKS, "build_tasks and settings.TASKS must list the same tasks"
    return tasks


def build_maintenance(
    settings: MaintenanceTaskSettings,
    resources: Resources,
    metrics_: MaintenanceMetrics,
    *,
    periods: Mapping[str, float | None] | None = None,
) -> Maintenance:
    """The runner of every task over ``resources`` (a service's, or a one-shot run's)."""
    return Maintenance(
        resources.db,
        build_tasks(settings, resources),
        metrics_,
        lock_stale_after=settings.lock_stale_after,
        periods=periods,
    )
