"""Outbound messages: stored before they are sent, and every step of their sending.

A message the inbox sends is a ``messages`` document from the moment the agent asks for it
(``direction: outbound``), keyed by its own ``_id`` (our message id) and, until Meta gives it
one, a local wamid (``local:<_id>``, so the unique ``wamid`` index holds). Its ``send_state``:

- ``queued``: stored and published to ``wa.outbound``;
- ``sending``: a sender called (or is calling) the Cloud API, since ``sending_since``;
- ``accepted``: Meta answered with the wamid (or a status webhook carrying our id proved it);
- ``retrying``: a retryable failure; it waits in a delay tier (``next_tier``, ``attempts``);
- ``held``: its channel is disconnected; it is sent again when the channel reconnects;
- ``failed``: Meta refused it for good (``error``: Meta's code, title and details).

Every transition is a conditional update (compare-and-set on the state), so two senders
holding the same message (a redelivery) cannot both call the Cloud API for it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from inbox_common.store.client import Database, Document
from inbox_common.store.schema import MESSAGES
from inbox_common.whatsapp.errors import CloudApiError

QUEUED = "queued"
SENDING = "sending"
ACCEPTED = "accepted"
RETRYING = "retrying"
HELD = "held"
FAILED = "failed"
# A campaign's message whose campaign was paused (its resume queues it again) or cancelled.
PAUSED = "paused"
CANCELLED = "cancelled"
LOCAL = "local:"
CALLBACK = "inbox:"


def local_wamid(message_id: ObjectId) -> str:
    return f"{LOCAL}{message_id}"


def callback_data(message_id: ObjectId) -> str:
    """What the sender gives Meta as ``biz_opaque_callback_data``: Meta echoes it in every
    status webhook of the message, which finds the message even before its wamid is
    recorded."""
    return f"{CALLBACK}{message_id}"


def message_of_callback(data: str | None) -> ObjectId | None:
    if not data or not data.startswith(CALLBACK):
        return None
    try:
        return ObjectId(data[len(CALLBACK) :])
    except (InvalidId, TypeError):
        return None


def error_record(error: CloudApiError) -> dict[str, Any]:
    """What a message keeps of a Cloud API failure (never a token: the client puts none in
    its errors)."""
    return {
        "code": error.code,
        "title": error.title,
        "message": error.meta_message or error.message,
        "details": error.details,
        "reason": error.reason,
        "fbtrace_id": error.fbtrace_id,
    }


class Outbound:
    def __init__(self, db: Database) -> None:
        self._messages = db[MESSAGES]

    async def store(self, doc: Document) -> tuple[Document, bool]:
        """Insert a new outbound message; with an idempotency key already used, return the
        message stored under it instead. Returns (the message, whether it is new)."""
        try:
            await self._messages.insert_one(doc)
        except DuplicateKeyError:
            existing = await self._messages.find_one({"idempotency_key": doc["idempotency_key"]})
            if existing is None:
                raise
            return existing, False
        return doc, True

    async def get(self, message_id: ObjectId) -> Document | None:
        return await self._messages.find_one({"_id": message_id, "direction": "outbound"})

    async def begin_sending(
        self, message_id: ObjectId, *, stale_after: timedelta
    ) -> Document | None:
        """Claim the message for one Cloud API call: only from ``queued``, ``retrying`` or
        ``held``, or from a ``sending`` older than ``stale_after`` (its sender died, and no
        status webhook proved that Meta got it); returns the claimed message, or None."""
        now = datetime.now(UTC)
        return await self._messages.find_one_and_update(
            {
                "_id": message_id,
                "$or": [
                    {"send_state": {"$in": [QUEUED, RETRYING, HELD]}},
                    {"send_state": SENDING, "sending_since": {"$lt": now - stale_after}},
                ],
            },
            {"$set": {"send_state": SENDING, "sending_since": now}, "$inc": {"attempts": 1}},
            return_document=ReturnDocument.AFTER,
        )

    async def accepted(self, message_id: ObjectId, wamid: str) -> None:
        """Meta answered with ``wamid``: the message is sent (it cannot go back)."""
        try:
            await self._accepted(message_id, wamid)
        except DuplicateKeyError:
            # A status without our callback data stored the wamid first, on a placeholder:
            # keep ours under its local id and say which wamid it is.
            await self._messages.update_one(
                {"_id": message_id},
                {"$set": {"send_state": ACCEPTED, "wamid_conflict": wamid}},
            )

    async def _accepted(self, message_id: ObjectId, wamid: str) -> None:
        await self._messages.update_one(
            {"_id": message_id, "send_state": {"$ne": FAILED}},
            [
                {
                    "$set": {
                        "send_state": {"$literal": ACCEPTED},
                        "accepted_at": {
                            "$ifNull": ["$accepted_at", {"$literal": datetime.now(UTC)}]
                        },
                        # A status webhook may have recorded it first: the same wamid.
                        "wamid": {"$literal": wamid},
                    }
                }
            ],
        )

    async def retrying(
        self, message_id: ObjectId, *, tier: str, due_at: datetime, error: dict[str, Any]
    ) -> None:
        """A retryable failure: the message waits in ``tier`` until ``due_at``."""
        await self._messages.update_one(
            {"_id": message_id, "send_state": SENDING},
            {
                "$set": {
                    "send_state": RETRYING,
                    "next_tier": tier,
                    "retry_due_at": due_at,
                    "last_error": error,
                }
            },
        )

    async def still_sending(self, message_id: ObjectId, *, error: dict[str, Any]) -> None:
        """The call's outcome is unknown (a timeout): keep ``sending``, so the next attempt
        first waits for a status webhook that would prove Meta got it."""
        await self._messages.update_one(
            {"_id": message_id, "send_state": SENDING}, {"$set": {"last_error": error}}
        )

    async def held(self, message_id: ObjectId, *, reason: str) -> None:
        await self._messages.update_one(
            {"_id": message_id, "send_state": {"$in": [SENDING, QUEUED, RETRYING]}},
            {"$set": {"send_state": HELD, "held_reason": reason}},
        )

    async def failed(self, message_id: ObjectId, *, error: dict[str, Any]) -> None:
        """Meta refused it for good: send_state and status say failed, with Meta's error."""
        await self._messages.update_one(
            {"_id": message_id, "send_state": {"$nin": [ACCEPTED, FAILED]}},
            [
                {
                    "$set": {
                        "send_state": {"$literal": FAILED},
                        "error": {"$literal": error},
                        "status": {
                            "$cond": [
                                {"$lt": [{"$ifNull": ["$status_rank", 0]}, 2]},
                                {"$literal": "failed"},
                                "$status",
                            ]
                        },
                        "status_rank": {"$max": [{"$ifNull": ["$status_rank", 0]}, 2]},
                    }
                }
            ],
        )

    async def possible_duplicate(self, message_id: ObjectId) -> None:
        await self._messages.update_one({"_id": message_id}, {"$set": {"possible_duplicate": True}})

    async def held_of(self, channel_id: ObjectId) -> list[ObjectId]:
        """The messages held for a channel (to send again once it reconnects)."""
        docs = self._messages.find({"channel_id": channel_id, "send_state": HELD}, {"_id": 1})
        return [doc["_id"] async for doc in docs]

    async def cancel(self, message_id: ObjectId) -> bool:
        """Its campaign was cancelled: a message that has not reached Meta (``queued``,
        ``retrying``, ``held`` or ``paused``) is ``cancelled``, and so is its status. False
        when it is in another state (being sent, or done)."""
        result = await self._messages.update_one(
            {"_id": message_id, "send_state": {"$in": [QUEUED, RETRYING, HELD, PAUSED]}},
            {"$set": {"send_state": CANCELLED, "status": "cancelled"}},
        )
        return bool(result.matched_count)

    async def pause(self, message_id: ObjectId) -> bool:
        """Its campaign was paused: a message that has not reached Meta waits as ``paused``
        until the campaign's resume queues it again. False when it is in another state."""
        result = await self._messages.update_one(
            {"_id": message_id, "send_state": {"$in": [QUEUED, RETRYING, HELD, PAUSED]}},
            {"$set": {"send_state": PAUSED}},
        )
        return bool(result.matched_count)

    async def retry_dropped(self, message_id: ObjectId, *, reason: str) -> None:
        """The retry-worker dropped a due job of the message: why, and when."""
        await self._messages.update_one(
            {"_id": message_id},
            {"$set": {"retry_dropped": {"reason": reason, "at": datetime.now(UTC)}}},
        )

    async def next_retry_due(self) -> datetime | None:
        """The earliest ``retry_due_at`` of the messages waiting in a delay tier."""
        doc = await self._messages.find_one(
            {"send_state": RETRYING, "retry_due_at": {"$exists": True}},
            {"retry_due_at": 1},
            sort=[("send_state", 1), ("retry_due_at", 1)],
        )
        return None if doc is None else doc.get("retry_due_at")
