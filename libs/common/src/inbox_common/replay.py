"""Replay webhook events from the ledger: publish their raw bodies to the webhooks exchange again.

The consumer finds each body's ledger entry not ``processed`` and applies it anew (every step
is idempotent), so replaying is safe to repeat. Used after a channel is created for events
that failed with ``unknown_channel`` (Meta will not resend them: it got a 200), and by
``inbox-ops webhooks replay`` after a fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from inbox_common.broker.publisher import ConfirmedPublisher
from inbox_common.broker.topology import WEBHOOK_ROUTING_KEY, Names
from inbox_common.contracts.delivery import WebhookDelivery
from inbox_common.store.client import Database
from inbox_common.store.schema import WEBHOOK_EVENTS

REPLAY_HEADER = "replayed"


@dataclass(frozen=True, slots=True)
class ReplayFilter:
    """Which ledger entries to replay; ``processed`` ones never are."""

    status: str = "failed"
    error_code: str | None = None
    phone_number_id: str | None = None
    since: datetime | None = None
    limit: int = 1000

    def __post_init__(self) -> None:
        if self.status not in ("failed", "received"):
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


async def count_replayable(db: Database, selection: ReplayFilter) -> int:
    return await db[WEBHOOK_EVENTS].count_documents(selection.query(), limit=selection.limit)


async def replay_webhooks(
    db: Database, publisher: ConfirmedPublisher, names: Names, selection: ReplayFilter
) -> int:
    """Publish the selected events' bodies (oldest first); returns how many were published.

    Stops at the first publish failure (raised as PublishFailedError); what was published
    before it stays published, and running the replay again is harmless.
    """
    cursor = (
        db[WEBHOOK_EVENTS]
        .find(selection.query(), {"sha256": 1, "request_id": 1, "received_at": 1, "body": 1})
        .sort("received_at", 1)
        .limit(selection.limit)
    )
    published = 0
    async for entry in cursor:
        delivery = WebhookDelivery(
            sha256=entry["sha256"],
            request_id=entry.get("request_id") or "",
            received_at=entry["received_at"],
            body=bytes(entry["body"]),
        )
        await publisher.publish(
            names.webhooks_exchange,
            WEBHOOK_ROUTING_KEY,
            delivery.body,
            message_id=delivery.sha256,
            headers={**delivery.headers(), REPLAY_HEADER: "true"},
            content_type="application/json",
        )
        published += 1
    return published
