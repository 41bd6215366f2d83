"""Publishing live events: fire and forget, in the order the callers made them.

Events are published from hot paths (the webhook consumer's flushes, REST actions), and they
are a UI nicety whose truth is in the store. So publishing only puts the body in a bounded
outbox and returns; one task sends the outbox on the hub's own channel, without publisher
confirms, so no caller ever waits for RabbitMQ. While the broker is unreachable, events are
dropped at once and counted: keeping them would only deliver stale news later, and every
replica tells its clients to reload once it is back (see ``subscription``).
"""

from __future__ import annotations

import asyncio
import contextlib

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractRobustChannel
from aio_pika.exceptions import CONNECTION_EXCEPTIONS

from inbox_api.live.metrics import LiveMetrics
from inbox_common.broker.connection import Broker
from inbox_common.broker.topology import Topology, declare
from inbox_common.logging import get_logger

log = get_logger(__name__)

# A publish without confirm only writes a frame; this bounds a write stuck on a dead socket.
PUBLISH_SECONDS = 2.0
BACKLOG = 10_000


class LivePublisher:
    """Sends events to the live exchange of ``broker``; see the module docstring."""

    def __init__(
        self, broker: Broker, exchange: str, metrics: LiveMetrics, *, backlog: int = BACKLOG
    ) -> None:
        self._broker = broker
        self._exchange_name = exchange
        self._metrics = metrics
        self._outbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(backlog)
        self._channel: AbstractRobustChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._sender: asyncio.Task[None] | None = None

    async def open(self, spec: Topology) -> None:
        """Declare ``spec``, open the channel and start sending; again after a failure."""
        if self._channel is None:
            self._channel = await self._broker.connection.channel(publisher_confirms=False)
        await declare(self._channel, spec)
        self._exchange = await self._channel.get_exchange(self._exchange_name, ensure=False)
        if self._sender is None:
            self._sender = asyncio.create_task(self._send(), name="live-publisher")

    def offer(self, event_id: str, body: bytes) -> None:
        """Queue an event to be published; never raises, never waits."""
        if self._exchange is None or not self._broker.connected:
            self.drop("broker_unavailable")
            return
        try:
            self._outbox.put_nowait((event_id, body))
        except asyncio.QueueFull:
            self.drop("backlog")

    def drop(self, reason: str, count: int = 1) -> None:
        self._metrics.dropped.labels(reason).inc(count)
        log.debug("live.event_dropped", reason=reason, count=count)

    async def _send(self) -> None:
        while True:
            event_id, body = await self._outbox.get()
            exchange = self._exchange
            assert exchange is not None  # offer() queues nothing before open()
            message = aio_pika.Message(
                body,
                content_type="application/json",
                message_id=event_id,
                delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
            )
            try:
                async with asyncio.timeout(PUBLISH_SECONDS):
                    await exchange.publish(message, routing_key="")
            except CONNECTION_EXCEPTIONS as exc:
                # What waits behind it would go stale before the broker is back: drop it too.
                self.drop("broker_unavailable", 1 + self._discard_outbox())
                log.debug("live.publish_failed", error=f"{type(exc).__name__}: {exc}")
                continue
            self._metrics.published.inc()

    def _discard_outbox(self) -> int:
        count = 0
        while not self._outbox.empty():
            self._outbox.get_nowait()
            count += 1
        return count

    async def close(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            await asyncio.wait([self._sender])
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(*CONNECTION_EXCEPTIONS):
                async with asyncio.timeout(2):
                    await self._channel.close()
