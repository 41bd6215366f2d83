"""``retention``: delete processed webhook events and resolved alerts past their retention.

**Never a long write.** The store serves the API and the consumers meanwhile, so a purge is
a series of small deletes: read the ids of at most ``batch`` documents (an indexed read),
delete exactly those (with the condition again, so a document that changed in between
stays), then pause before the next batch. Each batch is short whatever the backlog; the lock
is renewed between batches. A run stops after :data:`RUN_BUDGET_SECONDS` and leaves the rest
to the next run, so a task message is always settled well within RabbitMQ's consumer
timeout (30 minutes by default).

Failed webhook events are not this task's: they stay for replays until the ledger's TTL
index removes every event 30 days after receipt.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from inbox_common.alerts import resolved_before
from inbox_common.store.client import Database, Document
from inbox_common.store.collections import ALERTS, WEBHOOK_EVENTS
from inbox_common.store.ledger import PROCESSED
from inbox_maintenance.tasks.context import TaskContext, TaskResult

RUN_BUDGET_SECONDS = 600.0


class Retention:
    name = "retention"
    needs_broker = False

    def __init__(
        self,
        db: Database,
        *,
        webhook_days: int,
        alert_days: int,
        batch: int,
        pause_seconds: float,
        budget_seconds: float = RUN_BUDGET_SECONDS,
    ) -> None:
        self._db = db
        self._webhook_age = timedelta(days=webhook_days)
        self._alert_age = timedelta(days=alert_days)
        self._batch = batch
        self._pause = pause_seconds
        self._budget = budget_seconds

    async def run(self, ctx: TaskContext) -> TaskResult:
        now = datetime.now(UTC)
        deadline = time.monotonic() + self._budget
        events, event_batches, events_done = await self._purge(
            ctx,
            WEBHOOK_EVENTS,
            {"status": PROCESSED, "received_at": {"$lt": now - self._webhook_age}},
            "processed webhook events",
            deadline,
        )
        alerts, alert_batches, alerts_done = await self._purge(
            ctx, ALERTS, resolved_before(now - self._alert_age), "resolved alerts", deadline
        )
        summary = (
            f"deleted {events} processed webhook events older than {self._webhook_age.days} "
            f"days and {alerts} resolved alerts older than {self._alert_age.days} days, in "
            f"{event_batches + alert_batches} batches of at most {self._batch}"
        )
        if not (events_done and alerts_done):
            summary += f"; stopped after {self._budget:g}s, the next run deletes the rest"
        return TaskResult(
            summary,
            {
                "webhook_events_deleted": events,
                "alerts_deleted": alerts,
                "batches": event_batches + alert_batches,
                "complete": events_done and alerts_done,
            },
        )

    async def _purge(
        self, ctx: TaskContext, collection: str, query: Document, what: str, deadline: float
    ) -> tuple[int, int, bool]:
        """Delete what ``query`` selects, batch by batch; (deleted, batches, finished)."""
        documents = self._db[collection]
        deleted = batches = 0
        while True:
            await ctx.checkpoint()
            if time.monotonic() > deadline:
                return deleted, batches, False
            ids = [doc["_id"] async for doc in documents.find(query, {"_id": 1}).limit(self._batch)]
            if not ids:
                return deleted, batches, True
            result = await documents.delete_many({"_id": {"$in": ids}, **query})
            deleted += result.deleted_count
            batches += 1
            ctx.say(f"batch {batches}: deleted {deleted} {what} so far")
            if len(ids) < self._batch:
                return deleted, batches, True
            await asyncio.sleep(self._pause)
