"""The AMQP edge of the webhook consumer: message → validated deliveries → service → fate."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import structlog
from aio_pika.abc import AbstractIncomingMessage
from bson.errors import BSONError
from prometheus_client import CollectorRegistry, Histogram
from pymongo.errors import PyMongoError

from inbox_api.consumer.service import Outcome, WebhookProcessor
from inbox_common import tracing
from inbox_common.contracts.delivery import InvalidDelivery, WebhookDelivery, deliveries_from_amqp
from inbox_common.errors import PermanentError, TransientError
from inbox_common.logging import bind_message_context
from inbox_common.metrics import LATENCY_BUCKETS
from inbox_common.store.client import is_transient


class WebhookHandler:
    """Callable handed to :class:`~inbox_common.broker.consumer.Consumer`.

    A message carries one body or a micro-batch; it is acked (by the consumer) only once
    every body in it was applied.
    """

    def __init__(self, processor: WebhookProcessor, registry: CollectorRegistry) -> None:
        self._processor = processor
        self._ingest_to_store = Histogram(
            "webhook_ingest_to_store_seconds",
            "From the ingest's receipt of a webhook to its fate stored by the consumer",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    async def _apply(self, delivery: WebhookDelivery, batched: bool) -> Outcome:
        """Apply one body in a span of its own trace: the child of the consumer's span for a
        one-body message, of the ingest request's span for a body of a micro-batch."""
        if batched and delivery.traceparent:
            with tracing.span(
                "webhook apply",
                parent=tracing.context_of(delivery.traceparent),
                attributes={"inbox.sha256": delivery.sha256},
            ) as span:
                outcome = await self._processor.process(delivery)
                span.set_attribute("inbox.outcome", outcome.value)
                return outcome
        return await self._processor.process(delivery)

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        structlog.contextvars.clear_contextvars()
        try:
            deliveries = deliveries_from_amqp(message.body, message.headers)
        except InvalidDelivery as exc:
            raise PermanentError("invalid_delivery", str(exc)) from exc
        if len(deliveries) == 1:
            bind_message_context(
                request_id=deliveries[0].request_id or None, sha256=deliveries[0].sha256
            )
        else:
            bind_message_context(batch=message.message_id)
        altered = [d.sha256 for d in deliveries if not d.intact()]
        if altered:
            raise PermanentError(
                "checksum_mismatch",
                f"the body does not hash to its sha256 {altered[0]} "
                f"({len(altered)} of {len(deliveries)} altered in transit)",
            )
        try:
            await asyncio.gather(*(self._apply(d, len(deliveries) > 1) for d in deliveries))
            now = datetime.now(UTC)
            for delivery in deliveries:
                self._ingest_to_store.observe(
                    max(0.0, (now - delivery.received_at).total_seconds())
                )
        except PyMongoError as exc:
            if is_transient(exc):
                raise TransientError("store_unavailable", f"MongoDB: {exc}") from exc
            raise PermanentError("store_rejected", f"MongoDB refused the write: {exc}") from exc
        except (BSONError, OverflowError) as exc:
            # Data BSON cannot encode even as a failure record: it can never succeed, so it
            # is dead-lettered with the reason, not requeued.
            raise PermanentError("store_rejected", f"{type(exc).__name__}: {exc}") from exc
