"""Campaigns as the API offers them: create, add recipients, start, pause, resume, cancel,
and the funnel.

The life of a campaign (statuses in ``inbox_common.store.campaigns``):

1. **Created**, with its recipients (a JSON list, a label of conversations, or a CSV added
   to a draft afterwards). Rows are checked one by one; a refused row is reported with its
   reason and the others are kept.
2. **Started**: ``running`` now, or ``scheduled`` until ``schedule_at`` (the scheduler,
   ``inbox_api.campaigns.fanout``, starts it then). Starting publishes the first fan-out job.
3. **Fanned out** a page at a time by the senders' shared queue: each page's messages are
   stored (``queued``) and their send jobs published to their number's queue, where the
   rate-aware sender takes them.
4. **Paused** (by an operator or a risk signal from Meta): the fan-out stops at its page, and
   every sender checks the campaign before it sends, so no new call starts; a message already
   handed to Meta goes on. **Resumed**: the waiting messages are queued again and the fan-out
   goes on from its cursor.
5. **Cancelled**: every message not yet sent is ``cancelled``; jobs still in queues or delay
   tiers find that and drop. **Completed** once every message has left the queues.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from bson import ObjectId

from inbox_api.campaigns.recipients import Report, RowChecker, csv_rows
from inbox_api.errors import ConflictError, NotFoundError
from inbox_api.outbound import OutboundService
from inbox_common.broker.publisher import ConfirmedPublisher, PublishFailedError
from inbox_common.broker.topology import OUTBOUND_ROUTING_KEY, Names
from inbox_common.http import ApiError
from inbox_common.logging import get_logger
from inbox_common.store import campaigns as states
from inbox_common.store.campaigns import Campaigns, Recipients
from inbox_common.store.channels import Channels
from inbox_common.store.client import Database, Document
from inbox_common.store.collections import CONVERSATIONS, MESSAGES
from inbox_common.store.outbound import (
    ACCEPTED,
    CANCELLED,
    FAILED,
    HELD,
    PAUSED,
    QUEUED,
    RETRYING,
    SENDING,
)

log = get_logger(__name__)

# Rows stored per write while recipients are added.
ROWS_PER_WRITE = 1000
# The funnel's buckets, in the order a message moves through them.
BUCKETS = (
    "queued",
    "sending",
    "retrying",
    "held",
    "paused",
    "accepted",
    "sent",
    "delivered",
    "read",
    "failed",
    "cancelled",
)
_STATE_BUCKETS = {QUEUED, SENDING, RETRYING, HELD, PAUSED, CANCELLED}
# Messages that have not left the queues: a campaign with none of them is complete.
WAITING = [QUEUED, SENDING, RETRYING, HELD, PAUSED]


def bucket_of(send_state: str | None, status: str | None) -> str:
    """Where a campaign's message stands in the funnel."""
    if send_state == FAILED or status == "failed":
        return "failed"
    if send_state in _STATE_BUCKETS:
        return str(send_state)
    if send_state == ACCEPTED and status in ("sent", "delivered", "read"):
        return str(status)
    return "accepted"  # Meta took it; no status webhook yet


def bucket_query(bucket: str) -> Document:
    """The messages of one funnel bucket (the inverse of :func:`bucket_of`)."""
    if bucket == "failed":
        return {"$or": [{"send_state": FAILED}, {"status": "failed"}]}
    if bucket in _STATE_BUCKETS:
        return {"send_state": bucket, "status": {"$ne": "failed"}}
    if bucket in ("sent", "delivered", "read"):
        return {"send_state": ACCEPTED, "status": bucket}
    if bucket == "accepted":
        return {"send_state": ACCEPTED, "status": {"$nin": ["sent", "delivered", "read", "failed"]}}
    raise ValueError(bucket)


def fanout_job(campaign_id: ObjectId, cursor: ObjectId | None) -> bytes:
    return orjson.dumps(
        {
            "kind": "campaign_page",
            "campaign_id": str(campaign_id),
            "cursor": None if cursor is None else str(cursor),
        }
    )


