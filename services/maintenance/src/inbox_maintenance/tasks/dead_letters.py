"""``dead_letters``: the dead-letter queues of the namespace, and a P2 alert for each one that
holds messages (resolved once it is empty again).

Nothing consumes a ``.dead`` queue: its messages wait for an operator to read, replay or
purge them. The queues are the namespace's topology's (``topology.everything``) and those of
each channel's send queue (``topology.number_sends``). Each is declared passively, which
changes nothing and answers the queue's message count; a number's queue that was never
declared (its channel never sent) simply holds nothing.
"""

from __future__ import annotations

import contextlib

from aio_pika.abc import AbstractChannel
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError, ChannelNotFoundEntity

from inbox_common.alerts import AlertKind, Alerts, Finding
from inbox_common.broker.connection import Broker
from inbox_common.broker.topology import Names, everything, number_sends
from inbox_common.store.client import Database
from inbox_common.store.collections import CHANNELS
from inbox_maintenance.tasks.context import TaskContext, TaskFailedError, TaskResult

KINDS = (AlertKind.DEAD_LETTERS,)
QUEUE_SECONDS = 5.0
# What a broker failure looks like from aio-pika (not RuntimeError at large: that is a bug).
BROKER_ERRORS = (AMQPError, ConnectionError, ChannelInvalidStateError, TimeoutError)


class DeadLetters:
    name = "dead_letters"
    needs_broker = True

    def __init__(self, db: Database, alerts: Alerts, broker: Broker | None, names: Names) -> None:
        self._db = db
        self._alerts = alerts
        self._broker = broker
        self._names = names

    async def queues(self) -> list[str]:
        """Every dead-letter queue of the namespace, the channels' number queues' included."""
        spec = everything(self._names)
        numbers = await self._db[CHANNELS].distinct("phone_number_id")
        for number in sorted(numbers):
            spec = spec + number_sends(number)(self._names)
        return sorted(q.name for q in spec.queues if q.name.endswith(".dead"))

    async def run(self, ctx: TaskContext) -> TaskResult:
        if self._broker is None or not self._broker.connected:
            raise TaskFailedError("dead_letters needs RabbitMQ, which is not connected now")
        queues = await self.queues()
        try:
            depths = await self._depths(queues)
        except BROKER_ERRORS as exc:
            raise TaskFailedError(f"RabbitMQ failed: {type(exc).__name__}: {exc}") from exc
        findings = []
        for queue, messages in depths.items():
            if messages:
                source = queue.removesuffix(".dead")
                findings.append(
                    Finding(
                        AlertKind.DEAD_LETTERS,
                        title=f"{messages} messages wait in {queue}: read their "
                        "x-inbox-dead-letter-reason (or x-death) header, fix the cause, then "
                        f"move them back to {source} or purge them",
                        subject=queue,
                        evidence={"queue": queue, "messages": messages, "source_queue": source},
                    )
                )
                ctx.say(f"{queue}: {messages} messages")
        await ctx.checkpoint()
        done = await self._alerts.reconcile(KINDS, findings, by="maintenance:dead_letters")
        held = sum(depths.values())
        return TaskResult(
            f"{len(depths)} dead-letter queues, {len(findings)} holding {held} messages; "
            f"{len(done.resolved)} alerts resolved",
            {
                "queues": len(depths),
                "holding": len(findings),
                "messages": held,
                "resolved": len(done.resolved),
            },
        )

    async def _depths(self, queues: list[str]) -> dict[str, int]:
        """Each queue's message count (0 for a queue that does not exist)."""
        assert self._broker is not None
        depths: dict[str, int] = {}
        channel: AbstractChannel | None = None
        try:
            for queue in queues:
                if channel is None:
                    channel = await self._broker.connection.channel()
                # On the channel underneath: aio-pika's robust channel answers a passive
                # declare of a queue it has seen from its cache, with that first count.
                underlay = await channel.get_underlay_channel()
                try:
                    declared = await underlay.queue_declare(
                        queue, passive=True, timeout=QUEUE_SECONDS
                    )
                except ChannelNotFoundEntity:
                    # The broker closed the channel on the 404: the next queue gets a new one.
                    depths[queue] = 0
                    with contextlib.suppress(Exception):
                        await channel.close()
                    channel = None
                    continue
                depths[queue] = int(declared.message_count or 0)
        finally:
            if channel is not None and not channel.is_closed:
                with contextlib.suppress(Exception):
                    await channel.close()
        return depths
