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

from inbox_common.broker.consumer import QUEUE_HEADER, REASON_HEADER
from inbox_common.broker.topology import WEBHOOK_ROUTING_KEY, Names
from inbox_common.contracts.delivery import delivery_headers
from inbox_sandbox import payloads
from inbox_testkit.faults.checker import Item, Report, Sender, item_of, text_items
from inbox_testkit.faults.scenario import fault_run
from inbox_testkit.faults.stack import PHONE_NUMBER_ID, StackConfig

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.timeout(150)]

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
        wamid = payloads.new_wamid()
        payload = payloads.text_webhook(
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
    body = orjson.dumps(payloads.text_webhook(PHONE_NUMBER_ID, "4917000001", "X", "altered"))
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
    connection = await aio_pika.connect(stack_config.rabbitmq_url, timeout=10)
    expected: dict[str, str] = {}
    try:
        channel = await connection.channel(publisher_confirms=True)
        async with fault_run(stack_config, "poison") as run:
            await run.start(replicas=2)

            async def poison_and_burst(sender: Sender) -> None:
                async def burst_mid_stream() -> None:
                    await sender.wait_started(100)
                    # Posted at once: the hostile bodies share micro-batches with good ones.
                    half = len(burst) // 2
                    bodies = [*burst[:half], *hostile, *burst[half:]]
                    await run.send(bodies, concurrency=len(bodies))

                async def poison_mid_stream() -> None:
                    await sender.wait_started(150)
                    expected.update(await _publish_poison(channel, names))

                await asyncio.gather(burst_mid_stream(), poison_mid_stream())

            await run.send([*first, *second], rate=80.0, during=poison_and_burst)
            verdict = await run.check(settle=5)
            dead = await _dead_letters(channel, names, want=len(expected), timeout=10)
            verdict.notes["dead_lettered"] = len(dead)
            fault_report(verdict)
            context = "dead letters:\n  " + "\n  ".join(_describe(m) for m in dead)
            run.assert_clean(verdict, context)
            reasons = {
                str(m.message_id): _text((m.headers or {}).get(REASON_HEADER, "")).split(":")[0]
                for m in dead
            }
            assert reasons == expected, f"{context}\n{run.context()}"
            for message in dead:
                headers = message.headers or {}
                assert _text(headers.get(QUEUE_HEADER)) == names.webhooks_queue, context
                # Dead-lettered at the first delivery: no loop through the queue.
                assert not headers.get("x-delivery-count"), context
            await run.wait_consuming(timeout=10)
    finally:
        await connection.close()