class CampaignService:
    def __init__(
        self,
        db: Database,
        channels: Channels,
        outbound: OutboundService,
        publisher: ConfirmedPublisher,
        names: Names,
    ) -> None:
        self.campaigns = Campaigns(db)
        self.recipients = Recipients(db)
        self._conversations = db[CONVERSATIONS]
        self._messages = db[MESSAGES]
        self._channels = channels
        self._outbound = outbound
        self._publisher = publisher
        self._names = names

    async def create(
        self,
        *,
        tenant: str,
        name: str,
        channel_id: ObjectId,
        template: dict[str, Any],
        created_by: str,
    ) -> Document:
        channel = await self._channels.get(channel_id, tenant)
        if channel is None:
            raise ApiError(
                422,
                "unknown_channel",
                f"no channel {channel_id} in this tenant: GET /api/channels lists them",
                {"field": "channel_id"},
            )
        now = datetime.now(UTC)
        doc: Document = {
            "_id": ObjectId(),
            "tenant": tenant,
            "name": name,
            "channel_id": channel_id,
            "phone_number_id": channel["phone_number_id"],
            "template": template,
            "status": states.DRAFT,
            "schedule_at": None,
            "recipients": 0,
            "fanout": {"cursor": None, "queued": 0, "done": False, "updated_at": now},
            "paused": None,
            "created_at": now,
            "created_by": created_by,
        }
        return await self.campaigns.create(doc)

    async def send_job(self, message_id: ObjectId, phone_number_id: str) -> None:
        """Publish the send job of one of a campaign's messages to its number's queue."""
        await self._outbound.send_job(message_id, phone_number_id)

    async def get(self, campaign_id: ObjectId, scope: str | None) -> Document:
        doc = await self.campaigns.get(campaign_id, scope=scope)
        if doc is None:
            raise NotFoundError("campaign", campaign_id)
        return doc

    # --- recipients -------------------------------------------------------------------

    async def add_rows(
        self, campaign: Document, rows: AsyncIterator[tuple[int, Any, Any]]
    ) -> Report:
        """Check and store ``(row number, wa_id, variables)`` rows, a write per
        :data:`ROWS_PER_WRITE`; only a draft takes recipients."""
        _require(campaign, (states.DRAFT,), "add recipients to")
        checker = RowChecker(campaign["template"].get("components", []))
        report = Report()
        batch: list[Document] = []
        async for number, wa_id, variables in rows:
            try:
                batch.append(checker.check(wa_id, variables))
            except ValueError as exc:
                report.refuse(number, str(exc), wa_id if isinstance(wa_id, str) else None)
                continue
            if len(batch) >= ROWS_PER_WRITE:
                await self._store(campaign, batch, report)
                batch = []
        await self._store(campaign, batch, report)
        return report

    async def _store(self, campaign: Document, batch: list[Document], report: Report) -> None:
        # The same number twice in one batch is one recipient (the first row's values).
        unique = list({row["wa_id"]: row for row in reversed(batch)}.values())[::-1]
        added = await self.recipients.add(campaign["_id"], campaign["tenant"], unique)
        report.accepted += added
        report.duplicates += len(batch) - added
        if added:
            await self.campaigns.count_recipients(campaign["_id"], added)

    async def add_csv(self, campaign: Document, lines: AsyncIterator[bytes]) -> Report:
        async def rows() -> AsyncIterator[tuple[int, Any, Any]]:
            async for number, cells in csv_rows(lines):
                yield number, cells.get("wa_id"), cells

        return await self.add_rows(campaign, rows())

    async def add_list(self, campaign: Document, recipients: Sequence[Any]) -> Report:
        async def rows() -> AsyncIterator[tuple[int, Any, Any]]:
            for number, row in enumerate(recipients, start=1):
                yield number, row.wa_id, row.variables

        return await self.add_rows(campaign, rows())

    async def add_label(self, campaign: Document, label: str) -> Report:
        """Every conversation of the campaign's channel with ``label`` (by its phone; a
        customer known only by a business-scoped user id is refused: Meta's templates to
        those are not sent by campaigns)."""
        conversations = self._conversations.find(
            {
                "tenant": campaign["tenant"],
                "channel_id": campaign["channel_id"],
                "labels": label,
                "merged_into": {"$exists": False},
            },
            {"wa_id": 1, "contact_name": 1, "name": 1},
        )

        async def rows() -> AsyncIterator[tuple[int, Any, Any]]:
            number = 0
            async for doc in conversations:
                number += 1
                yield number, doc.get("wa_id") or "", {}

        return await self.add_rows(campaign, rows())

    # --- life ---------------------------------------------------------------------------

    async def start(
        self, campaign: Document, schedule_at: datetime | None, *, now: datetime | None = None
    ) -> Document:
        """Draft → scheduled (``schedule_at`` in the future) or running (and its fan-out
        job published)."""
        _require(campaign, (states.DRAFT,), "start")
        if not campaign.get("recipients"):
            raise ApiError(
                409,
                "no_recipients",
                "the campaign has no recipients: add them with POST "
                f"/api/campaigns/{campaign['_id']}/recipients first",
            )
        now = now or datetime.now(UTC)
        if schedule_at is not None and schedule_at > now:
            moved = await self._move(
                campaign, (states.DRAFT,), states.SCHEDULED, {"schedule_at": schedule_at}
            )
            log.info("campaign.scheduled", campaign_id=str(campaign["_id"]), at=schedule_at)
            return moved
        return await self._run(campaign, (states.DRAFT,))

    async def _run(self, campaign: Document, from_: Sequence[str]) -> Document:
        moved = await self._move(
            campaign,
            from_,
            states.RUNNING,
            {"started_at": datetime.now(UTC), "fanout.updated_at": datetime.now(UTC)},
        )
        await self.kick(moved)
        log.info("campaign.started", campaign_id=str(campaign["_id"]))
        return moved

    async def start_due(self, campaign_id: ObjectId) -> bool:
        """The scheduler's start of a campaign whose ``schedule_at`` came; False when
        another replica started it (or it was paused or cancelled)."""
        campaign = await self.campaigns.get(campaign_id, scope=None)
        if campaign is None or campaign["status"] != states.SCHEDULED:
            return False
        try:
            await self._run(campaign, (states.SCHEDULED,))
        except ConflictError:
            return False
        return True

    async def kick(self, campaign: Document) -> None:
        """Publish the fan-out job of the campaign's next page (a duplicate is harmless:
        the page's compare-and-set on the cursor takes one). If the broker does not take it,
        the scheduler publishes it again once the fan-out has not moved for a while."""
        fanout = campaign.get("fanout") or {}
        if fanout.get("done"):
            return
        try:
            await self._publisher.publish(
                self._names.outbound_exchange,
                OUTBOUND_ROUTING_KEY,
                fanout_job(campaign["_id"], fanout.get("cursor")),
                message_id=f"campaign:{campaign['_id']}:{fanout.get('cursor')}",
                content_type="application/json",
            )
        except PublishFailedError as exc:
            log.warning("campaign.kick_failed", campaign_id=str(campaign["_id"]), error=str(exc))

    async def pause(self, campaign: Document, *, by: str) -> Document:
        if campaign["status"] == states.PAUSED:
            return campaign
        return await self._move(
            campaign,
            states.PAUSABLE,
            states.PAUSED,
            {
                "paused": {
                    "by": by,
                    "signal": None,
                    "reason": "paused by an operator",
                    "at": datetime.now(UTC),
                }
            },
        )

    async def resume(self, campaign: Document) -> Document:
        """Paused → running (or scheduled, if its time has not come): the messages waiting
        (queued, paused, held) are queued again and the fan-out goes on."""
        if campaign["status"] in (states.RUNNING, states.SCHEDULED):
            return campaign
        _require(campaign, (states.PAUSED,), "resume")
        schedule_at = campaign.get("schedule_at")
        if schedule_at is not None and schedule_at.tzinfo is None:
            schedule_at = schedule_at.replace(tzinfo=UTC)
        if not campaign.get("started_at") and schedule_at and schedule_at > datetime.now(UTC):
            return await self._move(campaign, (states.PAUSED,), states.SCHEDULED, {"paused": None})
        moved = await self._move(
            campaign,
            (states.PAUSED,),
            states.RUNNING,
            {"paused": None, "started_at": campaign.get("started_at") or datetime.now(UTC)},
        )
        requeued = await self.requeue_waiting(moved)
        await self.kick(moved)
        log.info("campaign.resumed", campaign_id=str(campaign["_id"]), requeued=requeued)
        return moved

    async def requeue_waiting(self, campaign: Document) -> int:
        """Queue again the campaign's messages that wait (paused → queued; queued and held
        get a new job: a duplicate job is harmless, the sender claims a message once)."""
        await self._messages.update_many(
            {"campaign_id": campaign["_id"], "send_state": PAUSED},
            {"$set": {"send_state": QUEUED}},
        )
        count = 0
        waiting = self._messages.find(
            {
                "campaign_id": campaign["_id"],
                "send_state": {"$in": [QUEUED, HELD]},
            },
            {"_id": 1},
        ).sort("_id", 1)
        async for doc in waiting:
            await self.send_job(doc["_id"], campaign["phone_number_id"])
            count += 1
        return count

    async def requeue_paused(self, campaign: Document) -> int:
        """Queue again the ``paused`` messages of a running campaign (a gate that read the
        campaign paused just before a resume marked them after its sweep); only those."""
        ids = [
            doc["_id"]
            async for doc in self._messages.find(
                {"campaign_id": campaign["_id"], "send_state": PAUSED}, {"_id": 1}
            )
        ]
        if not ids:
            return 0
        await self._messages.update_many(
            {"_id": {"$in": ids}, "send_state": PAUSED}, {"$set": {"send_state": QUEUED}}
        )
        for message_id in ids:
            await self.send_job(message_id, campaign["phone_number_id"])
        return len(ids)

    async def cancel(self, campaign: Document) -> tuple[Document, int]:
        """The end: every message not yet sent is cancelled (jobs still queued, or waiting
        in a delay tier, find it so and drop). Returns the campaign and how many messages
        were cancelled."""
        if campaign["status"] == states.CANCELLED:
            return campaign, 0
        moved = await self._move(
            campaign, states.CANCELLABLE, states.CANCELLED, {"cancelled_at": datetime.now(UTC)}
        )
        result = await self._messages.update_many(
            {
                "campaign_id": campaign["_id"],
                "send_state": {"$in": [QUEUED, RETRYING, HELD, PAUSED]},
            },
            {"$set": {"send_state": CANCELLED, "status": "cancelled"}},
        )
        log.info(
            "campaign.cancelled", campaign_id=str(campaign["_id"]), messages=result.modified_count
        )
        return moved, result.modified_count

    async def complete_if_done(self, campaign: Document) -> bool:
        """A running campaign whose every recipient is queued and whose every message left
        the queues is ``completed``."""
        waiting = await self._messages.find_one(
            {"campaign_id": campaign["_id"], "send_state": {"$in": WAITING}}, {"_id": 1}
        )
        if waiting is not None:
            return False
        moved = await self.campaigns.move(
            campaign["_id"],
            scope=None,
            from_=(states.RUNNING,),
            to=states.COMPLETED,
            fields={"completed_at": datetime.now(UTC)},
        )
        if moved is not None:
            log.info("campaign.completed", campaign_id=str(campaign["_id"]))
        return moved is not None

    async def _move(
        self, campaign: Document, from_: Sequence[str], to: str, fields: Document
    ) -> Document:
        moved = await self.campaigns.move(
            campaign["_id"], scope=campaign["tenant"], from_=from_, to=to, fields=fields
        )
        if moved is None:
            now = await self.campaigns.status(campaign["_id"], campaign["tenant"])
            raise ConflictError(
                f"the campaign is {now} now, so it cannot become {to}",
                {"status": now},
            )
        return moved

    # --- the funnel ------------------------------------------------------------------

    async def funnel(self, campaign: Document) -> dict[str, Any]:
        """How many of the campaign's recipients are in each bucket, Meta's failures grouped
        by code (with its title), and how many are not queued yet."""
        groups = await self._messages.aggregate(
            [
                {"$match": {"campaign_id": campaign["_id"]}},
                {
                    "$group": {
                        "_id": {
                            "send_state": "$send_state",
                            "status": "$status",
                            "code": "$error.code",
                            "title": "$error.title",
                        },
                        "count": {"$sum": 1},
                    }
                },
            ]
        )
        counts = dict.fromkeys(BUCKETS, 0)
        failures: dict[Any, dict[str, Any]] = {}
        total = 0
        async for group in groups:
            key = group["_id"]
            bucket = bucket_of(key.get("send_state"), key.get("status"))
            counts[bucket] += group["count"]
            total += group["count"]
            if bucket == "failed":
                code = key.get("code")
                entry = failures.setdefault(
                    code, {"code": code, "title": key.get("title"), "count": 0}
                )
                entry["count"] += group["count"]
                entry["title"] = entry["title"] or key.get("title")
        counts["not_queued"] = max(int(campaign.get("recipients") or 0) - total, 0)
        reached = {
            "sent": counts["sent"] + counts["delivered"] + counts["read"],
            "delivered": counts["delivered"] + counts["read"],
            "read": counts["read"],
        }
        return {
            "counts": counts,
            "reached": reached,
            "failed_by_code": sorted(failures.values(), key=lambda f: -f["count"]),
        }

    async def recipients_page(
        self,
        campaign: Document,
        *,
        bucket: str | None,
        code: int | None,
        after: ObjectId | None,
        limit: int,
    ) -> list[Document]:
        """The campaign's messages (one per recipient queued), in the order queued."""
        query: Document = {"campaign_id": campaign["_id"]}
        clauses: list[Document] = []
        if bucket is not None:
            clauses.append(bucket_query(bucket))
        if code is not None:
            clauses.append({"error.code": code})
        if after is not None:
            query["_id"] = {"$gt": after}
        if clauses:
            query["$and"] = clauses
        return await self._messages.find(query).sort("_id", 1).limit(limit).to_list()


def _require(campaign: Document, allowed: Sequence[str], action: str) -> None:
    if campaign["status"] not in allowed:
        raise ConflictError(
            f"cannot {action} a campaign that is {campaign['status']} (only "
            f"{' or '.join(allowed)})",
            {"status": campaign["status"]},
        )
