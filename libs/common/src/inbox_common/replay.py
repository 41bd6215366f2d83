"""Replay webhook events from the ledger: publish their raw bodies to the webhooks exchange again.

The consumer finds each body's ledger entry not ``processed`` and applies it anew (every step
is idempotent), so replaying is safe to repeat. Used after a channel is created for events
that failed with ``unknown_channel`` (Meta will not resend them: it got a 200), and by
``inbox-ops webhooks replay`` after a fix.
"""

from __future__ import annotations

from inbox_common.broker.publisher import ConfirmedPublisher
from inbox_common.broker.topology import WEBHOOK_ROUTING_KEY, Names
from inbox_common.store.ledger import Ledger, LedgerFilter

REPLAY_HEADER = "replayed"


async def replay_webhooks(
    ledger: Ledger, publisher: ConfirmedPublisher, names: Names, selection: LedgerFilter
) -> int:
    """Publish the selected events' bodies (oldest first); returns how many were published.

    Stops at the first publish failure (raised as PublishFailedError); what was published
    before it stays published, and running the replay again is harmless.
    """
    published = 0
    async for delivery in ledger.deliveries(selection):
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
