"""The webhook ledger as admins see it: their own channels' events (superadmins: all), and
their replays.

What a reader may see is a :class:`~inbox_common.store.ledger.LedgerFilter`'s ``within``: an
admin's numbers, or none for a superadmin. The listing, its counts by reason, the bulk replay
and the replay of one event all go through it, so an admin can neither list nor replay an
event that names none of their numbers (another tenant's event is not found, as an id that
exists nowhere).

A replay publishes the stored raw body exactly as webhook-ingest does
(``inbox_common.replay``, the code ``inbox-ops webhooks replay`` runs), so it takes the
consumer's normal path, and the ledger makes it harmless: a processed event stays as it is
(only its ``attempts`` grows).
"""

from __future__ import annotations

from bson import ObjectId

from inbox_api.errors import NotFoundError
from inbox_common.broker.publisher import ConfirmedPublisher, PublishFailedError
from inbox_common.broker.topology import Names
from inbox_common.http import ApiError
from inbox_common.logging import get_logger
from inbox_common.replay import publish_replay, replay_webhooks
from inbox_common.store.client import Document
from inbox_common.store.ledger import Ledger, LedgerFilter, entry_delivery

log = get_logger(__name__)


class WebhookLogService:
    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    async def page(
        self, selection: LedgerFilter, *, before: ObjectId | None, limit: int
    ) -> tuple[list[Document], bool]:
        """Newest first; whether more follow."""
        docs = await self._ledger.page(selection, before=before, limit=limit + 1)
        return docs[:limit], len(docs) > limit

    async def reasons(self, selection: LedgerFilter) -> dict[str, int]:
        """The selection's failed events by error code (the whole selection, not a page)."""
        return await self._ledger.reasons(selection)

    async def get(self, event_id: ObjectId, *, numbers: list[str] | None) -> Document:
        """One event with its body; ``numbers`` are the reader's phone_number_ids (``None``:
        all)."""
        doc = await self._ledger.get(event_id)
        if doc is None or (
            numbers is not None and not set(doc.get("phone_number_ids") or []) & set(numbers)
        ):
            raise NotFoundError("webhook event", event_id)
        return doc

    async def replay_one(
        self,
        event_id: ObjectId,
        *,
        numbers: list[str] | None,
        publisher: ConfirmedPublisher,
        names: Names,
    ) -> Document:
        """Publish one event's raw body to the consumer again, whatever its status; returns
        the event as it was."""
        doc = await self.get(event_id, numbers=numbers)
        try:
            await publish_replay(publisher, names, entry_delivery(doc))
        except PublishFailedError as exc:
            raise _not_taken(exc, published=0) from exc
        log.info("webhook_logs.replayed", event_id=str(event_id), sha256=doc["sha256"])
        return doc

    async def replay(
        self,
        selection: LedgerFilter,
        *,
        limit: int,
        publisher: ConfirmedPublisher,
        names: Names,
    ) -> tuple[int, int]:
        """Publish the selected events' bodies again, oldest first, at most ``limit``;
        returns how many were published and how many matched."""
        matched = await self._ledger.count(selection)
        try:
            replayed = await replay_webhooks(self._ledger, publisher, names, selection, limit=limit)
        except PublishFailedError as exc:
            raise _not_taken(exc, published=None) from exc
        log.info("webhook_logs.replayed_selection", replayed=replayed, matched=matched)
        return replayed, matched


def _not_taken(exc: PublishFailedError, *, published: int | None) -> ApiError:
    before = "" if published == 0 else " (events published before it stay published)"
    return ApiError(
        503,
        "broker_unavailable",
        f"RabbitMQ did not take the replay ({exc.reason}: {exc}){before}; nothing is lost: "
        "try again once the broker is back (replaying an event twice is harmless)",
    )
