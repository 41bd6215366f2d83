"""The broker library against the real RabbitMQ: topology, confirmed publisher, consumer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import aiormq
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from prometheus_client import CollectorRegistry

from inbox_common.broker.connection import Broker, BrokerUnavailableError
from inbox_common.broker.consumer import (
    PARKED_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    TIER_HEADER,
    Consumer,
    ConsumerMetrics,
)
from inbox_common.broker.publisher import ConfirmedPublisher, PublishFailedError
from inbox_common.broker.topology import (
    DELIVERY_LIMIT,
    WEBHOOK_ROUTING_KEY,
    Names,
    declare,
    everything,
)
from inbox_common.errors import PermanentError, TransientError
from inbox_common.health import Status
from inbox_common.local.ports import free_port
from inbox_testkit.backends import AmqpNamespace
from inbox_testkit.broker import FAST_RETRY, broker_connection, delivery_attempt, header_str
from inbox_testkit.polling import wait_until

pytestmark = pytest.mark.integration


async def queue_state(channel: AbstractChannel, name: str) -> tuple[int, int]:
    """(ready messages, consumers) of ``name``, asked from the broker (never cached)."""
    underlay = await channel.get_underlay_channel()
    ok = await underlay.queue_declare(name, passive=True)
    return ok.message_count or 0, ok.consumer_count or 0


async def drain(queue: AbstractQueue) -> list[AbstractIncomingMessage]:
    """Get and ack every ready message of ``queue``."""
    messages = []
    while (message := await queue.get(fail=False, timeout=5)) is not None:
        await message.ack()
        messages.append(message)
    return messages


def make_consumer(
    broker: Broker,
    names: Names,
    publisher: ConfirmedPublisher,
    handler: Callable[[AbstractIncomingMessage], Awaitable[None]],
    *,
    prefetch: int = 8,
    dead_letter_exchange: str | None = None,
    registry: CollectorRegistry | None = None,
    ready: Callable[[], Awaitable[bool]] | None = None,
) -> Consumer:
    return Consumer(
        broker,
        names.webhooks_queue,
        handler,
        dead_letter_exchange=dead_letter_exchange or names.dead_letter_exchange,
        publisher=publisher,
        metrics=ConsumerMetrics(registry or CollectorRegistry()),
        prefetch=prefetch,
        retry=FAST_RETRY,
        retry_exchange=names.retry_exchange,
        ready=ready,
    )


async def publish(publisher: ConfirmedPublisher, names: Names, body: bytes, **kw: Any) -> None:
    await publisher.publish(names.webhooks_exchange, WEBHOOK_ROUTING_KEY, body, **kw)


# --- topology -------------------------------------------------------------------------------


def test_every_name_carries_the_namespace() -> None:
    names = Names("ns1")
    spec = everything(names)

    all_names = [e.name for e in spec.exchanges] + [q.name for q in spec.queues]
    assert all(n.startswith("ns1.") for n in all_names)
    assert names.webhooks_queue in all_names
    assert names.dead_letter_queue(names.webhooks_queue) == "ns1.inbox.webhooks.dead"


def test_work_queues_are_quorum_with_dead_lettering() -> None:
    names = Names("ns1")
    queues = {q.name: q for q in everything(names).queues}
    args = queues[names.webhooks_queue].arguments

    assert args["x-queue-type"] == "quorum"
    assert args["x-dead-letter-exchange"] == names.dead_letter_exchange
    assert args["x-dead-letter-routing-key"] == names.webhooks_queue
    assert args["x-dead-letter-strategy"] == "at-least-once"
    assert args["x-delivery-limit"] == DELIVERY_LIMIT
    dead = queues[names.dead_letter_queue(names.webhooks_queue)]
    assert dead.arguments["x-queue-type"] == "quorum"
    assert dead.bindings == ((names.dead_letter_exchange, names.webhooks_queue),)


async def test_declaring_twice_changes_nothing(
    broker: Broker, publisher: ConfirmedPublisher, names: Names, work_queue: AbstractQueue
) -> None:
    await publish(publisher, names, b"kept")
    for _ in range(2):
        channel = await broker.connection.channel()
        await declare(channel, everything(names))
        await channel.close()

    message = await work_queue.get(timeout=5)
    await message.ack()
    assert message.body == b"kept"


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param({"x-queue-type": "classic"}, id="classic"),
        pytest.param({"x-queue-type": "quorum"}, id="quorum-without-dlx"),
    ],
)
async def test_the_live_queue_is_quorum_with_a_dlx(
    broker: Broker, names: Names, arguments: dict[str, Any]
) -> None:
    # No management API here: a declaration with other arguments is refused (406) when the
    # live queue differs from them, which proves what the live queue is.
    channel = await broker.connection.channel()
    with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
        await channel.declare_queue(names.webhooks_queue, durable=True, arguments=arguments)


async def test_a_message_returned_too_often_is_dead_lettered_by_the_broker(
    publisher: ConfirmedPublisher,
    names: Names,
    work_queue: AbstractQueue,
    dead_queue: AbstractQueue,
) -> None:
    await publish(publisher, names, b"poison", message_id="p1")

    for _ in range(DELIVERY_LIMIT + 1):
        message = await work_queue.get(timeout=5)
        await message.nack(requeue=True)

    async def dead_lettered() -> bool:
        return await dead_queue.get(fail=False, timeout=5) is not None

    await wait_until(dead_lettered, "the delivery limit to dead-letter the message")
    assert await work_queue.get(fail=False, timeout=5) is None


# --- publisher ------------------------------------------------------------------------------


async def test_a_confirmed_message_is_persistent_with_id_and_headers(
    publisher: ConfirmedPublisher, names: Names, work_queue: AbstractQueue
) -> None:
    await publish(
        publisher,
        names,
        b'{"hello":1}',
        message_id="abc",
        headers={"sha256": "abc", "request_id": "r-1"},
        content_type="application/json",
    )

    message = await work_queue.get(timeout=5)
    await message.ack()
    assert message.body == b'{"hello":1}'
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.message_id == "abc"
    assert message.content_type == "application/json"
    assert header_str(message.headers, "sha256") == "abc"
    assert header_str(message.headers, "request_id") == "r-1"
    assert header_str(message.headers, "missing") is None


async def test_an_unroutable_message_is_returned(
    publisher: ConfirmedPublisher, names: Names, work_queue: AbstractQueue
) -> None:
    with pytest.raises(PublishFailedError) as caught:
        await publisher.publish(names.webhooks_exchange, "nothing.binds.this", b"lost")

    assert caught.value.reason == "returned"
    assert await work_queue.get(fail=False, timeout=5) is None


async def test_a_missing_exchange_fails_and_the_publisher_recovers(
    publisher: ConfirmedPublisher,
    names: Names,
    amqp_namespace: AmqpNamespace,
    work_queue: AbstractQueue,
) -> None:
    missing = amqp_namespace.qualify("no.such.exchange")
    amqp_namespace.track(missing)

    with pytest.raises(PublishFailedError) as caught:
        await publisher.publish(missing, "k", b"nowhere")

    assert caught.value.reason == "returned"
    assert "does not exist" in str(caught.value)
    # The 404 closed the confirm channel; the very next publish must go through.
    await publish(publisher, names, b"after")
    message = await work_queue.get(timeout=5)
    await message.ack()
    assert message.body == b"after"


async def test_a_publish_during_the_services_broker_setup_waits_for_the_channel(
    broker: Broker, names: Names, work_queue: AbstractQueue
) -> None:
    """Connected, confirm channel not open yet (a service's first moments): it waits."""
    publisher = ConfirmedPublisher(broker, timeout=5)
    publishing = asyncio.create_task(publish(publisher, names, b"early"))
    await asyncio.sleep(0.2)
    assert not publishing.done()

    await publisher.start()

    await asyncio.wait_for(publishing, 5)
    message = await work_queue.get(timeout=5)
    await message.ack()
    assert message.body == b"early"


async def test_a_publisher_never_started_fails_after_its_timeout(broker: Broker) -> None:
    publisher = ConfirmedPublisher(broker, timeout=0.2)

    with pytest.raises(PublishFailedError) as caught:
        await publisher.publish("x.webhooks", WEBHOOK_ROUTING_KEY, b"body")

    assert caught.value.reason == "broker_unavailable"
    assert "was not open within 0.2s" in str(caught.value)


async def test_an_unreachable_broker_fails_fast_and_reports_down() -> None:
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    async with broker_connection(url, name="unreachable") as broker:
        publisher = ConfirmedPublisher(broker, timeout=5)
        loop = asyncio.get_running_loop()
        started = loop.time()

        with pytest.raises(PublishFailedError) as caught:
            await publisher.publish("x.webhooks", WEBHOOK_ROUTING_KEY, b"body")

        assert caught.value.reason == "broker_unavailable"
        assert loop.time() - started < 0.5
        assert not broker.connected
        assert (await broker.probe()).status is Status.DOWN
        with pytest.raises(BrokerUnavailableError, match="not reachable"):
            await broker.wait_connected(timeout=0.2)


async def test_a_connected_broker_is_healthy(broker: Broker) -> None:
    assert broker.connected
    assert (await broker.probe()).status is Status.OK


async def test_concurrent_publishes_are_all_confirmed(
    publisher: ConfirmedPublisher, names: Names, amqp_channel: AbstractChannel
) -> None:
    count = 500

    await asyncio.gather(
        *(publish(publisher, names, str(i).encode(), message_id=str(i)) for i in range(count))
    )

    ready, _ = await queue_state(amqp_channel, names.webhooks_queue)
    assert ready == count


# --- consumer, one message at a time --------------------------------------------------------


async def test_a_handled_message_is_acked(
    broker: Broker,
    names: Names,
    publisher: ConfirmedPublisher,
    work_queue: AbstractQueue,
    dead_queue: AbstractQueue,
) -> None:
    seen: list[bytes] = []

    async def handler(message: AbstractIncomingMessage) -> None:
        seen.append(message.body)

    registry = CollectorRegistry()
    consumer = make_consumer(broker, names, publisher, handler, registry=registry)
    await publish(publisher, names, b"ok")

    outcome = await consumer.process(await work_queue.get(timeout=5))

    assert outcome == "acked"
    assert seen == [b"ok"]
    assert await work_queue.get(fail=False, timeout=5) is None
    assert await dead_queue.get(fail=False, timeout=5) is None
    labels = {"queue": names.webhooks_queue, "outcome": "acked"}
    assert registry.get_sample_value("consumer_messages_total", labels) == 1.0


async def test_a_permanent_error_dead_letters_with_the_reason(
    broker: Broker,
    names: Names,
    publisher: ConfirmedPublisher,
    work_queue: AbstractQueue,
    dead_queue: AbstractQueue,
) -> None:
    async def handler(message: AbstractIncomingMessage) -> None:
        raise PermanentError("bad_shape", "field x is missing")

    consumer = make_consumer(broker, names, publisher, handler)
    await publish(publisher, names, b"poison", message_id="m-1", headers={"request_id": "r-9"})

    outcome = await consumer.process(await work_queue.get(timeout=5))

    assert outcome == "dead_lettered"
    assert await work_queue.get(fail=False, timeout=5) is None
    dead = await dead_queue.get(timeout=5)
    await dead.ack()
    assert dead.body == b"poison"
    assert dead.message_id == "m-1"
    assert header_str(dead.headers, REASON_HEADER) == "bad_shape: field x is missing"
    assert header_str(dead.headers, QUEUE_HEADER) == names.webhooks_queue
    assert header_str(dead.headers, "request_id") == "r-9"


async def test_a_transient_error_parks_the_message_uncounted_and_pauses_the_consumer(
    broker: Broker, names: Names, publisher: ConfirmedPublisher, work_queue: AbstractQueue
) -> None:
    calls = 0
    store_up = False

    async def handler(message: AbstractIncomingMessage) -> None:
        nonlocal calls
        calls += 1
        if not store_up:
            raise TransientError("store_unavailable", "MongoDB is down")

    async def ready() -> bool:
        return store_up

    consumer = make_consumer(broker, names, publisher, handler, ready=ready)
    await consumer.start()
    try:
        await publish(publisher, names, b"later", message_id="m-later", headers={"request_id": "r"})

        async def paused() -> bool:
            return consumer.paused

        await wait_until(paused, "the consumer to pause")
        # Retried in process, then parked: published again to the queue's tail as a new
        # message, so the outage never counts toward the delivery limit, however long it is.
        assert calls == FAST_RETRY.attempts
        health = await consumer.probe()
        assert health.status is Status.DEGRADED
        assert "store_unavailable" in (health.detail or "")
        # The consumer pauses first, then publishes the parked copy: wait for the copy.
        parked = await _next_message(work_queue)  # paused: nobody else takes it
        assert parked.body == b"later"
        assert parked.message_id == "m-later"
        assert header_str(parked.headers, "request_id") == "r"
        assert header_str(parked.headers, PARKED_HEADER) == "1"
        assert delivery_attempt(parked) == 1
        await parked.nack(requeue=True)
        await asyncio.sleep(0.3)
        assert calls == FAST_RETRY.attempts  # still paused: the store does not answer

        store_up = True  # it answers again: the consumer resumes by itself

        async def resumed() -> bool:
            return not consumer.paused

        await wait_until(resumed, "the consumer to resume", timeout=10)
        await wait_until(lambda: _drained(work_queue), "the parked message to be consumed")
        assert calls == FAST_RETRY.attempts + 1
    finally:
        await consumer.stop()


async def test_stopping_a_paused_consumer_ends_even_when_the_probe_swallows_the_cancellation(
    broker: Broker, names: Names, publisher: ConfirmedPublisher
) -> None:
    # A cancellation can be lost inside a store call (Python 3.11's wait_for swallows one
    # that arrives as its awaitable completes): here the probe turns it into "not ready".
    probes = 0

    async def handler(message: AbstractIncomingMessage) -> None:
        raise TransientError("store_unavailable", "MongoDB is down")

    async def ready() -> bool:
        nonlocal probes
        probes += 1
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            return False
        return False

    consumer = make_consumer(broker, names, publisher, handler, ready=ready)
    await consumer.start()
    await publish(publisher, names, b"later", message_id="m-later")

    async def probed() -> bool:
        return probes >= 2

    await wait_until(probed, "the paused consumer to probe its dependencies")
    stopping = asyncio.create_task(consumer.stop())
    done, _ = await asyncio.wait({stopping}, timeout=3)  # no cancellation of its own on timeout
    stuck = stopping not in done
    while not stopping.done():  # let a stuck loop go, so the failure does not leak it
        stopping.cancel()
        await asyncio.sleep(0.02)
    assert not stuck, "stop() did not end the paused consumer's resume loop"


async def _next_message(queue: AbstractQueue) -> AbstractIncomingMessage:
    got: AbstractIncomingMessage | None = None

    async def arrived() -> bool:
        nonlocal got
        got = await queue.get(fail=False, timeout=5)
        return got is not None

    await wait_until(arrived, f"a message in {queue.name}")
    assert got is not None
    return got


async def _drained(queue: AbstractQueue) -> bool:
    declared = await queue.channel.declare_queue(queue.name, passive=True)
    return (declared.declaration_result.message_count or 0) == 0


async def test_a_transient_error_with_a_tier_moves_the_message_to_that_delay_tier(
    broker: Broker,
    names: Names,
    publisher: ConfirmedPublisher,
    work_queue: AbstractQueue,
    amqp_channel: AbstractChannel,
) -> None:
    async def handler(message: AbstractIncomingMessage) -> None:
        raise TransientError("rate_limited", "130429 throughput exceeded", tier="30s")

    consumer = make_consumer(broker, names, publisher, handler)
    await publish(publisher, names, b"send me later", message_id="s-1")

    assert await consumer.process(await work_queue.get(timeout=5)) == "delayed"

    tier = await amqp_channel.get_queue(names.retry_tier_queue("30s"))
    waiting = await tier.get(timeout=5)
    await waiting.ack()
    assert waiting.body == b"send me later"
    assert waiting.message_id == "s-1"
    assert header_str(waiting.headers, TIER_HEADER) == "30s"
    assert header_str(waiting.headers, QUEUE_HEADER) == names.webhooks_queue
    assert await work_queue.get(fail=False, timeout=1) is None
    assert not consumer.paused


async def test_a_transient_error_that_clears_is_acked(
    broker: Broker, names: Names, publisher: ConfirmedPublisher, work_queue: AbstractQueue
) -> None:
    calls = 0

    async def handler(message: AbstractIncomingMessage) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise TransientError("store_unavailable", "a blip")

    consumer = make_consumer(broker, names, publisher, handler)
    await publish(publisher, names, b"blip")

    assert await consumer.process(await work_queue.get(timeout=5)) == "acked"
    assert calls == 2
    assert await work_queue.get(fail=False, timeout=5) is None


async def test_a_crashing_handler_requeues_loudly_and_never_dead_letters(
    broker: Broker,
    names: Names,
    publisher: ConfirmedPublisher,
    work_queue: AbstractQueue,
    dead_queue: AbstractQueue,
) -> None:
    async def handler(message: AbstractIncomingMessage) -> None:
        raise TypeError("a bug")

    registry = CollectorRegistry()
    consumer = make_consumer(broker, names, publisher, handler, registry=registry)
    await publish(publisher, names, b"bug")

    outcome = await consumer.process(await work_queue.get(timeout=5))

    # A bug is not bad input: back to the queue, counted, and the health says so.
    assert outcome == "crashed"
    labels = {"queue": names.webhooks_queue, "exception": "TypeError"}
    assert registry.get_sample_value("consumer_crashes_total", labels) == 1
    again = await work_queue.get(timeout=5)
    await again.ack()
    assert again.redelivered
    assert await dead_queue.get(fail=False, timeout=1) is None


async def test_a_crashing_handler_turns_the_consumer_degraded(
    broker: Broker, names: Names, publisher: ConfirmedPublisher, work_queue: AbstractQueue
) -> None:
    crashes = 0

    async def handler(message: AbstractIncomingMessage) -> None:
        nonlocal crashes
        crashes += 1
        raise KeyError("field")

    consumer = make_consumer(broker, names, publisher, handler)
    await consumer.start()
    try:
        assert (await consumer.probe()).status is Status.OK
        await publish(publisher, names, b"bug")

        async def crashed() -> bool:
            return crashes > 0

        await wait_until(crashed, "the handler to crash")
        health = await consumer.probe()
        assert health.status is Status.DEGRADED
        assert "KeyError" in (health.detail or "")
    finally:
        await consumer.stop()
    leftover = await work_queue.get(timeout=5)  # still there: a bug loses nothing
    await leftover.ack()


async def test_a_poison_message_is_requeued_when_the_dead_letter_publish_fails(
    broker: Broker,
    names: Names,
    publisher: ConfirmedPublisher,
    amqp_namespace: AmqpNamespace,
    work_queue: AbstractQueue,
) -> None:
    async def handler(message: AbstractIncomingMessage) -> None:
        raise PermanentError("bad_shape", "unusable")

    missing_dlx = amqp_namespace.qualify("missing.dlx")
    amqp_namespace.track(missing_dlx)
    consumer = make_consumer(broker, names, publisher, handler, dead_letter_exchange=missing_dlx)
    await publish(publisher, names, b"keep me")

    outcome = await consumer.process(await work_queue.get(timeout=5))

    assert outcome == "requeued"
    again = await work_queue.get(timeout=5)
    await again.ack()
    assert again.body == b"keep me"


# --- consumer, running ----------------------------------------------------------------------


async def test_a_running_consumer_holds_at_most_prefetch_messages(
    broker: Broker, names: Names, publisher: ConfirmedPublisher, amqp_channel: AbstractChannel
) -> None:
    prefetch, total = 4, 12
    gate = asyncio.Event()
    inflight: set[str] = set()
    done: list[str] = []
    most = 0

    async def handler(message: AbstractIncomingMessage) -> None:
        nonlocal most
        assert message.message_id is not None
        inflight.add(message.message_id)
        most = max(most, len(inflight))
        await gate.wait()
        inflight.discard(message.message_id)
        done.append(message.message_id)

    consumer = make_consumer(broker, names, publisher, handler, prefetch=prefetch)
    await asyncio.gather(
        *(publish(publisher, names, b"x", message_id=str(i)) for i in range(total))
    )
    await consumer.start()
    try:

        async def full() -> bool:
            return len(inflight) == prefetch

        await wait_until(full, f"{prefetch} messages in flight")
        # The broker holds back the rest: they are still ready in the queue.
        ready, consumers = await queue_state(amqp_channel, names.webhooks_queue)
        assert (ready, consumers) == (total - prefetch, 1)
        assert (await consumer.probe()).status is Status.OK

        gate.set()

        async def all_done() -> bool:
            return len(done) == total

        await wait_until(all_done, "every message handled")
    finally:
        gate.set()
        await consumer.stop()

    assert most == prefetch
    assert sorted(done, key=int) == [str(i) for i in range(total)]
    assert await queue_state(amqp_channel, names.webhooks_queue) == (0, 0)
    assert (await consumer.probe()).status is Status.DOWN


async def test_stopping_a_consumer_loses_nothing(
    broker: Broker,
    names: Names,
    publisher: ConfirmedPublisher,
    amqp_channel: AbstractChannel,
    work_queue: AbstractQueue,
) -> None:
    prefetch, total = 5, 20
    gate = asyncio.Event()
    started: list[AbstractIncomingMessage] = []
    handled: list[str] = []

    async def handler(message: AbstractIncomingMessage) -> None:
        started.append(message)
        await gate.wait()
        handled.append(str(message.message_id))

    consumer = make_consumer(broker, names, publisher, handler, prefetch=prefetch)
    await asyncio.gather(
        *(publish(publisher, names, b"x", message_id=str(i)) for i in range(total))
    )
    await consumer.start()

    async def busy() -> bool:
        return len(started) == prefetch

    await wait_until(busy, "a full prefetch window in flight")
    stopping = asyncio.create_task(consumer.stop(grace=10))

    async def cancelled() -> bool:
        # The consumer's channel forgets the tag on Basic.CancelOk. (A quorum queue keeps
        # counting a cancelled consumer until its messages settle, so ask the channel.)
        underlay = started[0].channel
        assert isinstance(underlay, aiormq.Channel)
        return started[0].consumer_tag not in underlay.consumers

    # Release the in-flight messages only once the broker sends this consumer no more.
    await wait_until(cancelled, "the consumer to be cancelled")
    gate.set()
    await stopping

    assert sorted(handled) == sorted(str(m.message_id) for m in started)
    assert len(handled) == prefetch
    left = [str(m.message_id) for m in await drain(work_queue)]
    assert not set(left) & set(handled)
    assert sorted([*left, *handled], key=int) == [str(i) for i in range(total)]


async def test_stopping_with_stuck_handlers_returns_their_messages(
    broker: Broker,
    names: Names,
    publisher: ConfirmedPublisher,
    work_queue: AbstractQueue,
) -> None:
    prefetch, total = 3, 6
    started: list[str] = []
    never = asyncio.Event()

    async def handler(message: AbstractIncomingMessage) -> None:
        started.append(str(message.message_id))
        await never.wait()

    consumer = make_consumer(broker, names, publisher, handler, prefetch=prefetch)
    await asyncio.gather(
        *(publish(publisher, names, b"x", message_id=str(i)) for i in range(total))
    )
    await consumer.start()

    async def busy() -> bool:
        return len(started) == prefetch

    await wait_until(busy, "a full prefetch window in flight")
    await consumer.stop(grace=0.2)

    left = sorted((str(m.message_id) for m in await drain(work_queue)), key=int)
    assert left == [str(i) for i in range(total)]
