"""The broker topology, in pieces: each service declares the pieces it publishes to or
consumes from, and every queue's arguments are defined here, once.

Every name carries the ``AMQP_NAMESPACE`` prefix so tests and tenants can share a broker.
Work queues are quorum queues that dead-letter (at least once) to ``<ns>.dlx``, routed by
the source queue's name to its own ``<queue>.dead`` queue, after ``DELIVERY_LIMIT``
redeliveries; handlers also send poison messages there directly, with the reason.

Declaring is idempotent, so two services that declare the same piece (the publisher and the
consumer of a queue) agree by construction: the piece is one function of the namespace.

The pieces (names with the default namespace ``wa``):

- ``webhooks``: ``wa.webhooks`` (topic) → ``wa.inbox.webhooks``; published by webhook-ingest
  and replays, consumed by inbox-api.
- ``outbound``: ``wa.outbound`` (direct) → ``wa.outbound.send``: read receipts, consumed by
  inbox-api's sender.
- ``number_sends(phone_number_id)``: ``wa.outbound`` (routing key = the phone_number_id) →
  ``wa.outbound.number.<phone_number_id>``: the sends of agents and campaigns from one
  number. A single-active-consumer queue: whichever inbox-api replicas run, one sender at a
  time sends for a number, so it alone paces the number to Meta's rate.
- ``retries``: ``wa.retry`` (direct, routing key = tier) → the delay tiers ``wa.retry.5s``,
  ``.30s``, ``.2m``, ``.10m``, ``.1h``: a message waits out its queue's TTL and is then
  dead-lettered through the default exchange to ``wa.retry.due``, consumed by retry-worker.
  Waiting in a tier is not a delivery, so it never counts toward the delivery limit.
- ``maintenance``: ``wa.maintenance`` (direct) → ``wa.maintenance.tasks``, consumed by the
  maintenance service.
- ``live_updates``: ``wa.live`` (fanout); every inbox-api replica binds its own exclusive,
  server-named queue to it at run time, so an update reaches every replica.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel

DELIVERY_LIMIT = 20
WEBHOOK_ROUTING_KEY = "whatsapp.webhook"
OUTBOUND_ROUTING_KEY = "send"
MAINTENANCE_ROUTING_KEY = "task"
# The delay tiers of retries, shortest first: (name, seconds).
RETRY_TIERS: tuple[tuple[str, int], ...] = (
    ("5s", 5),
    ("30s", 30),
    ("2m", 120),
    ("10m", 600),
    ("1h", 3600),
)


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
    """Every exchange and queue name of one namespace, and its work queues' delivery limit
    (a queue argument: every service of a namespace must use the same)."""

    namespace: str
    delivery_limit: int = DELIVERY_LIMIT

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.namespace}.dlx"

    def dead_letter_queue(self, queue: str) -> str:
        return f"{queue}.dead"

    @property
    def webhooks_exchange(self) -> str:
        return f"{self.namespace}.webhooks"

    @property
    def webhooks_queue(self) -> str:
        return f"{self.namespace}.inbox.webhooks"

    @property
    def outbound_exchange(self) -> str:
        return f"{self.namespace}.outbound"

    @property
    def outbound_queue(self) -> str:
        return f"{self.namespace}.outbound.send"

    def number_queue(self, phone_number_id: str) -> str:
        return f"{self.namespace}.outbound.number.{phone_number_id}"

    def is_number_queue(self, queue: str) -> bool:
        """Whether ``queue`` is one number's send queue in this namespace."""
        number = queue.removeprefix(self.number_queue(""))
        return number != queue and number.isdigit()

    @property
    def retry_exchange(self) -> str:
        return f"{self.namespace}.retry"

    def retry_tier_queue(self, tier: str) -> str:
        return f"{self.namespace}.retry.{tier}"

    @property
    def retry_due_queue(self) -> str:
        return f"{self.namespace}.retry.due"

    @property
    def maintenance_exchange(self) -> str:
        return f"{self.namespace}.maintenance"

    @property
    def maintenance_queue(self) -> str:
        return f"{self.namespace}.maintenance.tasks"

    @property
    def live_exchange(self) -> str:
        return f"{self.namespace}.live"


@dataclass(frozen=True, slots=True)
class Topology:
    """Exchanges and queues to declare; ``consumed`` is the queue a consumer of it reads."""

    exchanges: tuple[ExchangeSpec, ...]
    queues: tuple[QueueSpec, ...]
    consumed: str | None = None
    label: str = ""

    def __add__(self, other: Topology) -> Topology:
        exchanges = {e.name: e for e in (*self.exchanges, *other.exchanges)}
        queues = {q.name: q for q in (*self.queues, *other.queues)}
        return Topology(tuple(exchanges.values()), tuple(queues.values()))


