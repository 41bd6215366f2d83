"""``inbox-ops dead-letters list|replay``, run as the operator runs it, over the test's broker
(its namespace's whole topology, acme's number queue included) and store."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest
from aio_pika import Message
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from inbox_common.broker.connection import Broker
from inbox_common.broker.consumer import QUEUE_HEADER, REASON_HEADER
from inbox_common.broker.publisher import ConfirmedPublisher
from inbox_common.broker.topology import Names, declare, number_sends
from inbox_common.store.client import Document
from inbox_testkit.tenants import ACME_NUMBER
from tests.ops_cli.conftest import inbox_ops, nowhere

pytestmark = pytest.mark.integration


async def dead_letter(
    publisher: ConfirmedPublisher, names: Names, source: str, body: bytes, reason: str
) -> None:
    """A message the consumer of ``source`` refused, as it dead-letters one."""
    await publisher.publish(
        names.dead_letter_exchange,
        source,
        body,
        message_id=hashlib.sha256(body).hexdigest(),
        headers={
            "sha256": hashlib.sha256(body).hexdigest(),
            REASON_HEADER: reason,
            QUEUE_HEADER: source,
        },
        content_type="application/json",
    )


async def rejected_by_rabbitmq(
    channel: AbstractChannel, queue: str, body: bytes, headers: dict[str, Any] | None = None
) -> None:
    """A message RabbitMQ itself dead-letters from ``queue`` (rejected without requeue: it
    carries ``x-death``, and no reason of ours)."""
    await channel.default_exchange.publish(Message(body, headers=headers), routing_key=queue)
    taken = await (await channel.get_queue(queue)).get(timeout=5)
    await taken.reject(requeue=False)


async def drain(channel: AbstractChannel, queue: str) -> list[AbstractIncomingMessage]:
    """Every message of ``queue``, in order (acked: the queue is empty afterwards)."""
    taken = []
    source = await channel.get_queue(queue)
    while (message := await source.get(fail=False, timeout=5)) is not None:
        await message.ack()
        taken.append(message)
    return taken


async def consume(broker: Broker, queue: str, count: int) -> list[bytes]:
    """The bodies of the first ``count`` messages of a queue that takes no ``basic.get`` (a
    number's single-active-consumer queue), acked."""
    own = await broker.connection.channel()
    await own.set_qos(prefetch_count=1)
    taken: list[bytes] = []
    try:
        async with (await own.get_queue(queue)).iterator(timeout=5) as messages:
            async for message in messages:
                await message.ack()
                taken.append(message.body)
                if len(taken) == count:
                    break
    finally:
        await own.close()
    return taken


async def depth(channel: AbstractChannel, queue: str) -> int:
    declared = await (await channel.get_underlay_channel()).queue_declare(queue, passive=True)
    return int(declared.message_count or 0)


async def ops_json(*args: str) -> Any:
    done = await inbox_ops("dead-letters", *args, "--json", env={})
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout)


def by_queue(document: Any) -> dict[str, Any]:
    return {q["queue"]: q for q in document["queues"]}


@pytest.fixture
async def acme_number(
    env: dict[str, str], amqp_channel: AbstractChannel, names: Names, channel: Document
) -> str:
    """acme's number queue, declared (as the sender declares it before the first send)."""
    await declare(amqp_channel, number_sends(ACME_NUMBER)(names))
    return names.number_queue(ACME_NUMBER)


async def test_list_shows_every_dead_queue_its_count_and_reasons_and_loses_nothing(
    acme_number: str, publisher: ConfirmedPublisher, amqp_channel: AbstractChannel, names: Names
) -> None:
    webhooks = names.webhooks_queue
    bodies = [b'{"n":1}', b'{"n":2}', b'{"n":3}']
    for body, reason in zip(
        bodies,
        (
            "checksum_mismatch: body 1 does not hash to its sha256",
            "invalid_delivery: the received_at header is missing",
            "checksum_mismatch: body 2 does not hash to its sha256",
        ),
        strict=True,
    ):
        await dead_letter(publisher, names, webhooks, body, reason)
    await dead_letter(publisher, names, acme_number, b'{"message_id":"m1"}', "invalid_job: x")
    await rejected_by_rabbitmq(amqp_channel, names.outbound_queue, b'{"kind":"read"}')

    first = await ops_json("list")
    again = await ops_json("list")

    dead = {q + ".dead" for q in (webhooks, names.outbound_queue, names.retry_due_queue)}
    dead |= {names.maintenance_queue + ".dead", acme_number + ".dead"}
    for listed in (first, again):
        queues = by_queue(listed)
        assert set(queues) == dead
        assert listed["messages"] == 5
        hooks = queues[webhooks + ".dead"]
        assert (hooks["messages"], hooks["read"], hooks["source_queue"]) == (3, 3, webhooks)
        assert {code: r["count"] for code, r in hooks["reasons"].items()} == {
            "checksum_mismatch": 2,
            "invalid_delivery": 1,
        }
        number = queues[acme_number + ".dead"]
        assert (number["messages"], number["source_queue"]) == (1, acme_number)
        assert list(number["reasons"]) == ["invalid_job"]
        receipts = queues[names.outbound_queue + ".dead"]
        assert receipts["reasons"]["rejected"]["example"] == (
            f"rejected: dead-lettered by RabbitMQ from {names.outbound_queue}"
        )
        assert queues[names.maintenance_queue + ".dead"]["messages"] == 0
    # Reading was no delivery: the same messages, in the same order, none counted as
    # redelivered (on RabbitMQ 4.0-4.2 a message handed back 20 times would be dropped).
    left = await drain(amqp_channel, webhooks + ".dead")
    assert [m.body for m in left] == bodies
    for message in left:
        headers = message.headers or {}
        assert not message.redelivered
        assert headers.get("x-delivery-count", 0) == 0
        assert headers[REASON_HEADER]
        assert message.message_id == hashlib.sha256(message.body).hexdigest()
    [rejected] = await drain(amqp_channel, names.outbound_queue + ".dead")
    assert (rejected.headers or {})["x-death"]
    assert not rejected.redelivered


