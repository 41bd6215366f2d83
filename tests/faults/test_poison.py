"""Fault 5 (with 7): poison messages go to the dead-letter queue and the queue keeps flowing.

While good webhooks stream in through webhook-ingest to two inbox-api replicas, poison
arrives straight on the exchange (what a bug, a forger with broker access or a corrupted
publish would put there):

- an AMQP message without the delivery headers: ``invalid_delivery``;
- a body whose ``sha256`` header does not match it (altered in transit):
  ``checksum_mismatch``;
- a micro-batch whose frame is broken (its sizes overrun the body): ``invalid_delivery``.

Each must end in ``<ns>.inbox.webhooks.dead`` at its first delivery, with the
``x-inbox-dead-letter-reason`` header saying why, and not loop through the queue.

Meanwhile, correctly signed but hostile bodies (content BSON refuses as such: an integer
beyond 64 bits, ``$`` and ``.`` and NUL in keys) are posted at once with a burst of good
ones, so they share webhook-ingest's micro-batches and the consumer's bulk writes. They
are webhooks Meta could send: they must be stored like any other, and must not hold back
or take down the good bodies they travel with. The total-queue check covers both.

A poison message that makes the consumer crash on every delivery would be dead-lettered by
the quorum queue after its delivery limit (``x-death`` reason ``delivery_limit``); the
consumer now settles every input it is given, so no message sent from outside reaches that
path (``tests/common/test_broker.py`` checks the limit against the broker).
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime
from typing import Any

import aio_pika
import orjson
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from inbox_common.broker.topology import WEBHOOK_ROUTING_KEY, Names
from inbox_common.contracts.delivery import delivery_headers
from inbox_common.store.client import create_client
from inbox_common.whatsapp import samples
from tests.faults.checker import (
    Item,
    Sender,
    check,
    item_of,
    queue_depth,
    text_items,
    wait_quiet,
)
from tests.faults.conftest import Report
from tests.faults.stack import PHONE_NUMBER_ID, StackConfig, running_stack

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.timeout(150)]

REASON_HEADER = "x-inbox-dead-letter-reason"
QUEUE_HEADER = "x-inbox-source-queue"
BURST = 40


def hostile_items() -> list[Item]:
    """Signed-able webhooks whose message content BSON refuses as it stands."""
    contents: list[dict[str, Any]] = [
        {"body": "big number", "n": 2**64 - 1},
        {"body": "operator key", "$where": "1", "a.b": {"$gt": 1}},
        {"body": "nul key", "k\x00ey": "v"},
    ]
    items = []
    for n, text in enumerate(contents):
        wamid = samples.new_wamid()
        payload = samples.text_webhook(
            PHONE_NUMBER_ID, f"491709999{n}", "Hostile", "x", wamid=wamid
        )
        payload["entry"][0]["changes"][0]["value"]["messages"][0]["text"] = text
        items.append(item_of(f"hostile-{n}", payload))
    return items


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _describe(message: AbstractIncomingMessage) -> str:
    headers = message.headers or {}
    reason = headers.get(REASON_HEADER)
    first = headers.get("x-first-death-reason")
    return (
        f"message_id={message.message_id} delivery-count={headers.get('x-delivery-count')!r} "
        f"reason={_text(reason)[:120] if reason else None} "
        f"x-first-death-reason={_text(first) if first else None}"
    )


async def _publish_poison(channel: AbstractChannel, names: Names) -> dict[str, str]:
    """Publish the three poison messages; returns the reason expected for each id."""
    exchange = await channel.get_exchange(names.webhooks_exchange, ensure=False)
    persistent = aio_pika.DeliveryMode.PERSISTENT
    await exchange.publish(
        aio_pika.Message(b"\x00 not a webhook", message_id="poison-headerless"),
        WEBHOOK_ROUTING_KEY,
    )
    body = orjson.dumps(samples.text_webhook(PHONE_NUMBER_ID, "4917000001", "X", "altered"))
    wrong = hashlib.sha256(b"something else").hexdigest()
    await exchange.publish(
        aio_pika.Message(
            body,
            headers=dict(delivery_headers(wrong, "poison-checksum", datetime.now(UTC))),
            message_id="poison-checksum",
            delivery_mode=persistent,
        ),
        WEBHOOK_ROUTING_KEY,
    )
    entry: dict[str, Any] = {
        **delivery_headers(hashlib.sha256(body).hexdigest(), "poison-frame", datetime.now(UTC)),
        "size": len(body) + 100,
    }
    await exchange.publish(
        aio_pika.Message(
            body, headers={"batch": [entry]}, message_id="poison-frame", delivery_mode=persistent
        ),
        WEBHOOK_ROUTING_KEY,
    )
    return {
        "poison-headerless": "invalid_delivery",
        "poison-checksum": "checksum_mismatch",
        "poison-frame": "invalid_delivery",
    }


async def _dead_letters(
    channel: AbstractChannel,
    names: Names,
    want: int,
    timeout: float,  # noqa: ASYNC109
) -> list[AbstractIncomingMessage]:
    queue = await channel.get_queue(names.dead_letter_queue(names.webhooks_queue), ensure=True)
    found: list[AbstractIncomingMessage] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(found) < want and loop.time() < deadline:
        message = await queue.get(no_ack=True, fail=False)
        if message is None:
            await asyncio.sleep(0.1)
            continue
        found.append(message)
    return found


async def test_poison_is_dead_lettered_and_the_queue_keeps_flowing(
    stack_config: StackConfig, names: Names, fault_report: Report
) -> None:
    first, second = text_items(200, label="before"), text_items(200, label="after")
    burst, hostile = text_items(BURST, label="burst"), hostile_items()
    client = create_client(stack_config.mongodb_url, app_name="faults-check")
    db = client[stack_config.mongo_db]
    connection = await aio_pika.connect(stack_config.rabbitmq_url, timeout=10)
    try:
        async with running_stack(stack_config) as stack:
            ingest = stack.ingest()
            replicas = [stack.api(name="inbox-api-a"), stack.api(name="inbox-api-b")]
            await stack.start()
            for replica in replicas:
                await replica.wait_consuming()
            channel = await connection.channel(publisher_confirms=True)
            sender = Sender(ingest.base, rate=80.0)
            burst_sender = Sender(ingest.base, concurrency=len(burst) + len(hostile))

            async def burst_mid_stream() -> None:
                await sender.wait_started(100)
                # Posted at once: the hostile bodies share micro-batches with good ones.
                half = len(burst) // 2
                await burst_sender.run([*burst[:half], *hostile, *burst[half:]])

            async def poison_mid_stream() -> dict[str, str]:
                await sender.wait_started(150)
                return await _publish_poison(channel, names)

            _, expected, _ = await asyncio.gather(
                sender.run([*first, *second]), poison_mid_stream(), burst_mid_stream()
            )
            sender.absorb(burst_sender)
            items = [*first, *burst, *hostile, *second]
            async with queue_depth(stack_config.rabbitmq_url, names.webhooks_queue) as depth:
                await wait_quiet(db, items, sender, depth, timeout=60, settle=5)
            verdict = await check(db, "poison", items, sender)
            dead = await _dead_letters(channel, names, want=len(expected), timeout=10)
            verdict.notes["dead_lettered"] = len(dead)
            fault_report(verdict)
            context = (
                f"{sender.summary()}\ndead letters:\n  "
                + "\n  ".join(_describe(m) for m in dead)
                + f"\n{stack.tails()}"
            )
            assert verdict.clean, f"{verdict.explain()}\n{context}"
            reasons = {
                str(m.message_id): _text((m.headers or {}).get(REASON_HEADER, "")).split(":")[0]
                for m in dead
            }
            assert reasons == expected, context
            for message in dead:
                headers = message.headers or {}
                assert _text(headers.get(QUEUE_HEADER)) == names.webhooks_queue, context
                # Dead-lettered at the first delivery: no loop through the queue.
                assert not headers.get("x-delivery-count"), context
            for replica in replicas:
                await replica.wait_consuming(timeout=10)
    finally:
        await connection.close()
        await client.close()
