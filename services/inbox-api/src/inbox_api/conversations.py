"""Conversations as agents read and work them, confined to the reader's tenant.

Reads: the list (newest first, filtered by status, assignee, label, channel, identifier, or
a search), one conversation, its messages. Actions: assign, close, reopen, read (the
unread marks go; Meta is told the last inbound message was read), labels, internal notes.
Each action returns the conversation as it is now; the REST layer turns it into a live event.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument

from inbox_api.errors import NotFoundError
from inbox_api.store.inbox import CONVERSATION_FIELDS, Inbox
from inbox_common.store.client import Database, Document
from inbox_common.store.schema import CONVERSATIONS, MESSAGES

SEARCH_MESSAGES_LIMIT = 500


class ConversationService:
    def __init__(self, db: Database, inbox: Inbox) -> None:
        self._inbox = inbox
        self._conversations = db[CONVERSATIONS]
        self._messages = db[MESSAGES]

    async def page(
        self,
        query: dict[str, Any],
        *,
        after: tuple[datetime | None, ObjectId] | None,
        limit: int,
    ) -> tuple[list[Document], bool]:
        """Up to ``limit`` conversations matching ``query`` (already tenant-scoped), newest
        first, after the cursor position; and whether more follow."""
        docs = await self._inbox.conversations(query, after=after, limit=limit + 1)
        return docs[:limit], len(docs) > limit

    async def search(self, text: str, scope: dict[str, Any]) -> dict[str, Any]:
        """The filter for ``q``: the contact's name, phone, BSUID or username, or the text of
        a message, contains ``text`` (case-insensitive).

        A plain, escaped regular expression: SecantusDB has no text index. On MongoDB a
        ``text`` index on the message bodies (or Atlas Search) would serve long histories.
        """
        pattern = {"$regex": re.escape(text), "$options": "i"}
        matched = self._messages.find(
            {**scope, "$or": [{"content.body": pattern}, {"content.caption": pattern}]},
            {"conversation_id": 1},
        ).limit(SEARCH_MESSAGES_LIMIT)
        ids = sorted({doc["conversation_id"] async for doc in matched if "conversation_id" in doc})
        fields = ("contact_name", "wa_id", "user_id", "username")
        return {"$or": [*({f: pattern} for f in fields), {"_id": {"$in": ids}}]}

    async def get(self, conversation_id: ObjectId, scope: dict[str, Any]) -> Document:
        doc = await self._inbox.conversation({"_id": conversation_id, **scope})
        if doc is None:
            raise NotFoundError("conversation", conversation_id)
        return doc

    async def messages(
        self,
        conversation: Document,
        *,
        before: tuple[datetime, ObjectId] | None,
        limit: int,
    ) -> tuple[list[Document], bool]:
        """Up to ``limit`` messages older than ``before``, newest first; and whether more
        (older) follow."""
        docs = await self._inbox.messages(conversation["_id"], before=before, limit=limit + 1)
        return docs[:limit], len(docs) > limit

    # --- actions ------------------------------------------------------------------------------

    async def _update(
        self, conversation_id: ObjectId, scope: dict[str, Any], update: dict[str, Any]
    ) -> Document:
        current = await self.get(conversation_id, scope)  # follows a merged conversation
        doc = await self._conversations.find_one_and_update(
            {"_id": current["_id"], **scope},
            update,
            projection=CONVERSATION_FIELDS,
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            raise NotFoundError("conversation", conversation_id)
        return doc

    async def assign(
        self, conversation_id: ObjectId, scope: dict[str, Any], agent_id: str | None
    ) -> Document:
        now = datetime.now(UTC)
        return await self._update(
            conversation_id, scope, {"$set": {"assignee": agent_id, "assigned_at": now}}
        )

    async def set_status(
        self, conversation_id: ObjectId, scope: dict[str, Any], status: str
    ) -> Document:
        stamp = "closed_at" if status == "closed" else "reopened_at"
        return await self._update(
            conversation_id, scope, {"$set": {"status": status, stamp: datetime.now(UTC)}}
        )

    async def set_labels(
        self, conversation_id: ObjectId, scope: dict[str, Any], labels: Sequence[str]
    ) -> Document:
        return await self._update(conversation_id, scope, {"$set": {"labels": sorted(set(labels))}})

    async def mark_read(
        self, conversation_id: ObjectId, scope: dict[str, Any]
    ) -> tuple[Document, Document | None]:
        """Clear the unread marks; returns the conversation and its last inbound message (for
        Meta's read receipt), if any."""
        doc = await self._update(
            conversation_id,
            scope,
            {"$set": {"unread_wamids": [], "read_at": datetime.now(UTC)}},
        )
        last = await self._messages.find_one(
            {"conversation_id": doc["_id"], "direction": "inbound"},
            sort=[("timestamp", -1), ("_id", -1)],
        )
        return doc, last

    async def add_note(
        self, conversation_id: ObjectId, scope: dict[str, Any], body: str, *, author: str
    ) -> Document:
        """An internal note: listed with the messages, never sent."""
        conversation = await self.get(conversation_id, scope)
        note_id = ObjectId()
        # BSON keeps milliseconds: cut to them, so the answer shows the note as listed later.
        now = datetime.now(UTC)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        note = {
            "_id": note_id,
            "wamid": f"note:{note_id}",
            "conversation_id": conversation["_id"],
            "channel_id": conversation["channel_id"],
            "tenant": conversation["tenant"],
            "direction": "note",
            "type": "note",
            "content": {"body": body},
            "author": author,
            "timestamp": now,
            "created_at": now,
        }
        await self._messages.insert_one(note)
        return note
