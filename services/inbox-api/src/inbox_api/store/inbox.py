"""Contacts, conversations and messages.

Every write here is idempotent and order-independent, so a redelivered or reordered webhook
leaves the store exactly as one in-order delivery would: conditional logic runs inside
single-document pipeline updates (atomic on MongoDB and SecantusDB alike), never as a
read-then-write in Python. User-supplied values enter pipelines only through ``$literal``.

Writes are built as operations first (:class:`Writes`) and sent as one unordered bulk write
per collection, so a batch of webhooks costs a few round trips, not a few per message.
A conversation's id is its contact's (``inbox_common.store.identities``): fixed when the
contact is first seen, so messages can name their conversation before it is written, and it
stays the same when the contact's phone or BSUID changes.

Edits and deletions (Meta's ``edit`` and ``revoke``) change a message rather than add one,
and may arrive before it. So a message's shown ``content`` is derived inside every write that
can change it, from what the document holds: the latest of its ``edits`` (kept sorted by
timestamp, then wamid, one entry per edit wamid) or else its own content, and nothing once
it is ``deleted`` (which no later write undoes). Its conversation keeps, per changed message,
the winning :class:`Revision`, so the preview is the right one whichever of the message and
its changes came last.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo import UpdateOne

from inbox_common.store.bulk import bulk_upsert, insert_new
from inbox_common.store.client import Database, Document
from inbox_common.store.identities import ContactRef, lit, newer
from inbox_common.store.schema import CONTACTS, CONVERSATIONS, MESSAGES


def _keep_or(field: str, value: Any) -> dict[str, Any]:
    """The field's current value, or ``value`` on a new document ($setOnInsert in a pipeline)."""
    return {"$ifNull": [f"${field}", lit(value)]}


@dataclass(frozen=True, slots=True)
class Touch:
    """One message's effect on its conversation (no ``preview``: a reaction, an edit...)."""

    wamid: str
    at: datetime
    preview: str | None
    inbound: bool


@dataclass(frozen=True, slots=True)
class Revision:
    """An edit (``by`` its own wamid, at ``at``) or a deletion of message ``wamid``, as its
    conversation shows it: a deletion beats any edit, then the latest (``at``, ``by``) wins."""

    wamid: str
    at: datetime
    by: str
    preview: str
    deleted: bool

    @property
    def rank(self) -> tuple[bool, datetime, str]:
        return (self.deleted, self.at, self.by)


@dataclass(slots=True)
class _Conversation:
    channel: Document
    id: ObjectId
    contact: ContactRef | None  # None: leave the conversation's identifiers as they are
    name: str | None
    username: str | None
    touches: list[Touch]
    revisions: dict[str, Revision] = field(default_factory=dict)  # the winner per wamid


