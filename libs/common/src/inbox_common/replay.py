"""Replay webhook events from the ledger: publish their raw bodies to the webhooks exchange again.

A replay is published exactly as webhook-ingest publishes a body that travels alone (the
same bytes, ``message_id`` = its sha256, its ``request_id``/``received_at``/``sha256``
headers, persistent, mandatory, confirmed), plus a ``replayed`` header; so it takes the
consumer's normal path. The consumer finds each body's ledger entry: a ``processed`` one is a
duplicate, of which only the attempt is counted; any other is applied anew (every step is
idempotent). Replaying is therefore safe to repeat, and replaying a processed event changes
nothing but its ``attempts``.

One piece of code for every replay: after a channel is created (its ``unknown_channel``
events: Meta got a 200 and will not resend them), ``inbox-ops webhooks replay`` after a fix,
and the webhook logs' replay endpoints (one event, or a filter).
"""

from __future__ import annotations

from inbox_common.broker.publisher import ConfirmedPublisher
from inbox_common.broker.topology import WEBHOOK_ROUTING_KEY, Names
from inbox_common.contracts.delivery import WebhookDelivery
from inbox_common.store.ledger import REPLAYABLE, Ledger, LedgerFilter

REPLAY_HEADER = "replayed"
# A replay by filter takes at most this many events unless told otherwise (oldest first).
REPLAY_LIMIT = 1000


async def publish_replay(
    publisher: ConfirmedPublisher, names: Names, delivery: WebhookDelivery
) -> None:
    """Publish one stored body to the webhooks exchange and wait for RabbitMQ's confirm.

    Raises :class:`~inbox_common.broker.publisher.PublishFailedError` when the broker did
    not take it.
    """
    await publisher.publish(
        names.webhooks_exchange,
        WEBHOOK_ROUTING_KEY,
        delivery.body,
        message_id=delivery.sha256,
        headers={**delivery.headers(), REPLAY_HEADER: "true"},
        content_type="application/json",
        timestamp=delivery.received_at,
    )


async def replay_webhooks(
    ledger: Ledger,
    publisher: ConfirmedPublisher,
    names: Names,
    selection: LedgerFilter,
    *,
    limit: int = REPLAY_LIMIT,
) -> int:
    """Publish the selected events' bodies (oldest first, at most ``limit``); returns how
    many were published.

    Only failed or received events are replayed by filter (``ValueError`` otherwise: a
    processed one has nothing left to apply). Stops at the first publish failure (raised as
    PublishFailedError); what was published before it stays published, and running the
    replay again is harmless.
    """
    if not selection.replayable:
        raise ValueError(
            f"only {' or '.join(REPLAYABLE)} events are replayed by filter, not "
            f"{selection.status or 'any status'}"
        )
    published = 0
    async for delivery in ledger.deliveries(selection, limit=limit):
        await publish_replay(publisher, names, delivery)
        published += 1
    return published
