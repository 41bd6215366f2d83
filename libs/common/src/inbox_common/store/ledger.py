"""``webhook_events``: the ledger of every webhook body received, and its fate.

This module owns the shape of a ledger entry: the consumer records bodies and their fates
through it, the webhook logs page through it, and a replay selects bodies with a
:class:`LedgerFilter`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from bson import ObjectId
from pymongo import UpdateMany, UpdateOne

from inbox_common.contracts.delivery import WebhookDelivery
from inbox_common.store.bulk import insert_new
from inbox_common.store.client import Database, Document
from inbox_common.store.schema import WEBHOOK_EVENTS

RECEIVED = "received"
PROCESSED = "processed"
FAILED = "failed"


@dataclass(frozen=True, slots=True)
class LedgerFilter:
    """Which entries to select for a replay; ``processed`` ones are never replayed."""

    status: str = FAILED
    error_code: str | None = None
    phone_number_id: str | None = None
    since: datetime | None = None
    limit: int = 1000

    def __post_init__(self) -> None:
        if self.status not in (FAILED, RECEIVED):
            raise ValueError("only failed or received events can be replayed")

    def query(self) -> dict[str, Any]:
        query: dict[str, Any] = {"status": self.status}
        if self.error_code:
            query["error.code"] = self.error_code
        if self.phone_number_id:
            query["phone_number_ids"] = self.phone_number_id
        if self.since:
            query["received_at"] = {"$gte": self.since}
        return query


@dataclass(frozen=True, slots=True)
class Fate:
    """What became of one body: ``processed`` or ``failed`` (with the error)."""

    sha256: str
    status: str
    phone_number_ids: list[str]
    error: dict[str, Any] | None = None


class Ledger:
    def __init__(self, db: Database) -> None:
        self._events = db[WEBHOOK_EVENTS]

    async def receive_many(self, deliveries: Sequence[WebhookDelivery]) -> dict[str, str]:
        """Record each delivery (once per sha256), count the attempt; returns each status.

        New bodies (the common case) cost one insert; a body seen before has its attempt
        counted and its status read.
        """
        now = datetime.now(UTC)
        docs = [
            {
                "sha256": d.sha256,
                "request_id": d.request_id,
                "received_at": d.received_at,
                "body": d.body,
                "body_bytes": len(d.body),
                "status": RECEIVED,
                "attempts": 1,
                "last_attempt_at": now,
            }
            for d in deliveries
        ]
        seen = [deliveries[i].sha256 for i in await insert_new(self._events, docs)]
        statuses = {d.sha256: RECEIVED for d in deliveries}
        if seen:
            attempt = {"$inc": {"attempts": 1}, "$set": {"last_attempt_at": now}}
            again = [UpdateOne({"sha256": sha}, attempt) for sha in seen]
            await self._events.bulk_write(again, ordered=False)
            found = self._events.find({"sha256": {"$in": seen}}, {"sha256": 1, "status": 1})
            statuses.update({doc["sha256"]: doc["status"] async for doc in found})
        return statuses

    async def finish_many(self, fates: Sequence[Fate]) -> None:
        """Record each body's fate; bodies with the same fate share one update."""
        now = datetime.now(UTC)
        groups: dict[bytes, tuple[Fate, list[str]]] = {}
        for fate in fates:
            key = orjson.dumps([fate.status, fate.phone_number_ids, fate.error])
            groups.setdefault(key, (fate, []))[1].append(fate.sha256)
        ops = [
            UpdateMany(
                {"sha256": {"$in": shas}},
                {
                    "$set": {
                        "status": fate.status,
                        "phone_number_ids": fate.phone_number_ids,
                        "finished_at": now,
                        "error": fate.error,
                    }
                },
            )
            for fate, shas in groups.values()
        ]
        if ops:
            await self._events.bulk_write(ops, ordered=False)

    async def refuse(self, sha256: str, error: dict[str, Any]) -> bool:
        """Mark an entry failed; False when there is no entry to mark."""
        result = await self._events.update_one(
            {"sha256": sha256},
            {"$set": {"status": FAILED, "error": error, "finished_at": datetime.now(UTC)}},
        )
        return result.matched_count == 1

    async def page(
        self,
        *,
        status: str | None,
        phone_number_ids: list[str] | None,
        before: ObjectId | None,
        limit: int,
    ) -> list[Document]:
        """Newest first; ``phone_number_ids`` None means every tenant (superadmin)."""
        query: dict[str, Any] = {}
        if status:
            query["status"] = status
        if phone_number_ids is not None:
            query["phone_number_ids"] = {"$in": phone_number_ids}
        if before is not None:
            query["_id"] = {"$lt": before}
        cursor = self._events.find(query, {"body": 0}).sort("_id", -1).limit(limit)
        return await cursor.to_list()

    async def get(self, event_id: ObjectId) -> Document | None:
        return await self._events.find_one({"_id": event_id})

    async def count(self, selection: LedgerFilter) -> int:
        return await self._events.count_documents(selection.query(), limit=selection.limit)

    async def deliveries(self, selection: LedgerFilter) -> AsyncIterator[WebhookDelivery]:
        """The selected bodies as they were received, oldest first."""
        cursor = (
            self._events.find(
                selection.query(), {"sha256": 1, "request_id": 1, "received_at": 1, "body": 1}
            )
            .sort("received_at", 1)
            .limit(selection.limit)
        )
        async for entry in cursor:
            yield WebhookDelivery(
                sha256=entry["sha256"],
                request_id=entry.get("request_id") or "",
                received_at=entry["received_at"],
                body=bytes(entry["body"]),
            )
