"""Meta's business-account webhooks (template status, number quality) against the real broker
and store: stored once per change in ``account_events``, found by their WABA, and their risk
signals pause the campaigns they concern, each with its alert."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aio_pika.abc import AbstractQueue
from aiohttp import ClientSession
from bson import ObjectId

from inbox_api.consumer.service import Outcome, WebhookProcessor
from inbox_common.broker.consumer import Consumer
from inbox_common.broker.publisher import ConfirmedPublisher
from inbox_common.broker.topology import Names
from inbox_common.store.client import Database, Document
from inbox_common.store.collections import (
    ACCOUNT_EVENTS,
    ALERTS,
    CAMPAIGNS,
    MESSAGES,
    WEBHOOK_EVENTS,
)
from inbox_common.store.ledger import RECEIVED
from inbox_common.whatsapp.signature import SIGNATURE_HEADER, sign
from inbox_sandbox import payloads
from inbox_testkit.broker import publish_delivery
from inbox_testkit.sandbox import SECRET
from inbox_testkit.store import create_channel, ledger_entry
from inbox_testkit.tenants import ACME_NUMBER, ACME_SECOND_NUMBER, GLOBEX_NUMBER
from inbox_testkit.webhooks import (
    TEMPLATE_ID,
    WEBHOOK_TIME,
    delivery_of,
    entries,
    quality_update,
    template_status,
)

pytestmark = pytest.mark.integration

TEMPLATE = "order_confirmation"
FIRST_PAUSE = {
    "title": "FIRST_PAUSE",
    "description": "Your WhatsApp message template has been paused because of low quality.",
}


async def campaign(
    db: Database,
    channel: Document,
    *,
    template: str = TEMPLATE,
    language: str = "en_US",
    status: str = "running",
    name: str | None = None,
) -> ObjectId:
    """A campaign document as the campaigns service stores one (only what pausing reads)."""
    campaign_id = ObjectId()
    doc = {
        "_id": campaign_id,
        "tenant": channel["tenant"],
        "name": name or f"{template} on {channel['phone_number_id']}",
        "channel_id": channel["_id"],
        "phone_number_id": channel["phone_number_id"],
        "status": status,
        "template": {"name": template, "language": {"code": language}, "components": []},
    }
    await db[CAMPAIGNS].insert_one(doc)
    return campaign_id


async def status_of(db: Database, campaign_id: ObjectId) -> str:
    doc = await db[CAMPAIGNS].find_one({"_id": campaign_id})
    assert doc is not None
    return str(doc["status"])


async def paused_alerts(db: Database, campaign_id: ObjectId) -> list[Document]:
    return await db[ALERTS].find({"kind": "campaign_paused", "subject": str(campaign_id)}).to_list()


async def account_events(db: Database) -> list[Document]:
    return await db[ACCOUNT_EVENTS].find({}).sort("_id", -1).to_list()


# --- end to end -----------------------------------------------------------------------------


async def test_a_paused_template_goes_from_the_ingest_to_account_events_and_pauses_its_campaign(
    ingest_url: str,
    consumer: Consumer,
    work_queue: AbstractQueue,
    dead_queue: AbstractQueue,
    db: Database,
    channel: Document,
) -> None:
    running = await campaign(db, channel)
    scheduled = await campaign(db, channel, status="scheduled")
    other_template = await campaign(db, channel, template="shipping_update")
    other_language = await campaign(db, channel, language="de")
    body = orjson.dumps(
        template_status(channel["waba_id"], event="PAUSED", name=TEMPLATE, other_info=FIRST_PAUSE)
    )

    # Meta's signed POST: the ingest publishes it as it does every body.
    async with ClientSession() as http:
        headers = {SIGNATURE_HEADER: sign(SECRET.encode(), body)}
        async with http.post(ingest_url, data=body, headers=headers) as answer:
            assert answer.status == 200
    assert await consumer.process(await work_queue.get(timeout=5)) == "acked"
    assert await dead_queue.get(fail=False, timeout=1) is None

    [event] = await account_events(db)
    assert event["tenant"] == "acme"
    assert event["channel_ids"] == [channel["_id"]]
    assert (event["waba_id"], event["field"]) == (
        channel["waba_id"],
        "message_template_status_update",
    )
    assert (event["event"], event["reason"], event["signal"]) == (
        "PAUSED",
        "NONE",
        "template_paused",
    )
    assert event["template"] == {"id": str(TEMPLATE_ID), "name": TEMPLATE, "language": "en_US"}
    assert event["quality"] is None
    assert event["occurred_at"] == datetime.fromtimestamp(WEBHOOK_TIME, tz=UTC)
    assert event["value"]["other_info"] == FIRST_PAUSE
    assert event["value"]["message_template_category"] == "MARKETING"
    sha256 = delivery_of(body).sha256
    assert event["webhook_event"]["sha256"] == sha256
    entry = await ledger_entry(db, sha256)
    # The ledger's numbers are those the body names: a WABA is not one.
    assert (entry["status"], entry["phone_number_ids"]) == ("processed", [])
    assert event["webhook_event"]["request_id"] == entry["request_id"]

    for paused in (running, scheduled):
        doc = await db[CAMPAIGNS].find_one({"_id": paused})
        assert doc is not None
        assert doc["status"] == "paused"
        assert (doc["paused"]["by"], doc["paused"]["signal"]) == ("auto", "template_paused")
        assert "low quality" in doc["paused"]["reason"]
        [alert] = await paused_alerts(db, paused)
        assert (alert["status"], alert["tenant"], alert["count"]) == ("open", "acme", 1)
        assert alert["evidence"]["signal"] == "template_paused"
    for untouched in (other_template, other_language):
        assert await status_of(db, untouched) == "running"
        assert await paused_alerts(db, untouched) == []


async def test_an_account_change_of_an_unknown_waba_is_stored_without_channel_and_acked(
    consumer: Consumer,
    publisher: ConfirmedPublisher,
    names: Names,
    work_queue: AbstractQueue,
    dead_queue: AbstractQueue,
    db: Database,
    channel: Document,
) -> None:
    own = await campaign(db, channel)
    delivery = delivery_of(template_status("WABA_NOBODY_KNOWS", event="DISABLED", name=TEMPLATE))
    await publish_delivery(publisher, names, delivery)

    assert await consumer.process(await work_queue.get(timeout=5)) == "acked"

    assert await dead_queue.get(fail=False, timeout=1) is None
    assert await work_queue.get(fail=False, timeout=1) is None
    [event] = await account_events(db)
    assert (event["tenant"], event["channel_ids"], event["waba_id"]) == (
        None,
        [],
        "WABA_NOBODY_KNOWS",
    )
    assert event["signal"] == "template_disabled"
    entry = await ledger_entry(db, delivery.sha256)
    assert (entry["status"], entry["phone_number_ids"], entry["error"]) == ("processed", [], None)
    assert await status_of(db, own) == "running"


# --- templates ------------------------------------------------------------------------------


async def test_a_disabled_template_pauses_its_campaigns_on_every_number_of_the_waba_only(
    processor: WebhookProcessor, db: Database, channel: Document
) -> None:
    waba = channel["waba_id"]
    second = await create_channel(
        db, tenant="acme", phone_number_id=ACME_SECOND_NUMBER, waba_id=waba
    )
    globex = await create_channel(db, tenant="globex", phone_number_id=GLOBEX_NUMBER)
    on_first, on_second = await campaign(db, channel), await campaign(db, second)
    other_waba = await campaign(db, globex)
    draft = await campaign(db, channel, status="draft")
    completed = await campaign(db, channel, status="completed")
    body = template_status(waba, event="DISABLED", name=TEMPLATE, disable_date=1751234563)

    assert await processor.process(delivery_of(body)) is Outcome.PROCESSED

    [event] = await account_events(db)
    assert event["channel_ids"] == [channel["_id"], second["_id"]]
    for paused in (on_first, on_second):
        doc = await db[CAMPAIGNS].find_one({"_id": paused})
        assert doc is not None
        assert (doc["status"], doc["paused"]["signal"]) == ("paused", "template_disabled")
        assert "disabled the template 'order_confirmation' (en_US)" in doc["paused"]["reason"]
        assert len(await paused_alerts(db, paused)) == 1
    assert await status_of(db, other_waba) == "running"
    assert (await status_of(db, draft), await status_of(db, completed)) == ("draft", "completed")


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ("APPROVED", "NONE"),
        ("REJECTED", "INCORRECT_CATEGORY"),
        ("PENDING", "NONE"),
        ("FLAGGED", "NONE"),
        ("REINSTATED", "NONE"),
        ("PENDING_DELETION", None),
        ("ARCHIVED", "NONE"),
    ],
)
async def test_a_template_event_that_is_no_risk_is_stored_and_pauses_nothing(
    processor: WebhookProcessor, db: Database, channel: Document, event: str, reason: str | None
) -> None:
    running = await campaign(db, channel)
    body = template_status(channel["waba_id"], event=event, name=TEMPLATE, reason=reason)

    assert await processor.process(delivery_of(body)) is Outcome.PROCESSED

    [stored] = await account_events(db)
    assert (stored["event"], stored["reason"], stored["signal"]) == (event, reason, None)
    assert await status_of(db, running) == "running"
    assert await db[ALERTS].count_documents({}) == 0


# --- number quality -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "old_limit", "signal"),
    [("FLAGGED", None, "quality_flagged"), ("DOWNGRADE", "TIER_10K", "quality_downgrade")],
)
async def test_a_quality_risk_pauses_the_campaigns_of_the_number_it_names(
    processor: WebhookProcessor,
    db: Database,
    channel: Document,
    event: str,
    old_limit: str | None,
    signal: str,
) -> None:
    # Two numbers of one WABA; the API stores display numbers as typed, Meta sends digits.
    second = await create_channel(
        db,
        tenant="acme",
        phone_number_id=ACME_SECOND_NUMBER,
        waba_id=channel["waba_id"],
        display_phone_number="+1 555-078-3881",
    )
    flagged = [await campaign(db, second), await campaign(db, second, template="welcome")]
    other_number = await campaign(db, channel)
    body = quality_update(
        channel["waba_id"],
        display_phone_number="15550783881",
        event=event,
        old_limit=old_limit,
        current_limit="TIER_1K",
    )

    assert await processor.process(delivery_of(body)) is Outcome.PROCESSED

    [stored] = await account_events(db)
    assert stored["channel_ids"] == [second["_id"]]
    assert (stored["field"], stored["event"], stored["signal"]) == (
        "phone_number_quality_update",
        event,
        signal,
    )
    assert stored["quality"] == {
        "display_phone_number": "15550783881",
        "current_limit": "TIER_1K",
        "old_limit": old_limit,
    }
    assert (stored["template"], stored["reason"]) == (None, None)
    for paused in flagged:
        doc = await db[CAMPAIGNS].find_one({"_id": paused})
        assert doc is not None
        assert (doc["status"], doc["paused"]["signal"]) == ("paused", signal)
        assert "15550783881" in doc["paused"]["reason"]
        assert len(await paused_alerts(db, paused)) == 1
    assert await status_of(db, other_number) == "running"


async def test_a_quality_risk_for_a_display_number_no_channel_shows_pauses_the_whole_waba(
    processor: WebhookProcessor, db: Database, channel: Document
) -> None:
    second = await create_channel(
        db, tenant="acme", phone_number_id=ACME_SECOND_NUMBER, waba_id=channel["waba_id"]
    )
    campaigns = [await campaign(db, channel), await campaign(db, second)]
    body = quality_update(
        channel["waba_id"],
        display_phone_number="15559990000",
        event="FLAGGED",
        current_limit="TIER_10K",
    )

    assert await processor.process(delivery_of(body)) is Outcome.PROCESSED

    [stored] = await account_events(db)
    assert stored["channel_ids"] == [channel["_id"], second["_id"]]
    assert [await status_of(db, c) for c in campaigns] == ["paused", "paused"]


@pytest.mark.parametrize(
    ("event", "old_limit", "current_limit"),
    [
        ("UNFLAGGED", None, "TIER_10K"),
        ("UPGRADE", "TIER_1K", "TIER_10K"),
        ("ONBOARDING", None, "TIER_NOT_SET"),
        ("THROUGHPUT_UPGRADE", None, "TIER_UNLIMITED"),
    ],
)
async def test_a_quality_event_that_is_no_risk_is_stored_and_pauses_nothing(
    processor: WebhookProcessor,
    db: Database,
    channel: Document,
    event: str,
    old_limit: str | None,
    current_limit: str,
) -> None:
    running = await campaign(db, channel)
    body = quality_update(
        channel["waba_id"],
        display_phone_number=channel["display_phone_number"],
        event=event,
        old_limit=old_limit,
        current_limit=current_limit,
        max_daily_conversations_per_business=current_limit,
    )

    assert await processor.process(delivery_of(body)) is Outcome.PROCESSED

    [stored] = await account_events(db)
    assert (stored["event"], stored["signal"]) == (event, None)
    assert stored["value"]["max_daily_conversations_per_business"] == current_limit
    assert await status_of(db, running) == "running"
    assert await db[ALERTS].count_documents({}) == 0


# --- idempotency, tenants, batching, bad input ----------------------------------------------


async def test_a_body_applied_again_after_a_crash_writes_its_event_and_alerts_once(
    processor: WebhookProcessor, db: Database, channel: Document
) -> None:
    running = await campaign(db, channel)
    body = template_status(
        channel["waba_id"], event="PAUSED", name=TEMPLATE, other_info=FIRST_PAUSE
    )
    await processor.process(delivery_of(body))
    first = await account_events(db)
    # The process died after the writes, before "processed" reached the ledger: the broker
    # redelivers the body (with the same headers) and it is applied again.
    await db[WEBHOOK_EVENTS].update_one(
        {"sha256": delivery_of(body).sha256}, {"$set": {"status": RECEIVED}}
    )

    assert await processor.process(delivery_of(body)) is Outcome.PROCESSED
    # Meta's resend of the same bytes once it was processed: a duplicate.
    assert await processor.process(delivery_of(body)) is Outcome.DUPLICATE

    assert await account_events(db) == first
    assert await status_of(db, running) == "paused"
    [alert] = await paused_alerts(db, running)
    assert alert["count"] == 1


async def test_a_waba_shared_by_two_tenants_gets_one_event_each_and_pauses_each_ones_own(
    processor: WebhookProcessor, db: Database, channel: Document
) -> None:
    globex = await create_channel(
        db, tenant="globex", phone_number_id=GLOBEX_NUMBER, waba_id=channel["waba_id"]
    )
    acme_campaign, globex_campaign = await campaign(db, channel), await campaign(db, globex)
    body = template_status(channel["waba_id"], event="PAUSED", name=TEMPLATE)

    assert await processor.process(delivery_of(body)) is Outcome.PROCESSED

    stored = {e["tenant"]: e for e in await account_events(db)}
    assert set(stored) == {"acme", "globex"}
    assert stored["acme"]["channel_ids"] == [channel["_id"]]
    assert stored["globex"]["channel_ids"] == [globex["_id"]]
    assert [await status_of(db, c) for c in (acme_campaign, globex_campaign)] == ["paused"] * 2
    alerts = await db[ALERTS].find({"kind": "campaign_paused"}).to_list()
    assert sorted(a["tenant"] for a in alerts) == ["acme", "globex"]


async def test_account_changes_batched_with_messages_are_each_applied(
    processor: WebhookProcessor, db: Database, channel: Document
) -> None:
    running = await campaign(db, channel)
    wamid = payloads.new_wamid()
    waba = channel["waba_id"]
    body = entries(
        payloads.text_webhook(ACME_NUMBER, "491701234567", "Ann", "hi", wamid=wamid),
        template_status(waba, event="APPROVED", name="welcome"),
        quality_update(
            waba, display_phone_number="15550001111", event="FLAGGED", current_limit="TIER_1K"
        ),
    )

    assert await processor.process(delivery_of(body)) is Outcome.PROCESSED

    assert await db[MESSAGES].find_one({"wamid": wamid}) is not None
    events = await account_events(db)
    assert sorted(e["event"] for e in events) == ["APPROVED", "FLAGGED"]
    assert len({e["_id"] for e in events}) == 2
    assert await status_of(db, running) == "paused"


async def test_many_account_bodies_in_one_flush_are_each_stored(
    processor: WebhookProcessor, db: Database, channel: Document
) -> None:
    bodies = [
        template_status(channel["waba_id"], event="APPROVED", name=f"template_{n}", template_id=n)
        for n in range(20)
    ]

    outcomes = await asyncio.gather(*(processor.process(delivery_of(b)) for b in bodies))

    assert set(outcomes) == {Outcome.PROCESSED}
    stored = await account_events(db)
    assert sorted(e["template"]["name"] for e in stored) == sorted(
        f"template_{n}" for n in range(20)
    )


def _without(body: dict[str, Any], key: str) -> dict[str, Any]:
    del body["entry"][0]["changes"][0]["value"][key]
    return body


async def test_an_account_change_off_meta_schema_fails_its_body_but_not_its_siblings(
    consumer: Consumer,
    publisher: ConfirmedPublisher,
    names: Names,
    work_queue: AbstractQueue,
    dead_queue: AbstractQueue,
    db: Database,
    channel: Document,
) -> None:
    waba = channel["waba_id"]
    body = entries(
        _without(template_status(waba, event="PAUSED", name=TEMPLATE), "event"),
        template_status(waba, event="APPROVED", name="welcome"),
    )
    delivery = delivery_of(body)
    await publish_delivery(publisher, names, delivery)

    assert await consumer.process(await work_queue.get(timeout=5)) == "acked"

    assert await dead_queue.get(fail=False, timeout=1) is None
    entry = await ledger_entry(db, delivery.sha256)
    assert entry["status"] == "failed"
    assert entry["error"]["code"] == "invalid_payload:schema"
    assert "value.event" in entry["error"]["message"]
    [stored] = await account_events(db)
    assert stored["event"] == "APPROVED"


async def test_an_entry_time_that_is_not_unix_seconds_fails_nothing(
    processor: WebhookProcessor, db: Database, channel: Document
) -> None:
    body = template_status(channel["waba_id"], event="APPROVED", name=TEMPLATE)
    body["entry"][0]["time"] = "soon"
    delivery = delivery_of(body)

    assert await processor.process(delivery) is Outcome.PROCESSED

    [stored] = await account_events(db)
    assert stored["occurred_at"] is None
    # Its id's time is the receipt's then: still newest first.
    assert stored["_id"].generation_time == delivery.received_at.replace(microsecond=0)