@dataclass(slots=True)
class Writes:
    """What a batch writes, sent as a few bulk writes.

    Contacts and conversations are folded per key (one write per contact and per
    conversation, however many messages the batch has for them); new messages are inserted,
    with an upsert kept for those that already exist (a redelivery, or a placeholder left by
    an early status or reaction); statuses and reactions are pipeline upserts.
    """

    contacts: dict[ObjectId, UpdateOne] = field(default_factory=dict)
    conversations: dict[ObjectId, _Conversation] = field(default_factory=dict)
    new_messages: list[tuple[Document, UpdateOne]] = field(default_factory=list)
    messages: list[UpdateOne] = field(default_factory=list)
    # (tenant, wamid, status) of each status in ``messages``: what the live updates announce.
    statuses: list[tuple[str, str, str]] = field(default_factory=list)
    # Wamids of the messages an edit or a revoke in ``messages`` changed (message.updated).
    changed: list[str] = field(default_factory=list)
    # Channels a failed status says Meta stopped (131048, 131031): id → (reason, code).
    stopped_channels: dict[ObjectId, tuple[str, int | None]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.contacts or self.conversations or self.new_messages or self.messages)

    def contact(
        self,
        contact: ContactRef,
        *,
        name: str | None,
        username: str | None,
        parent_user_id: str | None,
    ) -> None:
        """What a webhook says about a contact's profile (the latest one in the batch wins);
        nothing to write when the contact already holds it (the common case)."""
        fields = {"name": name, "username": username, "parent_user_id": parent_user_id}
        changed = {k: v for k, v in fields.items() if v and not contact.holds(k, v)}
        if changed:
            self.contacts[contact.id] = UpdateOne({"_id": contact.id}, {"$set": changed})

    def touch(
        self,
        channel: Document,
        contact: ContactRef,
        *,
        name: str | None,
        touch: Touch,
        username: str | None = None,
        revision: Revision | None = None,
    ) -> ObjectId:
        key = contact.conversation_id
        entry = self.conversations.setdefault(
            key, _Conversation(channel, key, contact, name, username, [])
        )
        entry.contact = contact
        entry.name = name or entry.name
        entry.username = username or entry.username
        entry.touches.append(touch)
        if revision is not None:
            held = entry.revisions.get(revision.wamid)
            if held is None or held.rank < revision.rank:
                entry.revisions[revision.wamid] = revision
        return key

    def show(self, channel: Document, conversation_id: ObjectId, touch: Touch) -> None:
        """A message of the business (sent from here) on an existing conversation."""
        entry = self.conversations.setdefault(
            conversation_id, _Conversation(channel, conversation_id, None, None, None, [])
        )
        entry.touches.append(touch)

    def message(
        self, channel: Document, doc: Document, *, status: str, status_rank: int | None = None
    ) -> None:
        """A message, inserted if new; ``status`` (and its rank) is only its initial one."""
        new = {
            **doc,
            "tenant": channel["tenant"],
            "channel_id": channel["_id"],
            "created_at": datetime.now(UTC),
            "status": status,
        }
        if status_rank is not None:
            new["status_rank"] = status_rank
        op = message_op(channel, doc, status=status, status_rank=status_rank)
        self.new_messages.append((new, op))

    def conversation_ops(self) -> list[UpdateOne]:
        return [
            conversation_op(
                c.channel,
                c.id,
                c.contact,
                name=c.name,
                username=c.username,
                touches=c.touches,
                revisions=list(c.revisions.values()),
            )
            for c in self.conversations.values()
        ]


def conversation_op(
    channel: Document,
    conversation: ObjectId,
    contact: ContactRef | None,
    *,
    name: str | None,
    touches: Sequence[Touch],
    username: str | None = None,
    revisions: Sequence[Revision] = (),
) -> UpdateOne:
    """Create or update ``contact``'s conversation for the messages ``touches``.

    The conversation shows the contact's current identifiers (``wa_id`` is ``None`` for a
    customer whose phone Meta does not share).

    Visible messages (with a preview) set the preview if they are the newest (ties broken by
    wamid), and inbound ones join the unread set. A reaction (no preview) moves only
    ``last_inbound_at``. Inbound events move ``last_inbound_at``, which opens the 24-hour
    customer service window. A customer's message written after the conversation was closed
    reopens it.

    ``revisions`` (edits and deletions) are kept, the winner per message, while their message
    is the last one or could still become it; the last message's revision, if any, gives the
    preview, and a deleted message leaves the unread set.
    """
    visible = [t for t in touches if t.preview is not None]
    newest = max(visible, key=lambda t: (t.at, t.wamid)) if visible else None
    unread = [t.wamid for t in visible if t.inbound]
    inbound_at = max((t.at for t in touches if t.inbound), default=None)
    at, wamid = (newest.at, newest.wamid) if newest else (None, "")
    first: dict[str, Any] = {
        "_newer": newer(at, wamid),
        "channel_id": _keep_or("channel_id", channel["_id"]),
        "tenant": _keep_or("tenant", channel["tenant"]),
        "status": _keep_or("status", "open"),
        "created_at": _keep_or("created_at", datetime.now(UTC)),
        "unread_wamids": {"$ifNull": ["$unread_wamids", []]},
    }
    if contact is not None:
        first.update(
            contact_id=lit(contact.id), wa_id=lit(contact.wa_id), user_id=lit(contact.user_id)
        )
    if name:
        first["contact_name"] = lit(name)
    if username:
        first["username"] = lit(username)
    second: dict[str, Any] = {}
    if newest is not None:
        second["last_message_at"] = {"$cond": ["$_newer", lit(at), "$last_message_at"]}
        second["last_message_wamid"] = {"$cond": ["$_newer", lit(wamid), "$last_message_wamid"]}
        second["last_message_preview"] = {
            "$cond": ["$_newer", lit(newest.preview), "$last_message_preview"]
        }
    if unread or revisions:
        deleted = {
            "$map": {
                "input": {"$filter": {"input": _REVISIONS, "cond": "$$this.deleted"}},
                "in": "$$this.wamid",
            }
        }
        joined = {"$setUnion": ["$unread_wamids", lit(unread)]}
        second["unread_wamids"] = {"$setDifference": [joined, deleted]}
    if inbound_at is not None:
        second["last_inbound_at"] = {"$max": ["$last_inbound_at", lit(inbound_at)]}
    written = max((t.at for t in visible if t.inbound), default=None)
    if written is not None:
        # The customer wrote after an agent closed it: the conversation needs an agent again.
        # A message written before the close (late, or replayed) leaves it closed.
        reopens = {
            "$and": [
                {"$eq": ["$status", "closed"]},
                {"$gt": [lit(written), {"$ifNull": ["$closed_at", lit(written)]}]},
            ]
        }
        second["status"] = {"$cond": [reopens, "open", "$status"]}
        second["reopened_at"] = {"$cond": [reopens, "$$NOW", "$reopened_at"]}
    stages: list[dict[str, Any]] = [
        {"$set": first},
        *({"$set": {"revisions": _revised(r)}} for r in revisions),
        *([{"$set": second}] if second else []),
        *([_REVISED_PREVIEW] if newest is not None or revisions else []),
        {"$unset": "_newer"},
    ]
    return UpdateOne({"_id": conversation}, stages, upsert=True)


