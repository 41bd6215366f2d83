"""The webhook consumer in process: a real queue of the topology, the AMQP edge (handlers),
the service and the real store; each message is fetched with ``queue.get`` and processed."""

from __future__ import annotations

import gc
import hashlib
import warnings
from datetime import UTC, datetime

import pytest
from aio_pika.abc import AbstractQueue
from prometheus_client import CollectorRegistry

from inbox_api.consumer.handlers import WebhookHandler
from inbox_api.consumer.service import Stores, WebhookProcessor
from inbox_common.broker.connection import Broker
from inbox_common.broker.consumer import REASON_HEADER, Consumer
from inbox_common.broker.publisher import ConfirmedPublisher
from inbox_common.broker.topology import Names
from inbox_common.contracts.delivery import batch_message
from inbox_common.local.ports import free_port
from inbox_common.store.client import Database, Document, create_client
from inbox_common.store.schema import CONTACTS, MESSAGES, WEBHOOK_EVENTS
from inbox_sandbox import payloads
from inbox_testkit.broker import delivery_attempt, header_str, publish_delivery, webhook_consumer
from inbox_testkit.polling import wait_until
from inbox_testkit.store import snapshot
from inbox_testkit.tenants import ACME_NUMBER
from inbox_testkit.webhooks import delivery_of

pytestmark = pytest.mark.integration

WA = "491709999999"


def text_body(text: str = "hello", *, wamid: str | None = None) -> bytes:
    delivery = delivery_of(
        payloads.text_webhook(ACME_NUMBER, WA, "Ann", text, wamid=wamid, timestamp=1_700_000_000)
    )
    return delivery.body


async def test_a_published_delivery_is_stored_and_acked(
    consumer: Consumer,
    publisher: ConfirmedPublisher,
    names: Names,
    work_queue: AbstractQueue,
    dead_queue: AbstractQueue,
    db: Database,
    channel: Document,
) -> None:
    wamid = payloads.new_wamid()
    delivery = delivery_of(text_body("from the queue", wamid=wamid), request_id="req-42")
    await publish_delivery(publisher, names, delivery)

    message = await work_queue.get(timeout=5)
    assert message.message_id == delivery.sha256
    outcome = await consumer.process(message)

    assert outcome == "acked"
    assert await work_queue.get(fail=False, timeout=5) is None
    assert await dead_queue.get(fail=False, timeout=5) is None
    stored = await db[MESSAGES].find_one({"wamid": wamid})
    assert stored is not None
    assert stored["content"] == {"body": "from the queue"}
    event = await db[WEBHOOK_EVENTS].find_one({"sha256": delivery.sha256})
    assert event is not None
    assert (event["status"], event["request_id"], event["attempts"]) == ("processed", "req-42", 1)
    assert event["body"] == delivery.body


async def test_an_invalid_payload_is_recorded_and_acked_not_dead_lettered(
    consumer: Consumer,
    publisher: ConfirmedPublisher,
    names: Names,
    work_queue: AbstractQueue,
    dead_queue: AbstractQueue,
    db: Database,
) -> None:
    delivery = delivery_of(b"signed, but not JSON")
    await publish_delivery(publisher, names, delivery)

    assert await consumer.process(await work_queue.get(timeout=5)) == "acked"

    # The ledger keeps it for inspection and replay; the queue does not.
    event = await db[WEBHOOK_EVENTS].find_one({"sha256": delivery.sha256})
    assert event is not None
    assert event["status"] == "failed"
    assert event["error"]["code"] == "invalid_payload:invalid_json"
    assert await dead_queue.get(fail=False, timeout=5) is None


def _headers_without(name: str) -> dict[str, str]:
    headers = delivery_of(text_body()).headers()
    del headers[name]
    return headers


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        pytest.param({}, "invalid_delivery: header sha256", id="no-headers"),
        pytest.param(_headers_without("sha256"), "invalid_delivery: header sha256", id="no-sha"),
        pytest.param({"sha256": "not-hex"}, "invalid_delivery: header sha256", id="bad-sha"),
        pytest.param(
            {"sha256": hashlib.sha256(b"another body").hexdigest()},
            "checksum_mismatch: the body does not hash",
            id="sha-mismatch",
        ),
        pytest.param(
            {**delivery_of(text_body()).headers(), "received_at": "yesterday"},
            "invalid_delivery: header received_at",
            id="bad-received-at",
        ),
    ],
)
async def test_a_malformed_delivery_is_dead_lettered_with_the_reason(
    consumer: Consumer,
    publisher: ConfirmedPublisher,
    names: Names,
    work_queue: AbstractQueue,
    dead_queue: AbstractQueue,
    db: Database,
    channel: Document,
    headers: dict[str, str],
    reason: str,
) -> None:
    delivery = delivery_of(text_body())
    await publish_delivery(publisher, names, delivery, headers=headers)

    outcome = await consumer.process(await work_queue.get(timeout=5))

    assert outcome == "dead_lettered"
    assert await work_queue.get(fail=False, timeout=5) is None
    dead = await dead_queue.get(timeout=5)
    await dead.ack()
    assert dead.body == delivery.body
    assert (header_str(dead.headers, REASON_HEADER) or "").startswith(reason)
    assert await db[WEBHOOK_EVENTS].count_documents({}) == 0
    assert await db[MESSAGES].count_documents({}) == 0


