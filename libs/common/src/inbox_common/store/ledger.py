"""``webhook_events``: the ledger of every webhook body received, and its fate.

This module owns the shape of a ledger entry: the consumer records bodies and their fates
through it, and the webhook logs and the replays select entries with a :class:`LedgerFilter`
(the same filter for both, so a replay takes exactly what the listing showed).

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
from inbox_common.tracing import trace_id_of

RECEIVED = "received"
PROCESSED = "processed"
FAILED = "failed"
STATUSES = (RECEIVED, PROCESSED, FAILED)
# What a replay by filter may select: a processed body has nothing left to apply.
REPLAYABLE = (FAILED, RECEIVED)


@dataclass(frozen=True, slots=True)
class LedgerFilter:
    """Which entries to select: by status (``None``: any), error code, number and time of
    receipt, within the numbers the reader may see.

    ``within`` is a tenant admin's numbers: an entry is theirs when it names one of them (an
    empty tuple selects nothing). ``None`` (a superadmin, an operator) selects every entry,
    those that name no number (a body that is not JSON) included. ``phone_number_id``
    narrows the selection to one number, never beyond ``within``.
    """

    status: str | None = FAILED
    error_code: str | None = None
    phone_number_id: str | None = None
    since: datetime | None = None
    within: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")

    @property
    def replayable(self) -> bool:
        """Whether a replay may take this selection (failed or received entries only)."""
        return self.status in REPLAYABLE

    def numbers(self) -> tuple[str, ...] | None:
        """The numbers an entry must name one of (``None``: any, or none)."""
        if self.phone_number_id is None:
            return self.within
        if self.within is None or self.phone_number_id in self.within:
            return (self.phone_number_id,)
        return ()

    def query(self) -> dict[str, Any]:
        query: dict[str, Any] = {}
        if self.status:
            query["status"] = self.status
        if self.error_code:
            query["error.code"] = self.error_code
        numbers = self.numbers()
        if numbers is not None:
            query["phone_number_ids"] = {"$in": list(numbers)}
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
                "trace_id": trace_id_of(f.delivery.traceparent),
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
        self, selection: LedgerFilter, *, before: ObjectId | None, limit: int
    ) -> list[Document]:
        """The selected entries without their bodies, newest first, from before ``before``."""
        query = selection.query()
        if before is not None:
            query["_id"] = {"$lt": before}
        cursor = self._events.find(query, {"body": 0}).sort("_id", -1).limit(limit)
        return await cursor.to_list()

    async def reasons(self, selection: LedgerFilter) -> dict[str, int]:
        """How many of the selected entries failed, by error code (most first); only failed
        entries have one, so a selection of another status counts none."""
        if selection.status not in (None, FAILED):
            return {}
        match = {**selection.query(), "status": FAILED}
        cursor = await self._events.aggregate(
            [{"$match": match}, {"$group": {"_id": "$error.code", "n": {"$sum": 1}}}]
        )
        counts = {str(doc["_id"]): int(doc["n"]) async for doc in cursor if doc["_id"]}
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    async def get(self, event_id: ObjectId) -> Document | None:
        return await self._events.find_one({"_id": event_id})

    async def count(self, selection: LedgerFilter, *, limit: int | None = None) -> int:
        """How many entries the selection holds (at most ``limit``, when given)."""
        if limit is None:
            return await self._events.count_documents(selection.query())
        return await self._events.count_documents(selection.query(), limit=limit)

    async def deliveries(
        self, selection: LedgerFilter, *, limit: int
    ) -> AsyncIterator[WebhookDelivery]:
        """The selected bodies as they were received, oldest first, at most ``limit``."""
        cursor = (
            self._events.find(
                selection.query(), {"sha256": 1, "request_id": 1, "received_at": 1, "body": 1}
            )
            .sort("received_at", 1)
            .limit(limit)
        )
        async for entry in cursor:
            yield entry_delivery(entry)


def entry_delivery(entry: Document) -> WebhookDelivery:
    """A ledger entry's body as webhook-ingest handed it on: the same bytes, sha256, request
    id and time of receipt."""
    return WebhookDelivery(
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