_REVISIONS = {"$ifNull": ["$revisions", []]}


def _revised(revision: Revision) -> dict[str, Any]:
    """The conversation's revisions with ``revision`` in, if it beats the one held for its
    message (one per message, sorted by wamid, so every arrival order leaves the same list)."""
    new = {
        "wamid": revision.wamid,
        "at": revision.at,
        "by": revision.by,
        "preview": revision.preview,
        "deleted": revision.deleted,
    }
    held = {
        "$arrayElemAt": [
            {
                "$filter": {
                    "input": _REVISIONS,
                    "cond": {"$eq": ["$$this.wamid", lit(revision.wamid)]},
                }
            },
            0,
        ]
    }
    same_kind = {"$eq": ["$$held.deleted", lit(revision.deleted)]}
    later = {
        "$or": [
            {"$lt": ["$$held.at", lit(revision.at)]},
            {
                "$and": [
                    {"$eq": ["$$held.at", lit(revision.at)]},
                    {"$lt": ["$$held.by", lit(revision.by)]},
                ]
            },
        ]
    }
    wins = {
        "$or": [
            {"$eq": [{"$ifNull": ["$$held", None]}, None]},
            {"$and": [lit(revision.deleted), {"$ne": ["$$held.deleted", True]}]},
            {"$and": [same_kind, later]},
        ]
    }
    others = {
        "$filter": {"input": _REVISIONS, "cond": {"$ne": ["$$this.wamid", lit(revision.wamid)]}}
    }
    replaced = {
        "$sortArray": {"input": {"$concatArrays": [others, [lit(new)]]}, "sortBy": {"wamid": 1}}
    }
    return {"$let": {"vars": {"held": held}, "in": {"$cond": [wins, replaced, _REVISIONS]}}}


# The last message's revision gives the preview. Revisions are dropped once their message can
# no longer become the last one: a message is never newer than its own edit or deletion.
_REVISED_PREVIEW: dict[str, Any] = {
    "$set": {
        "last_message_preview": {
            "$let": {
                "vars": {
                    "last": {
                        "$arrayElemAt": [
                            {
                                "$filter": {
                                    "input": _REVISIONS,
                                    "cond": {"$eq": ["$$this.wamid", "$last_message_wamid"]},
                                }
                            },
                            0,
                        ]
                    }
                },
                "in": {
                    "$cond": [
                        {"$eq": [{"$ifNull": ["$$last", None]}, None]},
                        "$last_message_preview",
                        "$$last.preview",
                    ]
                },
            }
        },
        "revisions": {
            "$cond": [
                {"$isArray": "$revisions"},
                {
                    "$filter": {
                        "input": "$revisions",
                        "cond": {
                            "$or": [
                                {"$eq": ["$$this.wamid", "$last_message_wamid"]},
                                {"$gte": ["$$this.at", "$last_message_at"]},
                            ]
                        },
                    }
                },
                "$revisions",
            ]
        },
    }
}


