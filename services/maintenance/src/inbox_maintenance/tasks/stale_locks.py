"""``stale_locks``: the job locks whose holder stopped renewing them, and the jobs that keep
failing (the runbook's ``isStaleLock`` and ``consecutiveFailures``): P1 alerts.

A stale lock is only reported. It still belongs to the worker that held it until another
worker of that job takes it over, by compare-and-set on the same document
(``inbox_common.jobs``): deleting it here could hand the job to two live workers, should its
holder be slow rather than dead. Staleness is judged by the store's clock, as the job locks
themselves judge it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from inbox_common.alerts import AlertKind, Alerts, Finding
from inbox_common.jobs import LockState
from inbox_common.store.client import Database
from inbox_common.store.collections import JOB_LOCKS
from inbox_maintenance.tasks.context import TaskContext, TaskResult

KINDS = (AlertKind.JOB_LOCK_STALE, AlertKind.JOB_FAILING)


class StaleLocks:
    name = "stale_locks"
    needs_broker = False

    def __init__(
        self, db: Database, alerts: Alerts, *, stale_after: timedelta, failure_threshold: int
    ) -> None:
        self._locks = db[JOB_LOCKS]
        self._alerts = alerts
        self._stale_after = stale_after
        self._threshold = failure_threshold

    async def run(self, ctx: TaskContext) -> TaskResult:
        cursor = await self._locks.aggregate([{"$set": {"storeNow": "$$NOW"}}])
        states = []
        async for doc in cursor:
            now = doc.pop("storeNow")
            states.append(LockState.of(str(doc["_id"]), doc, now, self._stale_after))
        findings = []
        for state in states:
            if state.is_stale:
                findings.append(self._stale(state))
            if state.consecutive_failures >= self._threshold:
                findings.append(self._failing(state))
        await ctx.checkpoint()
        done = await self._alerts.reconcile(KINDS, findings, by="maintenance:stale_locks")
        stale = sum(f.kind is AlertKind.JOB_LOCK_STALE for f in findings)
        failing = len(findings) - stale
        return TaskResult(
            f"{len(states)} job locks: {stale} stale, {failing} failing repeatedly; "
            f"{len(done.resolved)} alerts resolved",
            {
                "locks": len(states),
                "stale": stale,
                "failing": failing,
                "resolved": len(done.resolved),
            },
        )

    def _stale(self, state: LockState) -> Finding:
        age = state.heartbeat_age
        beat = "never renewed it" if age is None else f"has not renewed it for {age:.0f}s"
        return Finding(
            AlertKind.JOB_LOCK_STALE,
            title=f"the {state.job} lock is stale: {state.locked_by} {beat} (stale after "
            f"{self._stale_after.total_seconds():g}s); restart that worker, or run the job once",
            subject=state.job,
            evidence=_evidence(state),
        )

    def _failing(self, state: LockState) -> Finding:
        return Finding(
            AlertKind.JOB_FAILING,
            title=f"{state.job} failed {state.consecutive_failures} times in a row "
            f"(last error: {state.last_error or 'none recorded'})",
            subject=state.job,
            evidence=_evidence(state),
        )


def _evidence(state: LockState) -> dict[str, Any]:
    document = state.document()
    return {
        key: document[key]
        for key in (
            "job",
            "lockedBy",
            "lockedAt",
            "heartbeatAt",
            "isStaleLock",
            "heartbeatAgeSeconds",
            "staleAfterSeconds",
            "consecutiveFailures",
            "lastSuccessAt",
            "lastError",
            "checkedAt",
        )
    }