Piece = Callable[[Names], Topology]


def _work_queue(names: Names, name: str, bindings: tuple[tuple[str, str], ...]) -> QueueSpec:
    return QueueSpec(
        name=name,
        arguments={
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": names.dead_letter_exchange,
            "x-dead-letter-routing-key": name,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
            "x-delivery-limit": names.delivery_limit,
        },
        bindings=bindings,
    )


def _dead_letter_queue(names: Names, source: str) -> QueueSpec:
    return QueueSpec(
        name=names.dead_letter_queue(source),
        arguments={"x-queue-type": "quorum"},
        bindings=((names.dead_letter_exchange, source),),
    )


def _dlx(names: Names) -> ExchangeSpec:
    return ExchangeSpec(names.dead_letter_exchange, aio_pika.ExchangeType.DIRECT)


def _consumed_piece(
    names: Names, label: str, exchange: ExchangeSpec, queue: str, routing_key: str
) -> Topology:
    work = _work_queue(names, queue, ((exchange.name, routing_key),))
    return Topology(
        exchanges=(exchange, _dlx(names)),
        queues=(work, _dead_letter_queue(names, queue)),
        consumed=queue,
        label=label,
    )


def webhooks(names: Names) -> Topology:
    exchange = ExchangeSpec(names.webhooks_exchange, aio_pika.ExchangeType.TOPIC)
    return _consumed_piece(names, "webhook", exchange, names.webhooks_queue, "whatsapp.#")


def outbound(names: Names) -> Topology:
    exchange = ExchangeSpec(names.outbound_exchange, aio_pika.ExchangeType.DIRECT)
    return _consumed_piece(names, "outbound", exchange, names.outbound_queue, OUTBOUND_ROUTING_KEY)


def number_sends(phone_number_id: str) -> Piece:
    """The piece of one number's sends (see the module docstring)."""

    def piece(names: Names) -> Topology:
        exchange = ExchangeSpec(names.outbound_exchange, aio_pika.ExchangeType.DIRECT)
        spec = _consumed_piece(
            names, "number", exchange, names.number_queue(phone_number_id), phone_number_id
        )
        work, dead = spec.queues
        single = QueueSpec(
            work.name, {**work.arguments, "x-single-active-consumer": True}, work.bindings
        )
        return Topology(spec.exchanges, (single, dead), consumed=single.name, label="number")

    return piece


def retries(names: Names) -> Topology:
    exchange = ExchangeSpec(names.retry_exchange, aio_pika.ExchangeType.DIRECT)
    tiers = tuple(
        QueueSpec(
            name=names.retry_tier_queue(tier),
            arguments={
                "x-queue-type": "quorum",
                "x-message-ttl": seconds * 1000,
                # Expired: through the default exchange, straight to the due queue.
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": names.retry_due_queue,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
            bindings=((exchange.name, tier),),
        )
        for tier, seconds in RETRY_TIERS
    )
    due = _work_queue(names, names.retry_due_queue, ())
    return Topology(
        exchanges=(exchange, _dlx(names)),
        queues=(*tiers, due, _dead_letter_queue(names, due.name)),
        consumed=due.name,
        label="retry",
    )


def maintenance(names: Names) -> Topology:
    exchange = ExchangeSpec(names.maintenance_exchange, aio_pika.ExchangeType.DIRECT)
    return _consumed_piece(
        names, "maintenance", exchange, names.maintenance_queue, MAINTENANCE_ROUTING_KEY
    )


def live_updates(names: Names) -> Topology:
    return Topology(
        exchanges=(ExchangeSpec(names.live_exchange, aio_pika.ExchangeType.FANOUT),),
        queues=(),
        label="live",
    )


PIECES: tuple[Piece, ...] = (webhooks, outbound, retries, maintenance, live_updates)


def everything(names: Names) -> Topology:
    """Every piece of ``names.namespace`` (what readiness checks, what tests clean up)."""
    whole = Topology((), ())
    for piece in PIECES:
        whole = whole + piece(names)
    return whole


async def declare(channel: AbstractChannel, spec: Topology) -> None:
    """Declare ``spec`` on ``channel``; declaring the same topology again changes nothing."""
    exchanges = {}
    for ex in spec.exchanges:
        exchanges[ex.name] = await channel.declare_exchange(ex.name, ex.type, durable=True)
    for q in spec.queues:
        queue = await channel.declare_queue(q.name, durable=True, arguments=q.arguments)
        for exchange, routing_key in q.bindings:
            await queue.bind(exchanges[exchange], routing_key)
