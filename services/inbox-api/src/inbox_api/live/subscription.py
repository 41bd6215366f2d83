"""Receiving live events: this replica's own exclusive, server-named queue bound to the live
exchange, consumed without acks, and bound again whenever it is lost.

The queue is declared on the robust channel's current AMQP channel, outside aio-pika's
restore, on purpose. aio-pika restores a queue under the name it had, and the name of an
exclusive queue may still be held by the old connection on the server (after a partition,
until RabbitMQ notices that connection is dead): the declaration is refused, and that fails
the restore of the whole connection, the webhook consumer's channel included. So each
binding gets a fresh name from the server, and when its channel closes (the connection
dropped) or the broker cancels the consumer (someone deleted the queue), a new queue is
bound as soon as aio-pika has restored the channel.

Events published while unbound never reach this replica, so each rebinding calls
``on_gap``: the hub forgets what it buffered and tells its clients to reload.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any
from uuid import uuid4

from aio_pika.abc import AbstractRobustChannel
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from inbox_common.broker import topology
from inbox_common.broker.connection import Broker
from inbox_common.broker.topology import Names, declare
from inbox_common.logging import get_logger

log = get_logger(__name__)

# Safety nets on the broker's side: a queue left unconsumed (a binding that failed half-way)
# is deleted after a minute, and a replica that stops reading cannot pile up more than this
# many events there (the oldest go first).
QUEUE_ARGUMENTS: dict[str, Any] = {"x-expires": 60_000, "x-max-length": 10_000}
_RETRY_FIRST, _RETRY_MAX = 0.25, 5.0


class LiveSubscription:
    """Keeps this replica's queue bound to ``names.live_exchange``; see the module docstring."""

    def __init__(
        self,
        broker: Broker,
        names: Names,
        *,
        on_event: Callable[[bytes], None],
        on_gap: Callable[[], None],
    ) -> None:
        self._broker = broker
        self._names = names
        self._on_event = on_event
        self._on_gap = on_gap
        self._channel: AbstractRobustChannel | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._closing = False
        self.bound = False
        self.queue: str | None = None

    async def open(self) -> None:
        """Bind, then keep bound in the background; call again after a failure."""
        if self._channel is None:
            self._channel = await self._broker.connection.channel(publisher_confirms=False)
        if self._watcher is None:
            lost = await self._bind(self._channel)
            self._watcher = asyncio.create_task(self._keep_bound(lost), name="live-subscription")

    async def _bind(self, channel: AbstractRobustChannel) -> asyncio.Future[None]:
        """Declare the live piece and a fresh queue, bind and consume it; returns a future
        that completes when this binding is lost."""
        await declare(channel, topology.live_updates(self._names))
        amqp = await channel.get_underlay_channel()
        declared = await amqp.queue_declare(
            "", exclusive=True, auto_delete=True, arguments=QUEUE_ARGUMENTS
        )
        queue = declared.queue
        assert queue is not None  # the server names it
        await amqp.queue_bind(queue, self._names.live_exchange)
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        tag = f"live-{uuid4().hex}"

        def lose(*_: object) -> None:
            if not lost.done():
                lost.set_result(None)

        def on_cancel(frame: Basic.Cancel) -> None:
            if frame.consumer_tag == tag:
                lose()

        amqp.closing.add_done_callback(lose)
        amqp.on_consumer_cancel_callbacks.add(on_cancel)
        await amqp.basic_consume(queue, self._deliver, no_ack=True, consumer_tag=tag)
        self.queue, self.bound = queue, True
        log.info("live.bound", queue=queue)
        return lost

    async def _deliver(self, message: DeliveredMessage) -> None:
        self._on_event(message.body)

    async def _keep_bound(self, lost: asyncio.Future[None]) -> None:
        assert self._channel is not None
        while not self._closing:
            await lost
            self.bound = False
            log.warning("live.unbound", queue=self.queue, detail="binding again when possible")
            lost = await self._rebind(self._channel)
            self._on_gap()

    async def _rebind(self, channel: AbstractRobustChannel) -> asyncio.Future[None]:
        delay = _RETRY_FIRST
        while True:
            await channel.ready()  # aio-pika restores the channel after a reconnect
            try:
                return await self._bind(channel)
            except CONNECTION_EXCEPTIONS as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.warning("live.bind_failed", error=error, retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)

    async def close(self) -> None:
        # Ends the watcher even if the cancellation is swallowed inside aio-pika's bind.
        self._closing = True
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.wait([self._watcher])
        self.bound = False
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(*CONNECTION_EXCEPTIONS):
                async with asyncio.timeout(2):
                    await self._channel.close()