async def test_a_delivery_without_request_id_or_time_is_still_processed(
    consumer: Consumer,
    publisher: ConfirmedPublisher,
    names: Names,
    work_queue: AbstractQueue,
    db: Database,
    channel: Document,
) -> None:
    delivery = delivery_of(text_body())
    await publish_delivery(publisher, names, delivery, headers={"sha256": delivery.sha256})

    assert await consumer.process(await work_queue.get(timeout=5)) == "acked"

    event = await db[WEBHOOK_EVENTS].find_one({"sha256": delivery.sha256})
    assert event is not None
    assert (event["status"], event["request_id"]) == ("processed", "")
    assert isinstance(event["received_at"], datetime)


async def test_a_store_outage_parks_the_message_and_it_succeeds_once_the_store_is_back(
    broker: Broker,
    names: Names,
    publisher: ConfirmedPublisher,
    consumer: Consumer,
    work_queue: AbstractQueue,
    db: Database,
    channel: Document,
) -> None:
    delivery = delivery_of(text_body("during the outage"))
    await publish_delivery(publisher, names, delivery)
    nowhere = create_client(
        f"mongodb://127.0.0.1:{free_port()}/?directConnection=true",
        app_name="outage",
        timeout_ms=200,
    )
    down = webhook_consumer(broker, names, publisher, WebhookProcessor(Stores.of(nowhere["x"])))
    try:
        outcome = await down.process(await work_queue.get(timeout=5))
        assert down.paused
    finally:
        await down.stop()
        await nowhere.close()
        with warnings.catch_warnings():
            # PyMongo can leave the socket of a refused connect to the collector; collect it
            # here rather than let its ResourceWarning fail whichever test runs next.
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()

    # Parked: published again as a new message (not a redelivery: the outage is not
    # counted toward the delivery limit) for a consumer whose store answers.
    assert outcome == "parked"
    assert await db[WEBHOOK_EVENTS].count_documents({}) == 0
    again = await work_queue.get(timeout=5)
    assert not again.redelivered
    assert delivery_attempt(again) == 1
    assert await consumer.process(again) == "acked"
    event = await db[WEBHOOK_EVENTS].find_one({"sha256": delivery.sha256})
    assert event is not None
    assert (event["status"], event["attempts"]) == ("processed", 1)
    assert await work_queue.get(fail=False, timeout=5) is None


async def test_a_store_rejection_is_recorded_as_failed_not_requeued(
    consumer: Consumer,
    publisher: ConfirmedPublisher,
    names: Names,
    work_queue: AbstractQueue,
    dead_queue: AbstractQueue,
    db: Database,
    channel: Document,
) -> None:
    # A validator no webhook can satisfy: the store refuses the write, whatever the retries.
    await db.command(
        {"collMod": CONTACTS, "validator": {"$jsonSchema": {"required": ["never_set"]}}}
    )
    delivery = delivery_of(text_body())
    await publish_delivery(publisher, names, delivery)

    # Settled once, not requeued: the body stays in the ledger, failed with the reason, for a
    # replay once the cause is fixed.
    assert await consumer.process(await work_queue.get(timeout=5)) == "acked"

    assert await dead_queue.get(fail=False, timeout=1) is None
    entry = await db[WEBHOOK_EVENTS].find_one({"sha256": delivery.sha256})
    assert entry is not None
    assert entry["status"] == "failed"
    assert entry["error"]["code"] == "store_refused"