def message_op(
    channel: Document, doc: Document, *, status: str, status_rank: int | None = None
) -> UpdateOne:
    """Insert a message once per wamid; fills a placeholder left by an early status,
    reaction, edit or revoke.

    ``status`` (and ``status_rank``) is only the initial one: a status that arrived first is
    kept, never moved back. ``content`` is shown only while no edit replaced it and the
    message is not deleted.
    """
    update: dict[str, Any] = {k: lit(v) for k, v in doc.items() if k != "content"}
    update.update(
        tenant=lit(channel["tenant"]),
        channel_id=lit(channel["_id"]),
        created_at=_keep_or("created_at", datetime.now(UTC)),
        status=_keep_or("status", status),
    )
    if status_rank is not None:
        update["status_rank"] = _keep_or("status_rank", status_rank)
    if "content" in doc:
        edited = {"$gt": [{"$size": {"$ifNull": ["$edits", []]}}, 0]}
        update["content"] = {"$cond": [edited, _LATEST_EDIT_CONTENT, lit(doc["content"])]}
    return UpdateOne({"wamid": doc["wamid"]}, [{"$set": update}, _DELETED_WINS], upsert=True)


def edit_op(
    channel: Document, target_wamid: str, *, wamid: str, type_: str, content: Any, at: datetime
) -> UpdateOne:
    """Record edit ``wamid`` of the target message (once per edit wamid) and show the latest
    edit's content, whatever the arrival order; a placeholder if the target is not stored yet
    (the message fills it and still shows the edit)."""
    edits = {"$ifNull": ["$edits", []]}
    entry = {"wamid": wamid, "type": type_, "content": content, "timestamp": at}
    seen = {"$in": [lit(wamid), {"$map": {"input": edits, "in": "$$this.wamid"}}]}
    added = {
        "$sortArray": {
            "input": {"$concatArrays": [edits, [lit(entry)]]},
            "sortBy": {"timestamp": 1, "wamid": 1},
        }
    }
    update = {
        "tenant": _keep_or("tenant", channel["tenant"]),
        "channel_id": _keep_or("channel_id", channel["_id"]),
        "edits": {"$cond": [seen, edits, added]},
    }
    stages = [{"$set": update}, {"$set": {"content": _LATEST_EDIT_CONTENT}}, _DELETED_WINS]
    return UpdateOne({"wamid": target_wamid}, stages, upsert=True)


def revoke_op(channel: Document, target_wamid: str, *, at: datetime) -> UpdateOne:
    """Mark the target message deleted (at the earliest revoke's time); a placeholder if it
    is not stored yet, which the message fills and stays deleted."""
    update = {
        "tenant": _keep_or("tenant", channel["tenant"]),
        "channel_id": _keep_or("channel_id", channel["_id"]),
        "deleted": lit(True),
        "deleted_at": {"$min": ["$deleted_at", lit(at)]},
    }
    return UpdateOne({"wamid": target_wamid}, [{"$set": update}, _DELETED_WINS], upsert=True)


# ``edits`` is sorted by (timestamp, wamid): the last entry is the latest edit.
_LATEST_EDIT_CONTENT = {
    "$let": {"vars": {"latest": {"$arrayElemAt": ["$edits", -1]}}, "in": "$$latest.content"}
}
_DELETED = {"$eq": ["$deleted", True]}
# The customer deleted it: nothing of what it said is shown or kept here, its edits included
# (the raw webhook bodies stay in the ledger, for its retention, like every other body).
_DELETED_WINS: dict[str, Any] = {
    "$set": {
        "content": {"$cond": [_DELETED, lit({}), "$content"]},
        "edits": {
            "$cond": [
                {"$and": [_DELETED, {"$isArray": "$edits"}]},
                {
                    "$map": {
                        "input": "$edits",
                        "in": {"wamid": "$$this.wamid", "type": "$$this.type",
                               "timestamp": "$$this.timestamp"},
                    }
                },
                "$edits",
            ]
        },
    }
}  # fmt: skip


