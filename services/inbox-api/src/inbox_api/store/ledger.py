"""``webhook_events``: the ledger of every webhook body received, and its fate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from bson import ObjectId
from pymongo import UpdateMany, UpdateOne

from inbox_api.store.bulk import insert_new
from inbox_common.contracts.delivery import WebhookDelivery
from inbox_common.store.client import Database, Document
from inbox_common.store.schema import WEBHOOK_EVENTS

RECEIVED = "received"
PROCESSED = "processed"
FAILED = "failed"


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

    async def receive(self, delivery: WebhookDelivery) -> Document:
        """Record one delivery; returns its entry (without the body)."""
        await self.receive_many([delivery])
        entry = await self._events.find_one({"sha256": delivery.sha256}, {"body": 0})
        assert entry is not None  # just written
        return entry

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

    async def finish(
        self,
        sha256: str,
        *,
        status: str,
        phone_number_ids: list[str],
        error: dict[str, Any] | None = None,
    ) -> None:
        await self.finish_many([Fate(sha256, status, phone_number_ids, error)])

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