async def test_a_redelivery_after_a_kill_before_the_ack_stores_one_delivery(
    broker: Broker,
    consumer: Consumer,
    publisher: ConfirmedPublisher,
    names: Names,
    work_queue: AbstractQueue,
    processor: WebhookProcessor,
    db: Database,
    channel: Document,
) -> None:
    delivery = delivery_of(text_body("at least once"))
    await publish_delivery(publisher, names, delivery)
    doomed = await broker.connection.channel()
    queue = await doomed.get_queue(names.webhooks_queue)
    message = await queue.get(timeout=5)

    # The handler wrote everything; the process died before the ack.
    await WebhookHandler(processor, CollectorRegistry())(message)
    once = await snapshot(db)
    await doomed.close()

    again = await work_queue.get(timeout=5)
    assert again.redelivered
    assert again.message_id == delivery.sha256
    assert await consumer.process(again) == "acked"

    assert await snapshot(db) == once
    event = await db[WEBHOOK_EVENTS].find_one({"sha256": delivery.sha256})
    assert event is not None
    assert (event["status"], event["attempts"]) == ("processed", 2)
    assert await work_queue.get(fail=False, timeout=5) is None


async def test_a_running_consumer_stores_every_delivery(
    consumer: Consumer,
    publisher: ConfirmedPublisher,
    names: Names,
    db: Database,
    channel: Document,
) -> None:
    count = 15
    for i in range(count):
        body = payloads.text_webhook(
            ACME_NUMBER, f"49170{i:07d}", f"User {i}", f"message {i}", timestamp=1_700_000_000 + i
        )
        await publish_delivery(publisher, names, delivery_of(body))
    await consumer.start()
    try:

        async def all_processed() -> bool:
            return await db[WEBHOOK_EVENTS].count_documents({"status": "processed"}) == count

        await wait_until(all_processed, f"{count} deliveries processed")
    finally:
        await consumer.stop()

    assert await db[MESSAGES].count_documents({"direction": "inbound"}) == count
    assert await db[CONTACTS].count_documents({}) == count
    newest = await db[MESSAGES].find_one(sort=[("timestamp", -1)])
    assert newest is not None
    assert newest["timestamp"] == datetime.fromtimestamp(1_700_000_000 + count - 1, tz=UTC)


async def test_a_micro_batch_message_stores_every_body_once(
    consumer: Consumer,
    publisher: ConfirmedPublisher,
    names: Names,
    work_queue: AbstractQueue,
    dead_queue: AbstractQueue,
    db: Database,
    channel: Document,
) -> None:
    wamids = [payloads.new_wamid() for _ in range(5)]
    deliveries = [delivery_of(text_body(f"n{i}", wamid=w)) for i, w in enumerate(wamids)]
    # The same body twice in one batch (Meta retried while the first was in flight).
    deliveries.append(deliveries[0])
    body, headers, message_id = batch_message(deliveries)
    await publisher.publish(
        names.webhooks_exchange, "whatsapp.webhook", body, message_id=message_id, headers=headers
    )

    assert await consumer.process(await work_queue.get(timeout=5)) == "acked"

    stored = await db[MESSAGES].find({}, {"wamid": 1, "content": 1}).to_list()
    assert sorted(d["wamid"] for d in stored) == sorted(wamids)
    events = await db[WEBHOOK_EVENTS].find({}, {"status": 1, "attempts": 1}).to_list()
    assert [e["status"] for e in events] == ["processed"] * 5
    # The repeated body counts as a second attempt of its entry, nothing more.
    assert sorted(e["attempts"] for e in events) == [1, 1, 1, 1, 2]
    assert await dead_queue.get(fail=False, timeout=1) is None


async def test_a_batch_with_an_altered_body_is_dead_lettered_whole(
    consumer: Consumer,
    publisher: ConfirmedPublisher,
    names: Names,
    work_queue: AbstractQueue,
    dead_queue: AbstractQueue,
    db: Database,
    channel: Document,
) -> None:
    good, bad = delivery_of(text_body("good")), delivery_of(text_body("bad"))
    tampered = bad.model_copy(update={"body": bad.body.replace(b"bad", b"BAD")})
    body, headers, message_id = batch_message([good, tampered])
    await publisher.publish(
        names.webhooks_exchange, "whatsapp.webhook", body, message_id=message_id, headers=headers
    )

    assert await consumer.process(await work_queue.get(timeout=5)) == "dead_lettered"

    dead = await dead_queue.get(timeout=5)
    await dead.ack()
    assert dead.body == body
    assert "checksum_mismatch" in (header_str(dead.headers, REASON_HEADER) or "")
    assert await db[MESSAGES].count_documents({}) == 0
