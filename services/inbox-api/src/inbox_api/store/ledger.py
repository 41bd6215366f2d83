"""``webhook_events``: the ledger of every webhook body received, and its fate."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument

from inbox_common.contracts.delivery import WebhookDelivery
from inbox_common.store.client import Database, Document
from inbox_common.store.schema import WEBHOOK_EVENTS

RECEIVED = "received"
PROCESSED = "processed"
FAILED = "failed"


class Ledger:
    def __init__(self, db: Database) -> None:
        self._events = db[WEBHOOK_EVENTS]

    async def receive(self, delivery: WebhookDelivery) -> Document:
        """Record a delivery (once per sha256) and count the attempt; returns the entry."""
        now = datetime.now(UTC)
        entry = await self._events.find_one_and_update(
            {"sha256": delivery.sha256},
            {
                "$setOnInsert": {
                    "sha256": delivery.sha256,
                    "request_id": delivery.request_id,
                    "received_at": delivery.received_at,
                    "body": delivery.body,
                    "body_bytes": len(delivery.body),
                    "status": RECEIVED,
                },
                "$inc": {"attempts": 1},
                "$set": {"last_attempt_at": now},
            },
            upsert=True,
            return_document=ReturnDocument.AFTER,
            projection={"body": 0},
        )
        if entry is None:
            # MongoDB always returns the document of an upsert with AFTER; SecantusDB may
            # answer racing upserts without it (the write is applied), so read it back.
            entry = await self._events.find_one({"sha256": delivery.sha256}, {"body": 0})
        assert entry is not None
        return entry

    async def finish(
        self,
        sha256: str,
        *,
        status: str,
        phone_number_ids: list[str],
        error: dict[str, Any] | None = None,
    ) -> None:
        update: dict[str, Any] = {
            "$set": {
                "status": status,
                "phone_number_ids": phone_number_ids,
                "finished_at": datetime.now(UTC),
                "error": error,
            }
        }
        await self._events.update_one({"sha256": sha256}, update)

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