def status_op(
    channel: Document,
    wamid: str,
    *,
    entry: Document,
    rank: int | None,
    message_id: ObjectId | None = None,
    error: Document | None = None,
) -> UpdateOne:
    """Add ``entry`` to the history once per status and move the status forward only.

    A status for a message not stored yet creates a placeholder (no ``direction``) that the
    message fills when it arrives. A status that carries our ``message_id`` (Meta echoes the
    ``biz_opaque_callback_data`` the sender gave) finds the outbound message by it, even
    before the sender recorded the wamid: it records the wamid and, since Meta has the
    message, moves a ``sending`` to ``accepted``. ``error`` (a ``failed`` status's, classified)
    is kept when the status becomes failed.
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
        update["status"] = {"$cond": [{"$lt": [current, rank]}, lit(entry["status"]), "$status"]}
        update["status_rank"] = {"$max": [current, rank]}
        if error is not None:
            update["error"] = {"$cond": [{"$lt": [current, rank]}, lit(error), "$error"]}
    if message_id is None:
        return UpdateOne({"wamid": wamid}, [{"$set": update}], upsert=True)
    update["wamid"] = lit(wamid)
    # Any status, failed too, means Meta took the message.
    update["send_state"] = {
        "$cond": [{"$in": ["$send_state", ["sending", "queued", "retrying"]]},
                  lit("accepted"), "$send_state"]
    }  # fmt: skip
    return UpdateOne({"_id": message_id}, [{"$set": update}])


def reaction_op(
    channel: Document, target_wamid: str, *, by: str, emoji: str | None, at: datetime, wamid: str
) -> UpdateOne:
    """Set (or, with no emoji, remove) ``by``'s reaction on the target message.

    One reaction per sender; the latest by timestamp wins whatever the arrival order, so a
    removal is kept as an entry with ``emoji: None``.
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
    return UpdateOne({"wamid": target_wamid}, [{"$set": update}], upsert=True)


class Inbox:
    def __init__(self, db: Database) -> None:
        self._contacts = db[CONTACTS]
        self._conversations = db[CONVERSATIONS]
        self._messages = db[MESSAGES]

    async def write(self, writes: Writes) -> None:
        """Send ``writes``: the messages and the contacts, then the conversations.

        The conversations go last: a message whose write failed for good must not leave its
        preview or unread mark on its conversation (its batch fails before that write, and
        is applied again body by body).
        """
        await asyncio.gather(
            self._write_messages(writes),
            bulk_upsert(self._contacts, list(writes.contacts.values())),
        )
        await bulk_upsert(self._conversations, writes.conversation_ops())

    async def _write_messages(self, writes: Writes) -> None:
        existing = await insert_new(self._messages, [new for new, _ in writes.new_messages])
        fallbacks = [writes.new_messages[i][1] for i in existing]
        await bulk_upsert(self._messages, fallbacks + writes.messages)

    # Reads for the REST API.

    async def conversations(
        self, query: dict[str, Any], *, after: tuple[datetime | None, ObjectId] | None, limit: int
    ) -> list[Document]:
        """Newest first by last message, then id; conversations with no message yet (only a
        reaction so far) come last."""
        query = {**query, "merged_into": {"$exists": False}}
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
            self._conversations.find(query, CONVERSATION_FIELDS)
            .sort([("last_message_at", -1), ("_id", -1)])
            .limit(limit)
        )
        return await cursor.to_list()

    async def conversation(self, query: dict[str, Any]) -> Document | None:
        """The conversation ``query`` finds, or the one it was merged into (its contact
        turned out to be someone known by another identifier)."""
        doc = await self._conversations.find_one(query, CONVERSATION_FIELDS)
        for _ in range(5):
            if doc is None or doc.get("merged_into") is None:
                return doc
            doc = await self._conversations.find_one(
                {**query, "_id": doc["merged_into"]}, CONVERSATION_FIELDS
            )
        return doc

    async def messages(
        self, conversation_id: ObjectId, *, before: tuple[datetime, ObjectId] | None, limit: int
    ) -> list[Document]:
        """The newest ``limit`` messages older than ``before``, newest first (those of the
        conversations merged into this one included)."""
        merged = [
            c["_id"]
            async for c in self._conversations.find({"merged_into": conversation_id}, {"_id": 1})
        ]
        query: dict[str, Any] = {"conversation_id": {"$in": [conversation_id, *merged]}}
        if before is not None:
            at, oid = before
            query["$or"] = [
                {"timestamp": {"$lt": at}},
                {"timestamp": at, "_id": {"$lt": oid}},
            ]
        cursor = self._messages.find(query).sort([("timestamp", -1), ("_id", -1)]).limit(limit)
        return await cursor.to_list()


CONVERSATION_FIELDS = {
    "channel_id": 1,
    "assignee": 1,
    "labels": 1,
    "contact_id": 1,
    "wa_id": 1,
    "user_id": 1,
    "username": 1,
    "merged_into": 1,
    "contact_name": 1,
    "status": 1,
    "last_message_at": 1,
    "last_message_preview": 1,
    "last_inbound_at": 1,
    "tenant": 1,
    "unread_count": {"$size": {"$ifNull": ["$unread_wamids", []]}},
}
