"""The webhook service (no AMQP) against the real store: every event type, idempotency,
ordering, unknown channels, replay and concurrency."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from datetime import UTC, datetime
from typing import Any

import pytest

from inbox_api.consumer.service import Outcome, Stores, WebhookProcessor
from inbox_api.store.inbox import Inbox, Writes
from inbox_common.store.client import Database, Document
from inbox_common.store.ledger import RECEIVED
from inbox_common.store.schema import CONTACTS, CONVERSATIONS, MESSAGES, WEBHOOK_EVENTS
from inbox_sandbox import payloads
from inbox_testkit.store import create_channel, snapshot, store_message
from inbox_testkit.tenants import ACME_NUMBER, GLOBEX_NUMBER, UNKNOWN_NUMBER
from inbox_testkit.webhooks import delivery_of, entries

pytestmark = pytest.mark.integration

T0 = 1_700_000_000
WA = "491701234567"


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, tz=UTC)


def inbound(*messages: dict[str, Any], wa_id: str = WA, name: str = "Ann") -> dict[str, Any]:
    return payloads.webhook(
        ACME_NUMBER, contacts=[payloads.contact(wa_id, name)], messages=list(messages)
    )


def statuses(*items: dict[str, Any]) -> dict[str, Any]:
    return payloads.webhook(ACME_NUMBER, statuses=list(items))


async def message(db: Database, wamid: str) -> Document:
    doc = await db[MESSAGES].find_one({"wamid": wamid})
    assert doc is not None, f"no message {wamid}"
    return doc


async def conversation(db: Database, wa_id: str = WA) -> Document:
    doc = await db[CONVERSATIONS].find_one({"wa_id": wa_id})
    assert doc is not None, f"no conversation with {wa_id}"
    return doc


async def ledger(db: Database, body: dict[str, Any] | bytes) -> Document:
    doc = await db[WEBHOOK_EVENTS].find_one({"sha256": delivery_of(body).sha256})
    assert doc is not None
    return doc


async def store_outbound(db: Database, channel: Document, wamid: str, *, seconds: int) -> None:
    """What the sending path stores for an outbound message."""
    doc = {
        "wamid": wamid,
        "direction": "outbound",
        "type": "text",
        "content": {"body": "Hi!"},
        "timestamp": at(seconds),
    }
    await store_message(db, channel, WA, doc, preview="Hi!", inbound=False, status="pending")


# --- inbound messages -----------------------------------------------------------------------


async def test_a_text_message_creates_contact_conversation_and_message(
    processor: WebhookProcessor, db: Database, channel: Document
) -> None:
    wamid = payloads.new_wamid()
    body = inbound(payloads.text_message(WA, wamid, "Hello there", timestamp=T0))

    assert await processor.process(delivery_of(body, request_id="req-1")) is Outcome.PROCESSED

    contact = await db[CONTACTS].find_one({"wa_id": WA})
    assert contact is not None
    assert (contact["name"], contact["user_id"]) == ("Ann", f"US.{WA}")
    assert (contact["channel_id"], contact["tenant"]) == (channel["_id"], "acme")
    conv = await conversation(db)
    assert conv["unread_wamids"] == [wamid]
    assert conv["last_message_preview"] == "Hello there"
    assert conv["last_message_at"] == at(0)
    assert conv["last_inbound_at"] == at(0)
    assert (conv["status"], conv["contact_name"], conv["tenant"]) == ("open", "Ann", "acme")
    stored = await message(db, wamid)
    assert stored["content"] == {"body": "Hello there"}
    assert (stored["type"], stored["direction"], stored["from"]) == ("text", "inbound", WA)
    assert stored["conversation_id"] == conv["_id"]
    assert stored["timestamp"] == at(0)
    assert stored["reply_to"] is None
    event = await ledger(db, body)
    assert (event["status"], event["attempts"], event["request_id"]) == ("processed", 1, "req-1")
    assert event["phone_number_ids"] == [ACME_NUMBER]
    assert event["error"] is None


async def test_the_same_delivery_twice_is_a_duplicate(
    processor: WebhookProcessor, db: Database, channel: Document
) -> None:
    body = inbound(payloads.text_message(WA, payloads.new_wamid(), "once", timestamp=T0))
    await processor.process(delivery_of(body))
    before = await snapshot(db)

    assert await processor.process(delivery_of(body)) is Outcome.DUPLICATE

    assert await snapshot(db) == before
    assert len((await conversation(db))["unread_wamids"]) == 1
    assert await db[MESSAGES].count_documents({}) == 1
    assert (await ledger(db, body))["attempts"] == 2


async def test_a_crash_before_the_ledger_is_marked_leaves_one_delivery(
    processor: WebhookProcessor, db: Database, channel: Document
) -> None:
    body = inbound(
        payloads.text_message(WA, payloads.new_wamid(), "one", timestamp=T0),
        payloads.media_message("image", WA, payloads.new_wamid(), caption="two", timestamp=T0 + 1),
    )
    await processor.process(delivery_of(body))
    once = await snapshot(db)
    # The process died after the writes, before "processed" reached the ledger.
    await db[WEBHOOK_EVENTS].update_one(
        {"sha256": delivery_of(body).sha256}, {"$set": {"status": RECEIVED}}
    )

    assert await processor.process(delivery_of(body)) is Outcome.PROCESSED

    assert await snapshot(db) == once
    assert (await ledger(db, body))["status"] == "processed"


class _CrashingInbox(Inbox):
    """Dies (like a killed process) half-way through its writes: the contacts, the
    conversations and the first message are stored, the rest is not, and the ledger entry
    is never finished."""

    async def write(self, writes: Writes) -> None:
        assert len(writes.new_messages) + len(writes.messages) > 1
        half = Writes(writes.contacts, writes.conversations, writes.new_messages[:1])
        await super().write(half)
        raise RuntimeError("killed")


async def test_a_crash_half_way_then_a_redelivery_equals_one_clean_delivery(
    db: Database, reference_db: Database
) -> None:
    for database in (db, reference_db):
        await create_channel(database, tenant="acme", phone_number_id=ACME_NUMBER)
    first, second, third = (payloads.new_wamid() for _ in range(3))
    body = inbound(
        payloads.text_message(WA, first, "one", timestamp=T0),
        payloads.text_message(WA, second, "two", timestamp=T0 + 1, reply_to=first),
        payloads.reaction_message(WA, third, first, "👍", timestamp=T0 + 2),
    )
    stores = Stores.of(db)
    crashing = WebhookProcessor(dataclasses.replace(stores, inbox=_CrashingInbox(db)))

    with pytest.raises(RuntimeError, match="killed"):
        await crashing.process(delivery_of(body))
    # The entry is written once, with its fate, after the content: none yet.
    assert await db[WEBHOOK_EVENTS].find_one({"sha256": delivery_of(body).sha256}) is None
    assert await WebhookProcessor(stores).process(delivery_of(body)) is Outcome.PROCESSED
    assert await WebhookProcessor(Stores.of(reference_db)).process(delivery_of(body)) is (
        Outcome.PROCESSED
    )

    assert await snapshot(db) == await snapshot(reference_db)


MEDIA_ID = "1234567890"


@pytest.mark.parametrize(
    ("built", "content", "preview"),
    [
        pytest.param(
            payloads.media_message("image", WA, "w", media_id=MEDIA_ID, caption="Look"),
            {"caption": "Look", "mime_type": "image/jpeg", "id": MEDIA_ID},
            "Look",
            id="image",
        ),
        pytest.param(
            payloads.media_message("audio", WA, "w", media_id=MEDIA_ID, voice=True),
            {"voice": True, "mime_type": "audio/ogg; codecs=opus", "id": MEDIA_ID},
            "[voice message]",
            id="audio-voice",
        ),
        pytest.param(
            payloads.media_message("video", WA, "w", media_id=MEDIA_ID),
            {"mime_type": "video/mp4", "id": MEDIA_ID},
            "[video]",
            id="video",
        ),
        pytest.param(
            payloads.media_message("document", WA, "w", media_id=MEDIA_ID, filename="inv.pdf"),
            {"filename": "inv.pdf", "mime_type": "application/pdf", "id": MEDIA_ID},
            "[document] inv.pdf",
            id="document",
        ),
        pytest.param(
            payloads.media_message("sticker", WA, "w", media_id=MEDIA_ID, animated=False),
            {"animated": False, "mime_type": "image/webp", "id": MEDIA_ID},
            "[sticker]",
            id="sticker",
        ),
        pytest.param(
            payloads.message(
                "location",
                WA,
                "w",
                {"latitude": 52.52, "longitude": 13.405, "name": "Office", "address": "Main 1"},
            ),
            {"latitude": 52.52, "longitude": 13.405, "name": "Office", "address": "Main 1"},
            "[location] Office",
            id="location",
        ),
        pytest.param(
            payloads.message(
                "contacts",
                WA,
                "w",
                [{"name": {"formatted_name": "Bob B", "first_name": "Bob"}, "phones": []}],
            ),
            {
                "contacts": [
                    {"name": {"formatted_name": "Bob B", "first_name": "Bob"}, "phones": []}
                ]
            },
            "[contact] Bob B",
            id="contacts",
        ),
        pytest.param(
            payloads.message(
                "interactive",
                WA,
                "w",
                {"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes please"}},
            ),
            {"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes please"}},
            "Yes please",
            id="interactive-button_reply",
        ),
        pytest.param(
            payloads.message(
                "interactive",
                WA,
                "w",
                {
                    "type": "list_reply",
                    "list_reply": {"id": "r2", "title": "Tuesday", "description": "10-12"},
                },
            ),
            {
                "type": "list_reply",
                "list_reply": {"id": "r2", "title": "Tuesday", "description": "10-12"},
            },
            "Tuesday",
            id="interactive-list_reply",
        ),
        pytest.param(
            payloads.message("button", WA, "w", {"payload": "STOP", "text": "Stop promotions"}),
            {"payload": "STOP", "text": "Stop promotions"},
            "Stop promotions",
            id="button",
        ),
        pytest.param(
            {
                **payloads.message("unsupported", WA, "w", None),
                "errors": [payloads.meta_error(131051, "Message type unknown", "not supported")],
            },
            {"errors": [payloads.meta_error(131051, "Message type unknown", "not supported")]},
            "[unsupported message]",
            id="unsupported",
        ),
        pytest.param(
            payloads.message("hologram", WA, "w", {"shape": "cube", "spin": 3}),
            {"shape": "cube", "spin": 3},
            "[hologram]",
            id="unknown-future-type",
        ),
    ],
)
async def test_every_inbound_type_is_stored_with_its_content(
    processor: WebhookProcessor,
    db: Database,
    channel: Document,
    built: dict[str, Any],
    content: dict[str, Any],
    preview: str,
) -> None:
    wamid = payloads.new_wamid()
    body = inbound({**built, "id": wamid, "timestamp": str(T0)})

    assert await processor.process(delivery_of(body)) is Outcome.PROCESSED

    stored = await message(db, wamid)
    assert stored["type"] == built["type"]
    for key, value in content.items():
        assert stored["content"].get(key) == value, key
    assert (await conversation(db))["last_message_preview"] == preview


async def test_a_reply_keeps_what_it_replies_to(
    processor: WebhookProcessor, db: Database, channel: Document
) -> None:
    first, reply = payloads.new_wamid(), payloads.new_wamid()
    await processor.process(
        delivery_of(inbound(payloads.text_message(WA, first, "Q", timestamp=T0)))
    )
    body = inbound(payloads.text_message(WA, reply, "A", timestamp=T0 + 1, reply_to=first))

    await processor.process(delivery_of(body))

    assert (await message(db, reply))["reply_to"] == first
    assert (await message(db, first))["reply_to"] is None


async def test_a_forwarded_message_is_marked(
    processor: WebhookProcessor, db: Database, channel: Document
) -> None:
    wamid = payloads.new_wamid()
    built = payloads.text_message(WA, wamid, "fwd", timestamp=T0)
    built["context"] = {"forwarded": True}

    await processor.process(delivery_of(inbound(built)))

    stored = await message(db, wamid)
    assert stored["forwarded"] is True
    assert stored["reply_to"] is None


async def test_the_preview_follows_the_newest_message_whatever_the_order(
    processor: WebhookProcessor, db: Database, channel: Document
) -> None:
    newer, older = payloads.new_wamid(), payloads.new_wamid()

    await processor.process(
        delivery_of(inbound(payloads.text_message(WA, newer, "new", timestamp=T0 + 60)))
    )
    await processor.process(
        delivery_of(inbound(payloads.text_message(WA, older, "old", timestamp=T0)))
    )

    conv = await conversation(db)
    assert conv["last_message_preview"] == "new"
    assert conv["last_message_at"] == at(60)
    assert conv["last_inbound_at"] == at(60)
    assert sorted(conv["unread_wamids"]) == sorted([newer, older])


# --- reactions ------------------------------------------------------------------------------


async def test_a_reaction_applies_to_its_target(
    processor: WebhookProcessor, db: Database, channel: Document
) -> None:
    target, reaction = payloads.new_wamid(), payloads.new_wamid()
    await processor.process(
        delivery_of(inbound(payloads.text_message(WA, target, "hi", timestamp=T0)))
    )

    body = inbound(payloads.reaction_message(WA, reaction, target, "❤️", timestamp=T0 + 5))
    assert await processor.process(delivery_of(body)) is Outcome.PROCESSED

    stored = await message(db, target)
    assert stored["reactions"] == [{"by": WA, "emoji": "❤️", "timestamp": at(5), "wamid": reaction}]
    assert await db[MESSAGES].count_documents({"wamid": reaction}) == 0
    conv = await conversation(db)
    assert conv["unread_wamids"] == [target]
    assert conv["last_message_preview"] == "hi"


async def test_an_empty_emoji_removes_the_reaction(
    processor: WebhookProcessor, db: Database, channel: Document
) -> None:
    target = payloads.new_wamid()
    await processor.process(
        delivery_of(inbound(payloads.text_message(WA, target, "hi", timestamp=T0)))
    )
    await processor.process(
        delivery_of(
            inbound(
                payloads.reaction_message(WA, payloads.new_wamid(), target, "👍", timestamp=T0 + 1)
            )
        )
    )

    await processor.process(
        delivery_of(
            inbound(
                payloads.reaction_message(WA, payloads.new_wamid(), target, "", timestamp=T0 + 2)
            )
        )
    )

    reactions = (await message(db, target))["reactions"]
    assert [(r["by"], r["emoji"]) for r in reactions] == [(WA, None)]


async def test_a_reaction_before_its_target_shows_once_the_target_arrives(
    processor: WebhookProcessor, db: Database, channel: Document
) -> None:
    target = payloads.new_wamid()
    await processor.process(
        delivery_of(
            inbound(
                payloads.reaction_message(WA, payloads.new_wamid(), target, "🎉", timestamp=T0 + 5)
            )
        )
    )

    await processor.process(
        delivery_of(inbound(payloads.text_message(WA, target, "party", timestamp=T0)))
    )

    stored = await message(db, target)
    assert stored["content"] == {"body": "party"}
    assert stored["direction"] == "inbound"
    assert [(r["by"], r["emoji"]) for r in stored["reactions"]] == [(WA, "🎉")]
    assert await db[MESSAGES].count_documents({}) == 1


@pytest.mark.parametrize(
    ("first", "second", "emoji"),
    [
        pytest.param(("👍", 10), ("", 5), "👍", id="late-older-removal-is-ignored"),
        pytest.param(("", 10), ("👍", 5), None, id="late-older-reaction-is-ignored"),
        pytest.param(("👍", 5), ("", 10), None, id="in-order-removal"),
        pytest.param(("👍", 5), ("😮", 10), "😮", id="in-order-change"),
        pytest.param(("😮", 10), ("👍", 5), "😮", id="late-older-change-is-ignored"),
    ],
)
async def test_reactions_resolve_by_timestamp_not_arrival(
    processor: WebhookProcessor,
    db: Database,
    channel: Document,
    first: tuple[str, int],
    second: tuple[str, int],
    emoji: str | None,
) -> None:
    target = payloads.new_wamid()
    await processor.process(
        delivery_of(inbound(payloads.text_message(WA, target, "hi", timestamp=T0)))
    )
    for face, seconds in (first, second):
        reaction = payloads.reaction_message(
            WA, payloads.new_wamid(), target, face, timestamp=T0 + seconds
        )
        await processor.process(delivery_of(inbound(reaction)))

    reactions = (await message(db, target))["reactions"]
    assert [(r["by"], r["emoji"]) for r in reactions] == [(WA, emoji)]


# --- statuses -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sequence", "final"),
    [
        (("sent", "delivered", "read", "failed"), "read"),
        (("sent", "delivered", "failed"), "delivered"),
        (("sent", "failed"), "failed"),
        (("sent", "delivered", "read"), "read"),
    ],
)
async def test_statuses_only_move_forward_in_every_order(
    processor: WebhookProcessor,
    db: Database,
    channel: Document,
    sequence: tuple[str, ...],
    final: str,
) -> None:
    orders = list(itertools.permutations(sequence))
    wamids = [payloads.new_wamid() for _ in orders]
    for i, wamid in enumerate(wamids):
        await store_outbound(db, channel, wamid, seconds=i)
    # Step k delivers, for every message, the k-th status of its own arrival order.
    for step in range(len(sequence)):
        body = statuses(
            *(
                payloads.status(wamid, order[step], WA, timestamp=T0 + 100 + step)
                for wamid, order in zip(wamids, orders, strict=True)
            )
        )
        assert await processor.process(delivery_of(body)) is Outcome.PROCESSED

    for wamid, order in zip(wamids, orders, strict=True):
        stored = await message(db, wamid)
        assert stored["status"] == final, order
        history = [s["status"] for s in stored["statuses"]]
        assert sorted(history) == sorted(sequence), order


async def test_a_failed_status_keeps_its_errors(
    processor: WebhookProcessor, db: Database, channel: Document
) -> None:
    wamid = payloads.new_wamid()
    await store_outbound(db, channel, wamid, seconds=0)
    error = payloads.meta_error(131047, "Re-engagement message", "More than 24 hours have passed")

    await processor.process(
        delivery_of(statuses(payloads.status(wamid, "failed", WA, errors=[error])))
    )

    stored = await message(db, wamid)
    assert stored["status"] == "failed"
    [entry] = stored["statuses"]
    assert entry["errors"][0]["code"] == 131047
    assert entry["errors"][0]["title"] == "Re-engagement message"
    assert entry["errors"][0]["error_data"] == {"details": "More than 24 hours have passed"}


async def test_a_status_before_its_message_is_applied_when_the_message_appears(
    processor: WebhookProcessor, db: Database, channel: Document
) -> None:
    wamid = payloads.new_wamid()
    await processor.process(
        delivery_of(statuses(payloads.status(wamid, "delivered", WA, timestamp=T0 + 2)))
    )
    await processor.process(
        delivery_of(statuses(payloads.status(wamid, "sent", WA, timestamp=T0 + 1)))
    )

    await store_outbound(db, channel, wamid, seconds=0)

    stored = await message(db, wamid)
    assert (stored["direction"], stored["content"]) == ("outbound", {"body": "Hi!"})
    assert stored["status"] == "delivered"
    assert [s["status"] for s in stored["statuses"]] == ["delivered", "sent"]
    assert await db[MESSAGES].count_documents({}) == 1


async def test_a_repeated_status_never_duplicates_history(
    processor: WebhookProcessor, db: Database, channel: Document
) -> None:
    wamid = payloads.new_wamid()
    await store_outbound(db, channel, wamid, seconds=0)
    sent = payloads.status(wamid, "sent", WA, timestamp=T0 + 1)
    delivered = payloads.status(wamid, "delivered", WA, timestamp=T0 + 2)

    # Different bodies (so the ledger cannot dedupe them) carrying the same statuses.
    for body in (statuses(sent), statuses(sent, delivered), statuses(delivered, sent)):
        assert await processor.process(delivery_of(body)) is Outcome.PROCESSED
    await processor.process(delivery_of(statuses(sent)))

    stored = await message(db, wamid)
    assert [s["status"] for s in stored["statuses"]] == ["sent", "delivered"]
    assert stored["status"] == "delivered"


# --- failures and replay --------------------------------------------------------------------


async def test_an_unknown_channel_fails_and_a_replay_after_creating_it_succeeds(
    processor: WebhookProcessor, db: Database
) -> None:
    wamid = payloads.new_wamid()
    body = payloads.text_webhook(UNKNOWN_NUMBER, WA, "Ann", "early bird", wamid=wamid, timestamp=T0)

    assert await processor.process(delivery_of(body)) is Outcome.FAILED

    event = await ledger(db, body)
    assert event["status"] == "failed"
    assert event["error"]["code"] == "unknown_channel"
    assert UNKNOWN_NUMBER in event["error"]["message"]
    assert event["phone_number_ids"] == [UNKNOWN_NUMBER]
    assert await db[MESSAGES].count_documents({}) == 0

    await create_channel(db, tenant="acme", phone_number_id=UNKNOWN_NUMBER)
    assert await processor.process(delivery_of(body)) is Outcome.PROCESSED

    assert (await message(db, wamid))["content"] == {"body": "early bird"}
    event = await ledger(db, body)
    assert (event["status"], event["error"], event["attempts"]) == ("processed", None, 2)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", "invalid_payload:invalid_json"),
        (b"[1, 2]", "invalid_payload:not_an_object"),
        (b'{"object": "whatsapp_business_account"}', "invalid_payload:schema"),
    ],
)
async def test_an_invalid_body_fails_with_its_reason(
    processor: WebhookProcessor, db: Database, raw: bytes, code: str
) -> None:
    assert await processor.process(delivery_of(raw)) is Outcome.FAILED

    event = await ledger(db, raw)
    assert event["status"] == "failed"
    assert event["error"]["code"] == code
    assert event["error"]["code"].startswith("invalid_payload")
    assert event["body"] == raw


async def test_other_webhook_fields_are_kept_in_the_ledger_only(
    processor: WebhookProcessor, db: Database, channel: Document
) -> None:
    body = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "WABA",
                "changes": [
                    {"field": "message_template_status_update", "value": {"event": "APPROVED"}}
                ],
            }
        ],
    }

    assert await processor.process(delivery_of(body)) is Outcome.PROCESSED

    assert (await ledger(db, body))["status"] == "processed"
    assert await db[CONVERSATIONS].count_documents({}) == 0


async def test_a_batch_of_entries_is_applied_whole(
    processor: WebhookProcessor, db: Database, channel: Document
) -> None:
    globex = await create_channel(db, tenant="globex", phone_number_id=GLOBEX_NUMBER)
    ann, bob = "4911111", "4922222"
    outbound = payloads.new_wamid()
    await store_outbound(db, channel, outbound, seconds=0)
    ann_wamids = [payloads.new_wamid() for _ in range(2)]
    bob_wamids = [payloads.new_wamid() for _ in range(3)]
    body = entries(
        payloads.webhook(
            ACME_NUMBER,
            contacts=[payloads.contact(ann, "Ann"), payloads.contact(bob, "Bob")],
            messages=[
                payloads.text_message(ann, ann_wamids[0], "a0", timestamp=T0 + 1),
                payloads.text_message(bob, bob_wamids[0], "b0", timestamp=T0 + 2),
                payloads.text_message(ann, ann_wamids[1], "a1", timestamp=T0 + 3),
            ],
            statuses=[
                payloads.status(outbound, "sent", WA, timestamp=T0 + 1),
                payloads.status(outbound, "delivered", WA, timestamp=T0 + 2),
            ],
        ),
        payloads.webhook(
            GLOBEX_NUMBER,
            contacts=[payloads.contact(bob, "Bob")],
            messages=[
                payloads.text_message(bob, bob_wamids[1], "b1", timestamp=T0 + 4),
                payloads.text_message(bob, bob_wamids[2], "b2", timestamp=T0 + 5),
            ],
        ),
    )

    assert await processor.process(delivery_of(body)) is Outcome.PROCESSED

    # Ann, Bob, and WA (the customer the outbound message went to: every conversation has a
    # contact).
    assert await db[CONTACTS].count_documents({"channel_id": channel["_id"]}) == 3
    assert await db[CONTACTS].count_documents({"channel_id": globex["_id"]}) == 1
    unread = {
        (c["tenant"], c["wa_id"]): len(c["unread_wamids"]) async for c in db[CONVERSATIONS].find({})
    }
    assert unread == {("acme", ann): 2, ("acme", bob): 1, ("acme", WA): 0, ("globex", bob): 2}
    for wamid in [*ann_wamids, *bob_wamids]:
        assert (await message(db, wamid))["direction"] == "inbound"
    assert (await message(db, bob_wamids[2]))["tenant"] == "globex"
    assert (await message(db, outbound))["status"] == "delivered"
    assert sorted((await ledger(db, body))["phone_number_ids"]) == sorted(
        [ACME_NUMBER, GLOBEX_NUMBER]
    )


async def test_concurrent_deliveries_for_one_new_contact_make_one_conversation(
    processor: WebhookProcessor, db: Database, channel: Document
) -> None:
    count = 20
    wamids = [payloads.new_wamid() for _ in range(count)]
    bodies = [
        inbound(payloads.text_message(WA, wamid, f"m{i}", timestamp=T0 + i))
        for i, wamid in enumerate(wamids)
    ]

    outcomes = await asyncio.gather(
        *(processor.process(delivery_of(b)) for b in bodies), return_exceptions=True
    )

    assert set(outcomes) == {Outcome.PROCESSED}, outcomes
    assert await db[CONTACTS].count_documents({}) == 1
    assert await db[CONVERSATIONS].count_documents({}) == 1
    conv = await conversation(db)
    assert sorted(conv["unread_wamids"]) == sorted(wamids)
    assert conv["last_message_preview"] == f"m{count - 1}"
    assert await db[MESSAGES].count_documents({"conversation_id": conv["_id"]}) == count


async def test_the_same_delivery_processed_concurrently_is_stored_once(
    processor: WebhookProcessor, db: Database, channel: Document
) -> None:
    # Two consumers can hold the same body at once (a redelivery while the first still runs).
    wamid = payloads.new_wamid()
    body = inbound(payloads.text_message(WA, wamid, "twice at once", timestamp=T0))
    copies = 30

    outcomes = await asyncio.gather(
        *(processor.process(delivery_of(body)) for _ in range(copies)), return_exceptions=True
    )

    assert set(outcomes) <= {Outcome.PROCESSED, Outcome.DUPLICATE}, outcomes
    assert Outcome.PROCESSED in outcomes
    assert await db[MESSAGES].count_documents({}) == 1
    assert (await conversation(db))["unread_wamids"] == [wamid]
    event = await ledger(db, body)
    assert (event["status"], event["attempts"]) == ("processed", copies)
