"""Publishing verified webhook bodies: micro-batches of the requests of one loop tick.

Each request waits for the confirm of the AMQP message that carries its body, so a 200
still means "the broker has it". Batching spreads the per-message cost (client framing, the
broker's quorum write and confirm) over every request that arrived together; a lone request
is published as a one-body message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from inbox_common.batching import Coalescer
from inbox_common.broker.publisher import ConfirmedPublisher
from inbox_common.broker.topology import WEBHOOK_ROUTING_KEY, Names
from inbox_common.contracts.delivery import WebhookDelivery, batch_message
from inbox_common.whatsapp.signature import verify
from inbox_ingest.metrics import IngestMetrics
from inbox_ingest.settings import IngestSettings

MAX_BATCH_BODIES = 64
# Above this, a body travels alone: big batches would delay their neighbours' confirms.
MAX_BATCHED_BODY_BYTES = 64 * 1024


class WebhookIngest:
    """What the webhook endpoint does: check a body's signature, publish it."""

    def __init__(
        self,
        settings: IngestSettings,
        publisher: ConfirmedPublisher,
        names: Names,
        metrics: IngestMetrics,
    ) -> None:
        self.verify_token = settings.whatsapp_webhook_verify_token.get_secret_value().encode()
        self._secrets = settings.webhook_secrets
        self.metrics = metrics
        self.publisher = WebhookPublisher(publisher, names)

    def digest_if_signed(self, body: bytes, header: str | None) -> str | None:
        """The body's sha256 when ``header`` signs it under one of the app secrets."""
        if not verify(body, header, self._secrets):
            return None
        return hashlib.sha256(body).hexdigest()


class WebhookPublisher:
    def __init__(self, publisher: ConfirmedPublisher, names: Names) -> None:
        self._publisher = publisher
        self._exchange = names.webhooks_exchange
        self._batches: Coalescer[WebhookDelivery, None] = Coalescer(
            self._publish_batch, max_items=MAX_BATCH_BODIES
        )

    async def publish(self, delivery: WebhookDelivery) -> None:
        """Return once the broker confirmed the message carrying ``delivery``.

        Raises :class:`~inbox_common.broker.publisher.PublishFailedError` otherwise.
        """
        if len(delivery.body) > MAX_BATCHED_BODY_BYTES:
            await self._publish_one(delivery)
        else:
            await self._batches.submit(delivery)

    async def _publish_batch(self, batch: Sequence[WebhookDelivery]) -> list[None]:
        if len(batch) == 1:
            await self._publish_one(batch[0])
        else:
            body, headers, message_id = batch_message(batch)
            await self._publisher.publish(
                self._exchange,
                WEBHOOK_ROUTING_KEY,
                body,
                message_id=message_id,
                headers=headers,
                timestamp=batch[0].received_at,
                propagate=False,  # each body's traceparent is in its batch entry
            )
        return [None] * len(batch)

    async def _publish_one(self, delivery: WebhookDelivery) -> None:
        await self._publisher.publish(
            self._exchange,
            WEBHOOK_ROUTING_KEY,
            delivery.body,
            message_id=delivery.sha256,
            headers=delivery.headers(),
            content_type="application/json",
            timestamp=delivery.received_at,
        )
