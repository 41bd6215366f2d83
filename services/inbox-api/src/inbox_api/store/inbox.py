"""Contacts, conversations and messages.

Every write here is idempotent and order-independent, so a redelivered or reordered webhook
leaves the store exactly as one in-order delivery would: conditional logic runs inside
single-document pipeline updates (atomic on MongoDB and SecantusDB alike), never as a
read-then-write in Python. User-supplied values enter pipelines only through ``$literal``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from inbox_common.store.client import Database, Document
from inbox_common.store.schema import CONTACTS, CONVERSATIONS, MESSAGES


def lit(value: Any) -> dict[str, Any]:
    return {"$literal": value}


def _keep_or(field: str, value: Any) -> dict[str, Any]:
    """The field's current value, or ``value`` on a new document ($setOnInsert in a pipeline)."""
    return {"$ifNull": [f"${field}", lit(value)]}


class Inbox:
    def __init__(self, db: Database) -> None:
        self._contacts = db[CONTACTS]
        self._conversations = db[CONVERSATIONS]
        self._messages = db[MESSAGES]

    async def upsert_contact(
        self, channel: Document, wa_id: str, *, user_id: str | None, name: str | None
    ) -> None:
        update: dict[str, Any] = {
            "$setOnInsert": {"tenant": channel["tenant"], "created_at": datetime.now(UTC)},
        }
        fields = {k: v for k, v in {"name": name, "user_id": user_id}.items() if v}
        if fields:
            update["$set"] = fields
        await _retry_duplicate(
            lambda: self._contacts.update_one(
                {"channel_id": channel["_id"], "wa_id": wa_id}, update, upsert=True
            )
        )

    async def touch_conversation(
        self,
        channel: Document,
        wa_id: str,
        *,
        name: str | None,
        wamid: str,
        at: datetime,
        preview: str | None,
        inbound: bool,
    ) -> ObjectId:
        """Create or update the conversation with ``wa_id`` for message ``wamid``.

        With a ``preview`` the message is a visible one: the preview follows the newest such
        message (ties broken by wamid) and an inbound one joins the unread set. Without one
        (a reaction) only ``last_inbound_at`` moves. Inbound events move ``last_inbound_at``,
        which opens the 24-hour customer service window.
        """
        newer = {
            "$or": [
                {"$lt": ["$last_message_at", lit(at)]},
                {
                    "$and": [
                        {"$eq": ["$last_message_at", lit(at)]},
                        {"$lt": ["$last_message_wamid", lit(wamid)]},
                    ]
                },
            ]
        }
        first: dict[str, Any] = {
            "_newer": newer,
            "tenant": _keep_or("tenant", channel["tenant"]),
            "status": _keep_or("status", "open"),
            "created_at": _keep_or("created_at", datetime.now(UTC)),
            "unread_wamids": {"$ifNull": ["$unread_wamids", []]},
        }
        if name:
            first["contact_name"] = lit(name)
        second: dict[str, Any] = {}
        if preview is not None:
            second["last_message_at"] = {"$cond": ["$_newer", lit(at), "$last_message_at"]}
            second["last_message_wamid"] = {"$cond": ["$_newer", lit(wamid), "$last_message_wamid"]}
            second["last_message_preview"] = {
                "$cond": ["$_newer", lit(preview), "$last_message_preview"]
            }
            if inbound:
                second["unread_wamids"] = {"$setUnion": ["$unread_wamids", lit([wamid])]}
        if inbound:
            second["last_inbound_at"] = {"$max": ["$last_inbound_at", lit(at)]}
        stages: list[dict[str, Any]] = [
            {"$set": first},
            *([{"$set": second}] if second else []),
            {"$unset": "_newer"},
        ]
        key = {"channel_id": channel["_id"], "wa_id": wa_id}
        doc = await _retry_duplicate(
            lambda: self._conversations.find_one_and_update(
                key,
                stages,
                upsert=True,
                projection={"_id": 1},
                return_document=ReturnDocument.AFTER,
            )
        )
        if doc is None:
            # MongoDB always returns the document of an upsert with AFTER; SecantusDB may
            # answer racing upserts without it (the write is applied), so read it back.
            doc = await self._conversations.find_one(key, {"_id": 1})
        assert doc is not None
        return ObjectId(doc["_id"])

    async def store_message(self, channel: Document, doc: Document, *, status: str) -> None:
        """Insert a message once per wamid; fills a placeholder left by an early status.

        ``status`` is only the initial one: a status that arrived first is kept, never moved
        back.
        """
        await _retry_duplicate(
            lambda: self._messages.update_one(
                {"wamid": doc["wamid"]},
                {
                    "$set": {**doc, "tenant": channel["tenant"], "channel_id": channel["_id"]},
                    "$setOnInsert": {"created_at": datetime.now(UTC), "status": status},
                },
                upsert=True,
            )
        )

    async def apply_status(
        self, channel: Document, wamid: str, *, entry: Document, rank: int | None
    ) -> None:
        """Add ``entry`` to the history once per status and move the status forward only.

        A status for a message not stored yet creates a placeholder (no ``direction``) that
        the message fills when it arrives.
        """
        history = {"$ifNull": ["$statuses", []]}
        # $map, not "$statuses.status": SecantusDB does not traverse arrays in field paths.
        seen = {"$map": {"input": history, "in": "$$this.status"}}
        update: dict[str, Any] = {
            "tenant": _keep_or("tenant", channel["tenant"]),
            "channel_id": _keep_or("channel_id", channel["_id"]),
            "statuses": {
                "$cond": [
                    {"$in": [lit(entry["status"]), seen]},
                    history,
                    {"$concatArrays": [history, [lit(entry)]]},
                ]
            },
        }
        if rank is not None:
            current = {"$ifNull": ["$status_rank", -1]}
            update["status"] = {
                "$cond": [{"$lt": [current, rank]}, lit(entry["status"]), "$status"]
            }
            update["status_rank"] = {"$max": [current, rank]}
        await _retry_duplicate(
            lambda: self._messages.update_one({"wamid": wamid}, [{"$set": update}], upsert=True)
        )

    async def apply_reaction(
        self,
        channel: Document,
        target_wamid: str,
        *,
        by: str,
        emoji: str | None,
        at: datetime,
        wamid: str,
    ) -> None:
        """Set (or, with no emoji, remove) ``by``'s reaction on the target message.

        One reaction per sender; the latest by timestamp wins whatever the arrival order, so
        a removal is kept as an entry with ``emoji: None``.
        """
        reactions = {"$ifNull": ["$reactions", []]}
        old = {
            "$arrayElemAt": [
                {"$filter": {"input": reactions, "cond": {"$eq": ["$$this.by", lit(by)]}}},
                0,
            ]
        }
        entry = {"by": by, "emoji": emoji, "timestamp": at, "wamid": wamid}
        newer = {
            "$or": [
                {"$eq": [{"$ifNull": ["$$old", None]}, None]},
                {"$lte": ["$$old.timestamp", lit(at)]},
            ]
        }
        replaced = {
            "$concatArrays": [
                {"$filter": {"input": reactions, "cond": {"$ne": ["$$this.by", lit(by)]}}},
                [lit(entry)],
            ]
        }
        update = {
            "tenant": _keep_or("tenant", channel["tenant"]),
            "channel_id": _keep_or("channel_id", channel["_id"]),
            "reactions": {
                "$let": {"vars": {"old": old}, "in": {"$cond": [newer, replaced, reactions]}}
            },
        }
        await _retry_duplicate(
            lambda: self._messages.update_one(
                {"wamid": target_wamid}, [{"$set": update}], upsert=True
            )
        )

    # Reads for the REST API.

    async def conversations(
        self, query: dict[str, Any], *, after: tuple[datetime | None, ObjectId] | None, limit: int
    ) -> list[Document]:
        """Newest first by last message, then id; conversations with no message yet (only a
        reaction so far) come last."""
        if after is not None:
            at, oid = after
            if at is None:
                position: list[dict[str, Any]] = [{"last_message_at": None, "_id": {"$lt": oid}}]
            else:
                position = [
                    {"last_message_at": {"$lt": at}},
                    {"last_message_at": at, "_id": {"$lt": oid}},
                    {"last_message_at": None},
                ]
            query = {**query, "$or": position}
        cursor = (
            self._conversations.find(query, _CONVERSATION_FIELDS)
            .sort([("last_message_at", -1), ("_id", -1)])
            .limit(limit)
        )
        return await cursor.to_list()

    async def conversation(self, query: dict[str, Any]) -> Document | None:
        return await self._conversations.find_one(query, _CONVERSATION_FIELDS)

    async def messages(
        self, conversation_id: ObjectId, *, before: tuple[datetime, ObjectId] | None, limit: int
    ) -> list[Document]:
        """The newest ``limit`` messages older than ``before``, newest first."""
        query: dict[str, Any] = {"conversation_id": conversation_id}
        if before is not None:
            at, oid = before
            query["$or"] = [
                {"timestamp": {"$lt": at}},
                {"timestamp": at, "_id": {"$lt": oid}},
            ]
        cursor = self._messages.find(query).sort([("timestamp", -1), ("_id", -1)]).limit(limit)
        return await cursor.to_list()


_CONVERSATION_FIELDS = {
    "channel_id": 1,
    "wa_id": 1,
    "contact_name": 1,
    "status": 1,
    "last_message_at": 1,
    "last_message_preview": 1,
    "last_inbound_at": 1,
    "tenant": 1,
    "unread_count": {"$size": {"$ifNull": ["$unread_wamids", []]}},
}


T = TypeVar("T")


async def _retry_duplicate(write: Callable[[], Awaitable[T]]) -> T:
    """Run ``write``; run it once more after a duplicate-key race between two upserts.

    Two consumers upserting the same new key at once: one inserts, the other fails with
    E11000; the second try finds the document and updates it.
    """
    try:
        return await write()
    except DuplicateKeyError:
        return await write()
