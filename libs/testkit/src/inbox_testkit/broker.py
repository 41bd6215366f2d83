"""Broker helpers for tests: a started connection, the webhook consumer as inbox-api wires
it, publishing a delivery as webhook-ingest does, and reading AMQP headers back."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aio_pika.abc import AbstractIncomingMessage, HeadersType
from prometheus_client import CollectorRegistry

from inbox_api.consumer.handlers import WebhookHandler
from inbox_api.consumer.service import WebhookProcessor
from inbox_common.broker.connection import Broker
from inbox_common.broker.consumer import Consumer, ConsumerMetrics, RetryPolicy
from inbox_common.broker.publisher import ConfirmedPublisher
from inbox_common.broker.topology import WEBHOOK_ROUTING_KEY, Names
from inbox_common.contracts.delivery import WebhookDelivery

FAST_RETRY = RetryPolicy(
    attempts=2, initial_wait=0.01, max_wait=0.02, pause_initial=0.05, pause_max=0.2
)


@contextlib.asynccontextmanager
async def broker_connection(url: str, *, name: str) -> AsyncIterator[Broker]:
    """A started :class:`Broker`, closed on exit."""
    broker = Broker(url, name=name)
    broker.start()
    try:
        yield broker
    finally:
        await broker.close()


def webhook_consumer(
    broker: Broker,
    names: Names,
    publisher: ConfirmedPublisher,
    processor: WebhookProcessor,
    *,
    prefetch: int = 16,
) -> Consumer:
    """The webhook consumer as inbox-api wires it, with fast in-process retries."""
    return Consumer(
        broker,
        names.webhooks_queue,
        WebhookHandler(processor, CollectorRegistry()),
        dead_letter_exchange=names.dead_letter_exchange,
        publisher=publisher,
        metrics=ConsumerMetrics(CollectorRegistry()),
        prefetch=prefetch,
        retry=FAST_RETRY,
    )


async def publish_delivery(
    publisher: ConfirmedPublisher,
    names: Names,
    delivery: WebhookDelivery,
    *,
    headers: dict[str, str] | None = None,
) -> None:
    """Publish ``delivery`` exactly as webhook-ingest does (``headers`` replaces its own)."""
    await publisher.publish(
        names.webhooks_exchange,
        WEBHOOK_ROUTING_KEY,
        delivery.body,
        message_id=delivery.sha256,
        headers=delivery.headers() if headers is None else headers,
        content_type="application/json",
        timestamp=delivery.received_at,
    )


def header_str(headers: HeadersType | None, name: str) -> str | None:
    """A header as text (AMQP delivers string headers as bytes or str)."""
    value = (headers or {}).get(name)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None if value is None else str(value)


def delivery_attempt(message: AbstractIncomingMessage) -> int:
    """1 for a first delivery; quorum queues count earlier returns in x-delivery-count."""
    count = (message.headers or {}).get("x-delivery-count")
    return int(count) + 1 if isinstance(count, int) else (2 if message.redelivered else 1)
