"""``webhook_events``: the ledger of every webhook body received, and its fate.

This module owns the shape of a ledger entry: the consumer records bodies and their fates
through it, the webhook logs page through it, and a replay selects bodies with a
:class:`LedgerFilter`.

An entry is written once, with its fate, after the body's content was written: one insert
per body, the least the store can do. Until then the body is only in the broker's queue (a
body that never gets an entry is still there, or in its dead-letter queue). A body seen
before (a redelivery, a replay) finds its entry: its attempt is counted and its fate
updated, except that a ``failed`` never overwrites a ``processed``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo import UpdateOne

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

    delivery: WebhookDelivery
    status: str
    phone_number_ids: list[str]
    error: dict[str, Any] | None = None

    @property
    def sha256(self) -> str:
        return self.delivery.sha256


class Ledger:
    def __init__(self, db: Database) -> None:
        self._events = db[WEBHOOK_EVENTS]

    async def processed_among(self, sha256s: Sequence[str]) -> set[str]:
        """Which of these bodies were processed already (one indexed read)."""
        if not sha256s:
            return set()
        found = self._events.find(
            {"sha256": {"$in": list(sha256s)}, "status": PROCESSED}, {"_id": 0, "sha256": 1}
        )
        return {doc["sha256"] async for doc in found}

    async def record(self, fates: Sequence[Fate]) -> None:
        """Write each body's entry with its fate: one insert for new bodies (the common
        case), an update for bodies seen before."""
        now = datetime.now(UTC)
        docs = [
            {
                "sha256": f.sha256,
                "request_id": f.delivery.request_id,
                "received_at": f.delivery.received_at,
                "body": f.delivery.body,
                "body_bytes": len(f.delivery.body),
                "status": f.status,
                "attempts": 1,
                "last_attempt_at": now,
                "finished_at": now,
                "phone_number_ids": f.phone_number_ids,
                "error": f.error,
            }
            for f in fates
        ]
        seen = [fates[i] for i in await insert_new(self._events, docs)]
        if seen:
            await self._events.bulk_write([_again(fate, now) for fate in seen], ordered=False)

    async def count_attempts(self, sha256s: Sequence[str]) -> None:
        """Count another delivery (each time a body is named) of bodies already recorded."""
        if not sha256s:
            return
        now = datetime.now(UTC)
        await self._events.bulk_write(
            [
                UpdateOne(
                    {"sha256": sha}, {"$inc": {"attempts": n}, "$set": {"last_attempt_at": now}}
                )
                for sha, n in Counter(sha256s).items()
            ],
            ordered=False,
        )

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


def _again(fate: Fate, now: datetime) -> UpdateOne:
    """The update of an entry that exists: count the attempt, record the fate; a failure
    never overwrites a success (a pipeline, so the condition is atomic)."""
    keep: dict[str, Any] = (
        {"$literal": False} if fate.status == PROCESSED else {"$eq": ["$status", PROCESSED]}
    )

    def chosen(field: str, value: Any) -> dict[str, Any]:
        return {"$cond": [keep, f"${field}", {"$literal": value}]}

    return UpdateOne(
        {"sha256": fate.sha256},
        [
            {
                "$set": {
                    "attempts": {"$add": [{"$ifNull": ["$attempts", 0]}, 1]},
                    "last_attempt_at": {"$literal": now},
                    "status": chosen("status", fate.status),
                    "phone_number_ids": chosen("phone_number_ids", fate.phone_number_ids),
                    "error": chosen("error", fate.error),
                    "finished_at": chosen("finished_at", now),
                }
            }
        ],
    )
