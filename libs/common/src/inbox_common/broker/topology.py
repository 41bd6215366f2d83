"""The broker topology, described once and declared idempotently by every service.

Every name carries the ``AMQP_NAMESPACE`` prefix so tests and tenants can share a broker.
Work queues are quorum queues that dead-letter (at least once) to ``<ns>.dlx``, routed by
the source queue's name to its own ``<queue>.dead`` queue, after ``DELIVERY_LIMIT``
redeliveries; handlers also send poison messages there directly, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel

DELIVERY_LIMIT = 20
WEBHOOK_ROUTING_KEY = "whatsapp.webhook"


@dataclass(frozen=True, slots=True)
class ExchangeSpec:
    name: str
    type: aio_pika.ExchangeType


@dataclass(frozen=True, slots=True)
class QueueSpec:
    name: str
    arguments: dict[str, Any]
    bindings: tuple[tuple[str, str], ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Names:
    """Every exchange and queue name of one namespace."""

    namespace: str

    @property
    def webhooks_exchange(self) -> str:
        return f"{self.namespace}.webhooks"

    @property
    def webhooks_queue(self) -> str:
        return f"{self.namespace}.inbox.webhooks"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.namespace}.dlx"

    def dead_letter_queue(self, queue: str) -> str:
        return f"{queue}.dead"


def _work_queue(names: Names, name: str, bindings: tuple[tuple[str, str], ...]) -> QueueSpec:
    return QueueSpec(
        name=name,
        arguments={
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": names.dead_letter_exchange,
            "x-dead-letter-routing-key": name,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
            "x-delivery-limit": DELIVERY_LIMIT,
        },
        bindings=bindings,
    )


def _dead_letter_queue(names: Names, source: str) -> QueueSpec:
    return QueueSpec(
        name=names.dead_letter_queue(source),
        arguments={"x-queue-type": "quorum"},
        bindings=((names.dead_letter_exchange, source),),
    )


@dataclass(frozen=True, slots=True)
class Topology:
    exchanges: tuple[ExchangeSpec, ...]
    queues: tuple[QueueSpec, ...]


def topology(names: Names) -> Topology:
    """The whole topology of ``names.namespace``."""
    webhooks = _work_queue(names, names.webhooks_queue, ((names.webhooks_exchange, "whatsapp.#"),))
    return Topology(
        exchanges=(
            ExchangeSpec(names.webhooks_exchange, aio_pika.ExchangeType.TOPIC),
            ExchangeSpec(names.dead_letter_exchange, aio_pika.ExchangeType.DIRECT),
        ),
        queues=(webhooks, _dead_letter_queue(names, webhooks.name)),
    )


async def declare(channel: AbstractChannel, spec: Topology) -> None:
    """Declare ``spec`` on ``channel``; declaring the same topology again changes nothing."""
    exchanges = {}
    for ex in spec.exchanges:
        exchanges[ex.name] = await channel.declare_exchange(ex.name, ex.type, durable=True)
    for q in spec.queues:
        queue = await channel.declare_queue(q.name, durable=True, arguments=q.arguments)
        for exchange, routing_key in q.bindings:
            await queue.bind(exchanges[exchange], routing_key)
