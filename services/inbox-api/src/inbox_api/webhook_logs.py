"""The webhook ledger as admins see it: their own channels' events (superadmins: all)."""

from __future__ import annotations

from bson import ObjectId

from inbox_api.errors import NotFoundError
from inbox_common.store.client import Document
from inbox_common.store.ledger import Ledger

WEBHOOK_STATUSES = ("received", "processed", "failed")


class WebhookLogService:
    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    async def page(
        self,
        *,
        numbers: list[str] | None,
        status: str | None,
        before: ObjectId | None,
        limit: int,
    ) -> tuple[list[Document], bool]:
        """Newest first; ``numbers`` are the reader's phone_number_ids (``None``: all)."""
        docs = await self._ledger.page(
            status=status, phone_number_ids=numbers, before=before, limit=limit + 1
        )
        return docs[:limit], len(docs) > limit

    async def get(self, event_id: ObjectId, *, numbers: list[str] | None) -> Document:
        doc = await self._ledger.get(event_id)
        if doc is None or (
            numbers is not None and not set(doc.get("phone_number_ids") or []) & set(numbers)
        ):
            raise NotFoundError("webhook event", event_id)
        return doc
