"""P2's backlogs: the same events, queued in the two shapes webhook-ingest publishes.

``batched``  micro-batches: ``--p2-batch`` bodies (default 64, the ingest's
             ``MAX_BATCH_BODIES``) per AMQP message, built with ``batch_message`` and sent with
             the properties ``WebhookPublisher._publish_batch`` gives them (a batch of one
             travels as one body, as there). This is what the queue holds after a burst, when
             many requests reach the ingest in the same event-loop tick.
``single``   one body per AMQP message (``message_id`` = sha256, headers sha256/request_id/
             received_at, ``content_type``), as the ingest publishes a request that arrived
             alone: what the queue holds under steady light traffic, such as P3's.

Both are persistent and ``mandatory``, on a confirm channel with 500 confirms in flight; every
body keeps its own identity (sha256, request id, receive time), so both backlogs make the same
ledger entries and the same store.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import aio_pika

from inbox_common.broker.topology import WEBHOOK_ROUTING_KEY, Names, declare, everything
from inbox_common.contracts.delivery import WebhookDelivery, batch_message

SHAPES = ("batched", "single")
CONFIRMS_IN_FLIGHT = 500


@dataclass(frozen=True)
class Backlog:
    shape: str
    events: int
    messages: int
    publish_s: float


def deliveries(payloads: Sequence[bytes]) -> list[WebhookDelivery]:
    """Each body with the identity the ingest gives it."""
    now = datetime.now(UTC)
    return [
        WebhookDelivery(
            sha256=hashlib.sha256(body).hexdigest(),
            request_id=uuid.uuid4().hex,
            received_at=now,
            body=body,
        )
        for body in payloads
    ]


def messages(shape: str, items: Sequence[WebhookDelivery], batch: int) -> list[aio_pika.Message]:
    """The AMQP messages of a backlog of ``shape``, in the ingest's format."""
    if shape == "single" or batch == 1:
        return [ingest_message([d]) for d in items]
    return [ingest_message(items[start : start + batch]) for start in range(0, len(items), batch)]


def ingest_message(group: Sequence[WebhookDelivery]) -> aio_pika.Message:
    """The message webhook-ingest publishes for ``group``: one body as it is, or a batch."""
    if len(group) == 1:
        delivery = group[0]
        return aio_pika.Message(
            delivery.body,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=delivery.sha256,
            headers=dict(delivery.headers()),
            content_type="application/json",
            timestamp=delivery.received_at,
        )
    body, headers, message_id = batch_message(group)
    return aio_pika.Message(
        body,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message_id,
        headers=headers,
        timestamp=group[0].received_at,
    )


async def publish(
    url: str, names: Names, shape: str, payloads: Sequence[bytes], batch: int
) -> Backlog:
    """Declare the namespace's topology and queue ``payloads`` in ``shape``, confirmed."""
    if shape not in SHAPES:
        raise ValueError(f"backlog shape {shape!r}: use one of {', '.join(SHAPES)}")
    outgoing = messages(shape, deliveries(payloads), batch)
    began = time.perf_counter()
    connection = await aio_pika.connect(url, client_properties={"connection_name": "bench-p2"})
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await declare(channel, everything(names))
        exchange = await channel.get_exchange(names.webhooks_exchange, ensure=False)
        for start in range(0, len(outgoing), CONFIRMS_IN_FLIGHT):
            await asyncio.gather(
                *(
                    exchange.publish(message, WEBHOOK_ROUTING_KEY, mandatory=True)
                    for message in outgoing[start : start + CONFIRMS_IN_FLIGHT]
                )
            )
    return Backlog(shape, len(payloads), len(outgoing), time.perf_counter() - began)
