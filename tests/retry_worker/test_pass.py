"""One pass over the due queue against the real broker and store: each decision, seen where it
lands (back in its source queue with its body intact, or dropped and recorded, or
dead-lettered with the reason), and the failures that leave a job in the due queue."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel
from bson import ObjectId
from prometheus_client import CollectorRegistry

from inbox_common.broker.connection import Broker
from inbox_common.broker.consumer import PARKED_HEADER, QUEUE_HEADER, REASON_HEADER, TIER_HEADER
from inbox_common.broker.publisher import ConfirmedPublisher
from inbox_common.broker.topology import Names, number_sends
from inbox_common.jobs import JobLock
from inbox_common.local.ports import free_port
from inbox_common.store.campaigns import Campaigns
from inbox_common.store.client import Database, create_client
from inbox_common.store.collections import JOB_LOCKS, MESSAGES
from inbox_common.store.outbound import Outbound
from inbox_retry.metrics import RetryMetrics
from inbox_retry.service import RetryDecisions
from inbox_retry.settings import RetryJobSettings
from inbox_retry.worker import JOB, RetryWorker
from inbox_testkit.broker import header_str
from inbox_testkit.polling import wait_until
from inbox_testkit.tenants import ACME_NUMBER
from tests.retry_worker.conftest import (
    TENANT,
    depth,
    drain,
    logs_with_context,
    new_worker,
    outcomes,
    publish_due,
    store_campaign,
    store_outbound,
)

pytestmark = pytest.mark.integration


async def message_doc(db: Database, message_id: ObjectId) -> dict[str, Any]:
    doc = await Outbound(db).get(message_id)
    assert doc is not None
    return doc


async def test_a_due_send_goes_back_to_its_queue_with_body_and_headers_intact(
    worker: RetryWorker, publisher: ConfirmedPublisher, names: Names, db: Database,
    amqp_channel: AbstractChannel,
) -> None:  # fmt: skip
    doc = await store_outbound(db, send_state="retrying", next_tier="5s")
    # Spacing and an extra field: the body must travel byte for byte, not re-serialised.
    body = b'{"message_id":  "%s", "note": "caf\xc3\xa9"}' % str(doc["_id"]).encode()
    await publish_due(publisher, names, body, message_id=str(doc["_id"]))

    with logs_with_context() as logs:
        result = await worker.run_pass()

    assert result.ok
    assert outcomes(result) == {"requeued": 1}
    [back] = await drain(amqp_channel, names.outbound_queue)
    assert back.body == body
    assert back.message_id == str(doc["_id"])
    assert back.content_type == "application/json"
    assert back.timestamp == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert header_str(back.headers, "trace") == "kept"
    assert header_str(back.headers, QUEUE_HEADER) == names.outbound_queue
    assert header_str(back.headers, TIER_HEADER) == "5s"
    assert not [h for h in back.headers or {} if "death" in h]
    assert await drain(amqp_channel, names.retry_due_queue) == []
    requeued = [e for e in logs if e["event"] == "retry.requeued"]
    assert requeued
    assert requeued[0]["message_id"] == str(doc["_id"])
    assert requeued[0]["wamid"] == doc["wamid"]
    assert (await message_doc(db, doc["_id"]))["send_state"] == "retrying"  # the sender's job


async def test_a_due_send_of_a_numbers_queue_goes_back_to_that_queue(
    worker: RetryWorker, publisher: ConfirmedPublisher, names: Names, db: Database,
    amqp_channel: AbstractChannel, broker: Broker,
) -> None:  # fmt: skip
    # Sends wait on their number's queue; a retry of one comes back there, not to the
    # shared outbound queue (whose consumer would send past the number's pacing).
    await broker.declare_once(number_sends(ACME_NUMBER)(names))
    queue = names.number_queue(ACME_NUMBER)
    doc = await store_outbound(db, send_state="retrying", next_tier="5s")
    body = b'{"message_id": "%s"}' % str(doc["_id"]).encode()
    await publish_due(publisher, names, body, source=queue, message_id=str(doc["_id"]))

    result = await worker.run_pass()

    assert outcomes(result) == {"requeued": 1}
    # (basic.get is refused on a single-active-consumer queue: count it instead)
    assert await depth(amqp_channel, queue) == 1
    assert await drain(amqp_channel, names.outbound_queue) == []


async def test_a_read_receipt_is_republished_as_it_is(
    worker: RetryWorker, publisher: ConfirmedPublisher, names: Names, amqp_channel: AbstractChannel
) -> None:
    job = {"kind": "read", "channel_id": str(ObjectId()), "wamid": "wamid.HBgL"}
    await publish_due(publisher, names, job, message_id="read:wamid.HBgL")
    result = await worker.run_pass()
    assert outcomes(result) == {"requeued": 1}
    [back] = await drain(amqp_channel, names.outbound_queue)
    assert back.message_id == "read:wamid.HBgL"


async def test_a_job_whose_message_is_gone_is_dropped_with_a_warning(
    worker: RetryWorker, publisher: ConfirmedPublisher, names: Names, amqp_channel: AbstractChannel
) -> None:
    missing = ObjectId()
    await publish_due(publisher, names, {"message_id": str(missing)})
    with logs_with_context() as logs:
        result = await worker.run_pass()
    assert outcomes(result) == {"dropped_missing": 1}
    [line] = [e for e in logs if e["event"] == "retry.dropped"]
    assert line["log_level"] == "warning"
    assert line["message_id"] == str(missing)
    assert line["reason"] == "no_such_message"
    assert await drain(amqp_channel, names.outbound_queue) == []
    assert await drain(amqp_channel, names.retry_due_queue) == []


@pytest.mark.parametrize("state", ["accepted", "failed", "cancelled"])
async def test_a_job_of_a_message_already_done_is_dropped_and_recorded(
    state: str, worker: RetryWorker, publisher: ConfirmedPublisher, names: Names, db: Database,
    amqp_channel: AbstractChannel,
) -> None:  # fmt: skip
    doc = await store_outbound(db, send_state=state)
    await publish_due(publisher, names, {"message_id": str(doc["_id"])})
    with logs_with_context() as logs:
        result = await worker.run_pass()
    assert outcomes(result) == {"dropped_done": 1}
    stored = await message_doc(db, doc["_id"])
    assert stored["send_state"] == state
    assert stored["retry_dropped"]["reason"] == "already_done"
    [line] = [e for e in logs if e["event"] == "retry.dropped"]
    assert (line["message_id"], line["wamid"]) == (str(doc["_id"]), doc["wamid"])
    assert await drain(amqp_channel, names.outbound_queue) == []


async def test_a_cancelled_campaigns_message_is_cancelled_and_dropped(
    worker: RetryWorker, publisher: ConfirmedPublisher, names: Names, db: Database,
    amqp_channel: AbstractChannel,
) -> None:  # fmt: skip
    campaign = await store_campaign(db, "cancelled")
    doc = await store_outbound(db, send_state="retrying", campaign_id=campaign)
    await publish_due(publisher, names, {"message_id": str(doc["_id"])})
    result = await worker.run_pass()
    assert outcomes(result) == {"dropped_cancelled": 1}
    stored = await message_doc(db, doc["_id"])
    assert (stored["send_state"], stored["status"]) == ("cancelled", "cancelled")
    assert stored["retry_dropped"]["reason"] == "campaign_cancelled"
    assert await drain(amqp_channel, names.outbound_queue) == []
    assert await drain(amqp_channel, names.retry_due_queue) == []


async def test_a_paused_campaigns_message_is_paused_and_dropped(
    worker: RetryWorker, publisher: ConfirmedPublisher, names: Names, db: Database,
    amqp_channel: AbstractChannel,
) -> None:  # fmt: skip
    campaign = await store_campaign(db, "paused")
    doc = await store_outbound(db, send_state="retrying", campaign_id=campaign)
    await publish_due(publisher, names, {"message_id": str(doc["_id"])})
    result = await worker.run_pass()
    assert outcomes(result) == {"dropped_paused": 1}
    stored = await message_doc(db, doc["_id"])
    assert stored["send_state"] == "paused"
    assert stored["status"] == "pending"
    assert stored["retry_dropped"]["reason"] == "campaign_paused"
    assert await drain(amqp_channel, names.outbound_queue) == []


@pytest.mark.parametrize("status", ["scheduled", "running", "completed"])
async def test_a_live_campaigns_message_is_requeued(
    status: str, worker: RetryWorker, publisher: ConfirmedPublisher, names: Names, db: Database,
    amqp_channel: AbstractChannel,
) -> None:  # fmt: skip
    campaign = await store_campaign(db, status)
    doc = await store_outbound(db, send_state="retrying", campaign_id=campaign)
    await publish_due(publisher, names, {"message_id": str(doc["_id"])})
    result = await worker.run_pass()
    assert outcomes(result) == {"requeued": 1}
    assert len(await drain(amqp_channel, names.outbound_queue)) == 1


async def test_a_message_being_sent_is_never_cancelled_its_job_goes_back(
    worker: RetryWorker, publisher: ConfirmedPublisher, names: Names, db: Database,
    amqp_channel: AbstractChannel,
) -> None:  # fmt: skip
    # Meta may have it: the sender settles the proof first.
    campaign = await store_campaign(db, "cancelled")
    doc = await store_outbound(db, send_state="sending", campaign_id=campaign)
    await publish_due(publisher, names, {"message_id": str(doc["_id"])})
    result = await worker.run_pass()
    assert outcomes(result) == {"requeued": 1}
    assert (await message_doc(db, doc["_id"]))["send_state"] == "sending"
    assert len(await drain(amqp_channel, names.outbound_queue)) == 1


async def test_another_tenants_campaign_does_not_stop_a_message(
    worker: RetryWorker, publisher: ConfirmedPublisher, names: Names, db: Database,
    amqp_channel: AbstractChannel,
) -> None:  # fmt: skip
    campaign = await store_campaign(db, "cancelled", tenant="globex")
    doc = await store_outbound(db, send_state="retrying", campaign_id=campaign)
    await publish_due(publisher, names, {"message_id": str(doc["_id"])})
    result = await worker.run_pass()
    assert outcomes(result) == {"requeued": 1}
    assert (await message_doc(db, doc["_id"]))["send_state"] == "retrying"


@pytest.mark.parametrize(
    ("body", "source", "reason"),
    [
        (b"not json {", "", "invalid_job"),
        (b"[1, 2]", "", "invalid_job"),
        (b'{"message_id": "nope"}', "", "invalid_job"),
        (b'{"kind": "read"}', None, "no_source_queue"),
        (b'{"kind": "read"}', "elsewhere.queue", "unknown_source_queue"),
        (b'{"kind": "read"}', "other.outbound.number.1", "unknown_source_queue"),
    ],
)
async def test_what_is_not_a_job_is_dead_lettered_with_the_reason(
    body: bytes, source: str | None, reason: str, worker: RetryWorker,
    publisher: ConfirmedPublisher, names: Names, amqp_channel: AbstractChannel,
) -> None:  # fmt: skip
    await publish_due(publisher, names, body, source=source, message_id="job-1")
    with logs_with_context() as logs:
        result = await worker.run_pass()
    assert result.ok
    assert outcomes(result) == {"dead_lettered": 1}
    [dead] = await drain(amqp_channel, names.dead_letter_queue(names.retry_due_queue))
    assert dead.body == body
    assert dead.message_id == "job-1"
    assert (header_str(dead.headers, REASON_HEADER) or "").startswith(f"{reason}: ")
    assert header_str(dead.headers, QUEUE_HEADER) == names.retry_due_queue
    assert await drain(amqp_channel, names.retry_due_queue) == []
    assert await drain(amqp_channel, names.outbound_queue) == []
    assert [e["reason"] for e in logs if e["event"] == "retry.dead_lettered"] == [reason]


async def test_a_job_for_a_queue_that_does_not_exist_is_dead_lettered_as_unroutable(
    worker: RetryWorker, publisher: ConfirmedPublisher, names: Names, amqp_channel: AbstractChannel
) -> None:
    await amqp_channel.queue_delete(names.maintenance_queue)
    await publish_due(publisher, names, {"kind": "read"}, source=names.maintenance_queue)
    result = await worker.run_pass()
    assert outcomes(result) == {"dead_lettered": 1}
    [dead] = await drain(amqp_channel, names.dead_letter_queue(names.retry_due_queue))
    assert (header_str(dead.headers, REASON_HEADER) or "").startswith("unroutable: ")


async def test_a_pass_takes_at_most_its_limit_and_counts_in_the_metrics(
    job_settings: RetryJobSettings, db: Database, broker: Broker, publisher: ConfirmedPublisher,
    names: Names, amqp_channel: AbstractChannel,
) -> None:  # fmt: skip
    settings = job_settings.model_copy(update={"retry_worker_pass_limit": 2})
    registry = CollectorRegistry()
    outbound = Outbound(db)
    worker = RetryWorker(
        broker, publisher, names,
        JobLock(db, JOB, owner="limited", stale_after=settings.stale_after),
        RetryDecisions(outbound, Campaigns(db)), outbound, RetryMetrics(registry),
        pass_limit=2, failure_threshold=3,
    )  # fmt: skip
    assert await worker.lock.acquire() is not None
    for _ in range(3):
        await publish_due(publisher, names, {"kind": "read"})
    first = await worker.run_pass()
    assert first.ok
    assert first.seen == 2
    assert registry.get_sample_value("retry_jobs_total", {"outcome": "requeued"}) == 2
    assert registry.get_sample_value("retry_tier_messages", {"tier": "due"}) == 1
    second = await worker.run_pass()
    assert second.seen == 1
    assert registry.get_sample_value("retry_passes_total", {"result": "ok"}) == 2
    assert len(await drain(amqp_channel, names.outbound_queue)) == 3
    doc = await db[JOB_LOCKS].find_one({"_id": JOB})
    assert doc is not None
    assert doc["lastPass"]["seen"] == 1
    assert doc["lastSuccessAt"] is not None
    await worker.close()


async def test_the_store_unreachable_parks_the_job_and_fails_the_pass(
    job_settings: RetryJobSettings, db: Database, broker: Broker, publisher: ConfirmedPublisher,
    names: Names, amqp_channel: AbstractChannel,
) -> None:  # fmt: skip
    # The lock's store answers; the one the decisions read does not (nothing listens there).
    away = create_client(
        f"mongodb://127.0.0.1:{free_port()}/?directConnection=true", app_name="t", timeout_ms=200
    )
    unreachable = Outbound(away["nowhere"])
    worker = RetryWorker(
        broker, publisher, names,
        JobLock(db, JOB, owner="cut-off", stale_after=job_settings.stale_after),
        RetryDecisions(unreachable, Campaigns(away["nowhere"])), unreachable,
        RetryMetrics(CollectorRegistry()), pass_limit=100, failure_threshold=3,
    )  # fmt: skip
    assert await worker.lock.acquire() is not None
    job = {"message_id": str(ObjectId())}
    await publish_due(publisher, names, job, message_id="parked-1")
    await publish_due(publisher, names, {"kind": "read"}, message_id="behind-it")

    result = await worker.run_pass()

    assert outcomes(result) == {"parked": 1}  # and the pass stopped there
    assert result.error is not None
    assert "store unavailable" in result.error
    waiting = await drain(amqp_channel, names.retry_due_queue)
    assert [m.message_id for m in waiting] == ["behind-it", "parked-1"]  # parked at the tail
    parked = waiting[1]
    assert parked.headers is not None
    assert parked.headers[PARKED_HEADER] == 1
    assert not [h for h in parked.headers if "death" in h]
    assert header_str(parked.headers, QUEUE_HEADER) == names.outbound_queue
    assert await drain(amqp_channel, names.outbound_queue) == []
    doc = await db[JOB_LOCKS].find_one({"_id": JOB})
    assert doc is not None
    assert doc["consecutiveFailures"] == 1
    assert "store unavailable" in doc["lastError"]
    await worker.close()
    await away.close()


async def test_a_bug_returns_the_job_to_the_queue_and_never_dead_letters_it(
    worker: RetryWorker, publisher: ConfirmedPublisher, names: Names, db: Database,
    amqp_channel: AbstractChannel,
) -> None:  # fmt: skip
    # A document no code should write: a send_state that is a list.
    doc = await store_outbound(db, send_state="retrying")
    await db[MESSAGES].update_one({"_id": doc["_id"]}, {"$set": {"send_state": ["retrying"]}})
    await publish_due(publisher, names, {"message_id": str(doc["_id"])}, message_id="buggy")
    with logs_with_context() as logs:
        result = await worker.run_pass()
    assert outcomes(result) == {"returned": 1}
    assert result.error is not None
    assert result.error.startswith("crashed: TypeError")
    assert [e["exception"] for e in logs if e["event"] == "retry.crashed"] == ["TypeError"]
    [back] = await drain(amqp_channel, names.retry_due_queue)
    assert back.message_id == "buggy"
    assert back.redelivered
    assert await drain(amqp_channel, names.dead_letter_queue(names.retry_due_queue)) == []


async def test_a_pass_stops_before_taking_a_job_when_the_lock_was_lost(
    job_settings: RetryJobSettings, db: Database, broker: Broker, publisher: ConfirmedPublisher,
    names: Names, amqp_channel: AbstractChannel,
) -> None:  # fmt: skip
    settings = job_settings.model_copy(update={"retry_worker_stale_seconds": 2.0})
    worker = new_worker(settings, db, broker, publisher, names)
    assert await worker.lock.acquire() is not None
    await publish_due(publisher, names, {"kind": "read"})
    # Past the renewal point (a third of the bound), another worker took the lock over.
    await asyncio.sleep(0.8)
    await db[JOB_LOCKS].update_one({"_id": JOB}, {"$set": {"lockedBy": "usurper"}})

    result = await worker.run_pass()

    assert result.seen == 0
    assert result.error is not None
    assert "lost the job lock" in result.error
    assert len(await drain(amqp_channel, names.retry_due_queue)) == 1
    await worker.close()


@pytest.mark.slow
async def test_a_job_through_a_real_delay_tier_comes_back_without_the_brokers_headers(
    worker: RetryWorker, publisher: ConfirmedPublisher, names: Names, db: Database,
    amqp_channel: AbstractChannel,
) -> None:  # fmt: skip
    doc = await store_outbound(db, send_state="retrying", tenant=TENANT)
    body = b'{"message_id": "%s"}' % str(doc["_id"]).encode()
    # Exactly what the kit's consumer does with TransientError(tier="5s").
    await publisher.publish(
        names.retry_exchange, "5s", body, message_id=str(doc["_id"]),
        headers={TIER_HEADER: "5s", QUEUE_HEADER: names.outbound_queue, "request_id": "r-1"},
        content_type="application/json", timestamp=datetime.now(UTC) - timedelta(seconds=1),
    )  # fmt: skip

    async def arrived() -> bool:
        return await depth(amqp_channel, names.retry_due_queue) == 1

    assert await depth(amqp_channel, names.retry_tier_queue("5s")) == 1
    await wait_until(arrived, "the 5 s tier to hand the job to the due queue", timeout=15)
    result = await worker.run_pass()
    assert outcomes(result) == {"requeued": 1}
    [back] = await drain(amqp_channel, names.outbound_queue)
    assert back.body == body
    assert header_str(back.headers, "request_id") == "r-1"
    assert not [h for h in back.headers or {} if "death" in h]
