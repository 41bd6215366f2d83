"""Template campaigns in the store: the campaign, its recipients, its pauses.

A campaign (``campaigns``)::

    {_id, tenant, name, channel_id, phone_number_id, template: {name, language, components},
     status, schedule_at, created_at, created_by, recipients (how many are stored),
     fanout: {cursor, queued, done, updated_at}, paused: {by, signal, reason, at} | null,
     started_at, completed_at, cancelled_at}

Its ``status`` moves ``draft`` → ``scheduled`` or ``running`` → ``completed``, and
``running``/``scheduled`` ⇄ ``paused``; ``cancelled`` is the end from any state but
``completed``. Every move is a compare-and-set on the status, so two operators (or an
operator and a risk signal) racing end in one state, and the loser is told which.

Recipients (``campaign_recipients``) are one document each, unique per campaign and
``wa_id``: a recipient given twice is stored (and sent) once. The fan-out walks them in
``_id`` order, one page per job, and records its cursor with a compare-and-set on the cursor
it started from, so a page done twice (a redelivered job, a second fan-out chain) is written
once and queued at most twice (the sender's compare-and-set sends it once).

A campaign's messages are ordinary outbound ``messages`` carrying ``campaign_id``: the
senders and the retry-worker read the campaign's status before they send (paused: the
message waits; cancelled: it is cancelled), so a pause takes effect within one send.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import BulkWriteError

from inbox_common.alerts import AlertKind, Alerts
from inbox_common.store.client import Database, Document
from inbox_common.store.collections import CAMPAIGN_RECIPIENTS, CAMPAIGNS

DRAFT = "draft"
SCHEDULED = "scheduled"
RUNNING = "running"
PAUSED = "paused"
CANCELLED = "cancelled"
COMPLETED = "completed"
STATUSES = (DRAFT, SCHEDULED, RUNNING, PAUSED, CANCELLED, COMPLETED)
# The states a risk signal (or an operator) can pause.
PAUSABLE = (SCHEDULED, RUNNING)
# The states a cancel can end.
CANCELLABLE = (DRAFT, SCHEDULED, RUNNING, PAUSED)
DUPLICATE_KEY = 11000


def _scoped(query: Document, scope: str | None) -> Document:
    return query if scope is None else {**query, "tenant": scope}


class Campaigns:
    """The ``campaigns`` collection; ``scope`` is the reader's tenant (None: every tenant)."""

    def __init__(self, db: Database) -> None:
        self._campaigns = db[CAMPAIGNS]

    async def status(self, campaign_id: Any, tenant: str | None) -> str | None:
        """The campaign's status, or None when the tenant has no such campaign."""
        query: Document = {"_id": campaign_id}
        if tenant is not None:
            query["tenant"] = tenant  # a message never follows another tenant's campaign
        doc = await self._campaigns.find_one(query, {"status": 1})
        return None if doc is None else doc.get("status")

    async def create(self, doc: Document) -> Document:
        await self._campaigns.insert_one(doc)
        return doc

    async def get(self, campaign_id: ObjectId, *, scope: str | None) -> Document | None:
        return await self._campaigns.find_one(_scoped({"_id": campaign_id}, scope))

    async def page(
        self,
        *,
        scope: str | None,
        status: str | None = None,
        before: ObjectId | None = None,
        limit: int = 50,
    ) -> list[Document]:
        """Newest first."""
        query: Document = {}
        if status is not None:
            query["status"] = status
        if before is not None:
            query["_id"] = {"$lt": before}
        cursor = self._campaigns.find(_scoped(query, scope)).sort("_id", -1).limit(limit)
        return await cursor.to_list()

    async def move(
        self,
        campaign_id: ObjectId,
        *,
        scope: str | None,
        from_: Sequence[str],
        to: str,
        fields: Document | None = None,
    ) -> Document | None:
        """Compare-and-set the status from one of ``from_`` to ``to`` (with ``fields``);
        the campaign after, or None when it was in another state (or is not the scope's)."""
        return await self._campaigns.find_one_and_update(
            _scoped({"_id": campaign_id, "status": {"$in": list(from_)}}, scope),
            {"$set": {"status": to, **(fields or {})}},
            return_document=ReturnDocument.AFTER,
        )

    async def count_recipients(self, campaign_id: ObjectId, added: int) -> None:
        await self._campaigns.update_one({"_id": campaign_id}, {"$inc": {"recipients": added}})

    async def advance(
        self, campaign_id: ObjectId, *, cursor: ObjectId | None, to: ObjectId | None, queued: int
    ) -> bool:
        """Record a page of the fan-out: the cursor moves from ``cursor`` to ``to`` (None:
        the last page is done). False when another job moved it first (this page was
        done)."""
        now = datetime.now(UTC)
        fields: Document = {"fanout.updated_at": now}
        if to is None:
            fields["fanout.done"] = True
        else:
            fields["fanout.cursor"] = to
        result = await self._campaigns.update_one(
            {"_id": campaign_id, "fanout.cursor": cursor, "fanout.done": False},
            {"$set": fields, "$inc": {"fanout.queued": queued}},
        )
        return bool(result.modified_count)

    async def due(self, now: datetime, limit: int = 100) -> list[Document]:
        """Scheduled campaigns whose time has come."""
        cursor = self._campaigns.find(
            {"status": SCHEDULED, "schedule_at": {"$lte": now}}, {"_id": 1, "tenant": 1}
        ).limit(limit)
        return await cursor.to_list()

    async def stalled(self, before: datetime, limit: int = 100) -> list[Document]:
        """Running campaigns whose fan-out has not moved since ``before`` (its job was lost:
        a publish that failed after the campaign started)."""
        cursor = self._campaigns.find(
            {"status": RUNNING, "fanout.done": False, "fanout.updated_at": {"$lt": before}}
        ).limit(limit)
        return await cursor.to_list()

    async def fanned_out(self, limit: int = 100) -> list[Document]:
        """Running campaigns whose every recipient is queued (candidates for completion)."""
        cursor = self._campaigns.find({"status": RUNNING, "fanout.done": True}).limit(limit)
        return await cursor.to_list()

    async def auto_pause(
        self, query: Document, *, signal: str, reason: str, alerts: Alerts
    ) -> list[Document]:
        """Pause every scheduled or running campaign matching ``query`` because Meta sent a
        risk signal (``signal``: an error code or a webhook's event), and raise one alert
        per campaign paused. Returns the campaigns paused."""
        paused = []
        now = datetime.now(UTC)
        candidates = await self._campaigns.find(
            {**query, "status": {"$in": list(PAUSABLE)}}, {"_id": 1}
        ).to_list()
        for doc in candidates:
            moved = await self.move(
                doc["_id"],
                scope=None,
                from_=PAUSABLE,
                to=PAUSED,
                fields={"paused": {"by": "auto", "signal": signal, "reason": reason, "at": now}},
            )
            if moved is None:
                continue  # paused, cancelled or done meanwhile
            paused.append(moved)
            await alerts.raise_alert(
                AlertKind.CAMPAIGN_PAUSED,
                title=f"campaign {moved.get('name') or moved['_id']} paused: {reason}"[:300],
                subject=str(moved["_id"]),
                tenant=moved["tenant"],
                evidence={
                    "campaign_id": str(moved["_id"]),
                    "channel_id": str(moved["channel_id"]),
                    "signal": signal,
                    "reason": reason,
                },
            )
        return paused


class Recipients:
    """The ``campaign_recipients`` collection."""

    def __init__(self, db: Database) -> None:
        self._recipients = db[CAMPAIGN_RECIPIENTS]

    async def add(self, campaign_id: ObjectId, tenant: str, rows: Sequence[Document]) -> int:
        """Store ``rows`` (``{wa_id, variables}``); returns how many were new (a recipient
        already stored for the campaign is kept as it is)."""
        if not rows:
            return 0
        docs = [
            {"_id": ObjectId(), "campaign_id": campaign_id, "tenant": tenant, **row} for row in rows
        ]
        try:
            result = await self._recipients.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            return len(docs) - len(errors)
        return len(result.inserted_ids)

    async def after(
        self, campaign_id: ObjectId, cursor: ObjectId | None, limit: int
    ) -> list[Document]:
        """The next page of recipients, in ``_id`` order after ``cursor``."""
        query: Document = {"campaign_id": campaign_id}
        if cursor is not None:
            query["_id"] = {"$gt": cursor}
        return await self._recipients.find(query).sort("_id", 1).limit(limit).to_list()
