"""What agents read: conversations and their messages, confined to the reader's tenant."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bson import ObjectId

from inbox_api.errors import NotFoundError
from inbox_api.store.inbox import Inbox
from inbox_common.store.client import Document


class ConversationService:
    def __init__(self, inbox: Inbox) -> None:
        self._inbox = inbox

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
