"""The topology's pieces against the real broker: what each service declares, routed as
the design says (outbound, the delay tiers into the due queue, maintenance, live updates)."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel

from inbox_common.broker import topology
from inbox_common.broker.topology import (
    MAINTENANCE_ROUTING_KEY,
    OUTBOUND_ROUTING_KEY,
    PIECES,
    RETRY_TIERS,
    Names,
    declare,
    everything,
)

pytestmark = pytest.mark.integration


def test_every_piece_is_named_in_the_namespace() -> None:
    names = Names("ns1")
    whole = everything(names)
    every = [e.name for e in whole.exchanges] + [q.name for q in whole.queues]
    assert all(n.startswith("ns1.") for n in every), every
    assert {q.name for q in whole.queues} >= {
        "ns1.inbox.webhooks",
        "ns1.outbound.send",
        "ns1.retry.5s",
        "ns1.retry.1h",
        "ns1.retry.due",
        "ns1.maintenance.tasks",
    }


def test_each_queue_is_defined_once_with_one_set_of_arguments() -> None:
    names = Names("ns1")
    seen: dict[str, dict[str, object]] = {}
    for piece in PIECES:
        for queue in piece(names).queues:
            assert seen.setdefault(queue.name, queue.arguments) == queue.arguments, queue.name


def test_delay_tiers_expire_into_the_due_queue_and_count_no_delivery() -> None:
    names = Names("ns1")
    queues = {q.name: q for q in topology.retries(names).queues}
    for tier, seconds in RETRY_TIERS:
        args = queues[names.retry_tier_queue(tier)].arguments
        assert args["x-message-ttl"] == seconds * 1000
        assert args["x-dead-letter-exchange"] == ""  # the default exchange: by queue name
        assert args["x-dead-letter-routing-key"] == names.retry_due_queue
        assert "x-delivery-limit" not in args  # waiting is not a delivery
    assert topology.retries(names).consumed == names.retry_due_queue


async def _declared(channel: AbstractChannel, names: Names) -> None:
    for _ in range(2):  # idempotent: the second declaration changes nothing
        await declare(channel, everything(names))


async def test_outbound_and_maintenance_route_to_their_work_queues(
    amqp_channel: AbstractChannel, names: Names
) -> None:
    await _declared(amqp_channel, names)
    for exchange, key, queue in (
        (names.outbound_exchange, OUTBOUND_ROUTING_KEY, names.outbound_queue),
        (names.maintenance_exchange, MAINTENANCE_ROUTING_KEY, names.maintenance_queue),
    ):
        target = await amqp_channel.get_exchange(exchange)
        await target.publish(aio_pika.Message(b"work"), key)
        message = await (await amqp_channel.get_queue(queue)).get(timeout=5)
        await message.ack()
        assert message.body == b"work"


@pytest.mark.slow
async def test_a_message_waits_out_its_tier_then_reaches_the_due_queue(
    amqp_channel: AbstractChannel, names: Names
) -> None:
    await _declared(amqp_channel, names)
    retry = await amqp_channel.get_exchange(names.retry_exchange)
    due = await amqp_channel.get_queue(names.retry_due_queue)
    loop = asyncio.get_running_loop()
    sent = loop.time()
    await retry.publish(aio_pika.Message(b"again", message_id="m1"), "5s")

    assert await due.get(fail=False) is None  # not before the tier's TTL
    message = None
    while message is None and loop.time() - sent < 15:
        message = await due.get(fail=False)
        if message is None:
            await asyncio.sleep(0.1)
    assert message is not None, "the message never left the 5s tier"
    await message.ack()
    waited = loop.time() - sent
    assert waited >= 4.5, f"it left the 5s tier after {waited:.2f}s"
    assert message.message_id == "m1"
    assert message.body == b"again"


async def test_live_updates_reach_every_bound_replica(
    amqp_channel: AbstractChannel, names: Names
) -> None:
    await _declared(amqp_channel, names)
    live = await amqp_channel.get_exchange(names.live_exchange)
    replicas = []
    for _ in range(2):  # each replica binds its own exclusive, server-named queue
        queue = await amqp_channel.declare_queue(exclusive=True)
        await queue.bind(live)
        replicas.append(queue)
    await live.publish(aio_pika.Message(b"conversation.updated"), "")
    for queue in replicas:
        message = await queue.get(timeout=5)
        await message.ack()
        assert message.body == b"conversation.updated"