async def test_list_in_text_names_the_queues_and_what_to_run(
    acme_number: str, publisher: ConfirmedPublisher, names: Names
) -> None:
    await dead_letter(
        publisher, names, names.webhooks_queue, b"{}", "store_rejected: BSON refused it"
    )

    done = await inbox_ops("dead-letters", "list", env={})

    assert done.returncode == 0, done.stderr
    assert f"{names.webhooks_queue}.dead" in done.stdout
    assert "store_rejected  e.g. BSON refused it" in done.stdout
    assert "inbox-ops dead-letters replay" in done.stdout


async def test_replay_moves_the_matching_ones_back_once_and_keeps_the_others(
    acme_number: str, publisher: ConfirmedPublisher, amqp_channel: AbstractChannel, names: Names
) -> None:
    webhooks = names.webhooks_queue
    dead = webhooks + ".dead"
    reasons = {
        b'{"n":1}': "checksum_mismatch: one",
        b'{"n":2}': "store_rejected: two",
        b'{"n":3}': "checksum_mismatch: three",
    }
    for body, reason in reasons.items():
        await dead_letter(publisher, names, webhooks, body, reason)

    dry = await ops_json("replay", "--reason", "store_rejected", "--dry-run")
    assert (dry["matched"], dry["moved"]) == (1, 0)
    assert (await depth(amqp_channel, dead), await depth(amqp_channel, webhooks)) == (3, 0)

    picked = await ops_json("replay", "--reason", "store_rejected")
    assert (picked["matched"], picked["moved"]) == (1, 1)
    assert by_queue(picked)[dead]["kept"] == 2
    [moved] = await drain(amqp_channel, webhooks)
    assert moved.body == b'{"n":2}'
    assert moved.message_id == hashlib.sha256(b'{"n":2}').hexdigest()
    assert moved.content_type == "application/json"
    headers = moved.headers or {}
    # It starts afresh: its identity kept, its death (and our reason for it) gone.
    assert headers["sha256"] == hashlib.sha256(b'{"n":2}').hexdigest()
    assert REASON_HEADER not in headers
    assert "x-death" not in headers

    rest = await ops_json("replay", "--queue", dead)
    assert [q["queue"] for q in rest["queues"]] == [dead]
    assert rest["moved"] == 2
    assert [m.body for m in await drain(amqp_channel, webhooks)] == [b'{"n":1}', b'{"n":3}']

    nothing = await ops_json("replay")
    assert (nothing["messages"], nothing["moved"]) == (0, 0)
    assert await depth(amqp_channel, webhooks) == 0


async def test_replay_goes_back_to_the_queue_the_dead_queue_belongs_to_not_to_a_stale_header(
    acme_number: str, amqp_channel: AbstractChannel, names: Names
) -> None:
    # A send that waited in a delay tier carries its number queue's name; it died in the due
    # queue, so it belongs to the retry-worker again, not straight to the sender.
    due = names.retry_due_queue
    await rejected_by_rabbitmq(
        amqp_channel, due, b'{"message_id":"m2"}', {QUEUE_HEADER: acme_number}
    )

    done = await ops_json("replay", "--reason", "rejected", "--limit", "5")

    assert by_queue(done)[due + ".dead"]["moved"] == 1
    [back] = await drain(amqp_channel, due)
    assert back.body == b'{"message_id":"m2"}'
    assert await depth(amqp_channel, acme_number) == 0


async def test_replay_with_a_limit_moves_at_most_that_many_of_each_queue(
    acme_number: str,
    publisher: ConfirmedPublisher,
    amqp_channel: AbstractChannel,
    names: Names,
    broker: Broker,
) -> None:
    for n in range(3):
        await dead_letter(publisher, names, names.webhooks_queue, b"%d" % n, "store_rejected: x")
    await dead_letter(publisher, names, acme_number, b"send", "invalid_job: not json")

    done = await ops_json("replay", "--limit", "2")

    assert done["moved"] == 3
    assert [m.body for m in await drain(amqp_channel, names.webhooks_queue)] == [b"0", b"1"]
    assert await consume(broker, acme_number, 1) == [b"send"]
    assert [m.body for m in await drain(amqp_channel, names.webhooks_queue + ".dead")] == [b"2"]


async def test_a_wrong_queue_or_no_broker_fails_saying_what_to_do(
    acme_number: str, names: Names, amqp_channel: AbstractChannel
) -> None:
    for queue in (
        "wa.elsewhere.dead",
        names.webhooks_queue,
        names.retry_tier_queue("5s") + ".dead",
    ):
        done = await inbox_ops("dead-letters", "replay", "--queue", queue, env={})
        assert done.returncode == 2, (queue, done.stdout)
        assert "is not a dead-letter queue of namespace" in done.stderr
        assert f"{names.webhooks_queue}.dead" in done.stderr
    bad = await inbox_ops("dead-letters", "list", "--sample", "0", env={})
    assert bad.returncode == 2
    assert "'0' is not a whole number of at least 1" in bad.stderr

    away = await inbox_ops(
        "dead-letters", "list", env={"RABBITMQ_URL": nowhere().replace("http", "amqp")}
    )
    assert away.returncode == 3, away.stdout
    assert "check RABBITMQ_URL" in away.stderr
