"""``stuck_sends``: outbound messages that should have moved on by now (P2, one alert per
tenant, so a tenant's admin sees their own).

Each state has its own clock (``inbox_common.store.outbound``):

- ``queued`` (its status is ``pending``) since ``created_at``: no sender took it;
- ``sending`` since ``sending_since``: its sender died during the call and no one claimed it;
- ``retrying`` since ``retry_due_at``: its retry came due and nothing brought it back.

``held`` is not stuck: its channel is disconnected, which has an alert of its own; nor is
``paused`` (its campaign waits for a resume). Nor is a ``queued`` message whose number has had
a send accepted by Meta since the bound: it waits in a backlog that moves (a campaign larger
than the number's rate times the bound, 72,000 messages at 80 a second for 15 minutes, or a
reply queued behind one), and the number's pace, not a fault, sets its wait. A number that
has sent nothing for the whole bound while messages wait is stuck. The evidence counts each
state and names the oldest messages; the run's summary counts the backlog too.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from inbox_common.alerts import AlertKind, Alerts, Finding
from inbox_common.store.client import Database
from inbox_common.store.collections import MESSAGES
from inbox_common.store.outbound import QUEUED, RETRYING, SENDING
from inbox_maintenance.tasks.context import TaskContext, TaskResult

# Each state, and the field it is measured from.
SINCE = {QUEUED: "created_at", SENDING: "sending_since", RETRYING: "retry_due_at"}
OLDEST = 5
KINDS = (AlertKind.SENDS_STUCK,)


class StuckSends:
    name = "stuck_sends"
    needs_broker = False

    def __init__(self, db: Database, alerts: Alerts, *, stuck_after: timedelta) -> None:
        self._messages = db[MESSAGES]
        self._alerts = alerts
        self._stuck_after = stuck_after

    async def run(self, ctx: TaskContext) -> TaskResult:
        cutoff = datetime.now(UTC) - self._stuck_after
        counts: dict[str | None, dict[str, int]] = defaultdict(dict)
        oldest: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
        moving = await self._numbers_sending_since(cutoff)
        backlog = 0
        for state, since in SINCE.items():
            await ctx.checkpoint()
            query: dict[str, Any] = {"send_state": state, since: {"$lt": cutoff}}
            if state == QUEUED and moving:
                backlog = await self._messages.count_documents(
                    {**query, "channel_id": {"$in": moving}}
                )
                query["channel_id"] = {"$nin": moving}
            grouped = await self._messages.aggregate(
                [{"$match": query}, {"$group": {"_id": "$tenant", "n": {"$sum": 1}}}]
            )
            async for group in grouped:
                tenant = group["_id"]
                counts[tenant][state] = int(group["n"])
                found = self._messages.find(
                    {**query, "tenant": tenant}, {"_id": 1, since: 1, "channel_id": 1}
                )
                async for doc in found.sort(since, 1).limit(OLDEST):
                    oldest[tenant].append(
                        {
                            "id": str(doc["_id"]),
                            "send_state": state,
                            "since": doc.get(since),
                            "channel_id": str(doc.get("channel_id")),
                        }
                    )
        minutes = self._stuck_after.total_seconds() / 60
        findings = []
        for tenant, by_state in counts.items():
            total = sum(by_state.values())
            detail = ", ".join(f"{n} {state}" for state, n in sorted(by_state.items()))
            ids = sorted(oldest[tenant], key=lambda m: m["since"])[:OLDEST]
            findings.append(
                Finding(
                    AlertKind.SENDS_STUCK,
                    title=f"{total} outbound messages stuck for over {minutes:g} minutes "
                    f"({detail}); check the senders (inbox-api) and the retry-worker",
                    tenant=tenant,
                    evidence={
                        "counts": by_state,
                        "total": total,
                        "oldest": ids,
                        "stuck_after_minutes": minutes,
                    },
                )
            )
        done = await self._alerts.reconcile(KINDS, findings, by="maintenance:stuck_sends")
        total = sum(sum(by_state.values()) for by_state in counts.values())
        return TaskResult(
            f"{total} stuck outbound messages in {len(counts)} tenants; {backlog} queued behind "
            f"numbers that are sending; {len(done.resolved)} alerts resolved",
            {
                "stuck": total,
                "tenants": len(counts),
                "backlog": backlog,
                "resolved": len(done.resolved),
            },
        )

    async def _numbers_sending_since(self, cutoff: datetime) -> list[Any]:
        """The channels with old ``queued`` messages that had a send accepted since
        ``cutoff`` (one indexed lookup per such channel)."""
        waiting = await self._messages.distinct(
            "channel_id", {"send_state": QUEUED, "created_at": {"$lt": cutoff}}
        )
        moving = []
        for channel_id in waiting:
            recent = {"channel_id": channel_id, "accepted_at": {"$gte": cutoff}}
            if await self._messages.find_one(recent, {"_id": 1}) is not None:
                moving.append(channel_id)
        return moving
