"""Customers by identity: a phone (``wa_id``), a business-scoped user id (BSUID, ``user_id``)
or both, always one contact and one conversation per person, whatever the order.

Webhooks go through the real processor into the real store; the shuffled-order test replays
one customer's journey (a legacy phone-only webhook, username-only ones, one that links both,
duplicates) in many orders and interleavings, some bodies processed concurrently.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from inbox_api.consumer.service import Outcome, WebhookProcessor
from inbox_common.store.client import Database, Document
from inbox_common.store.identities import Identities, Identity, conversation_id
from inbox_common.store.schema import CONTACTS, CONVERSATIONS, MESSAGES
from inbox_sandbox import payloads
from inbox_testkit.tenants import ACME_NUMBER
from inbox_testkit.webhooks import delivery_of

pytestmark = pytest.mark.integration

PHONE = "4915111222333"
BSUID = "DE.1349120865530274191"
T0 = 1_700_000_000


def from_user(
    wamid: str,
    text: str,
    *,
    phone: str | None,
    bsuid: str | None,
    username: str | None = None,
    seconds: int = 0,
) -> dict[str, Any]:
    """A text webhook from a customer named by ``phone``, ``bsuid`` or both (Meta's shapes:
    ``from`` only with a phone, ``from_user_id`` with the BSUID)."""
    contact: dict[str, Any] = {"profile": {"name": "Budi"}}
    if username:
        contact["profile"]["username"] = username
    if phone:
        contact["wa_id"] = phone
    if bsuid:
        contact["user_id"] = bsuid
    message = payloads.user_message(
        "text", wamid, {"body": text}, wa_id=phone, user_id=bsuid, timestamp=T0 + seconds
    )
    return payloads.webhook(ACME_NUMBER, contacts=[contact], messages=[message])


def system_change(
    wamid: str,
    kind: str,
    *,
    old_phone: str | None,
    old_bsuid: str,
    new_phone: str | None = None,
    new_bsuid: str,
    seconds: int = 0,
) -> dict[str, Any]:
    """Meta's ``system`` message: no contacts array; the new identifiers in ``system``."""
    system: dict[str, Any] = {
        "body": f"User Budi changed from {old_phone} to {new_phone}",
        "type": kind,
        "user_id": new_bsuid,
        "previous_user_id": old_bsuid,
    }
    if new_phone:
        system["wa_id"] = new_phone
    message = payloads.user_message(
        "system", wamid, system, wa_id=old_phone, user_id=old_bsuid, timestamp=T0 + seconds
    )
    return payloads.webhook(ACME_NUMBER, messages=[message])


async def live_contacts(db: Database) -> list[Document]:
    return await db[CONTACTS].find({"merged_into": {"$exists": False}}).to_list()


async def visible_conversations(db: Database) -> list[Document]:
    return await db[CONVERSATIONS].find({"merged_into": {"$exists": False}}).to_list()


async def test_a_username_customer_is_stored_by_bsuid_with_no_phone(
    processor: WebhookProcessor, db: Database, channel: Document
) -> None:
    wamid = payloads.new_wamid()
    body = from_user(wamid, "Halo", phone=None, bsuid=BSUID, username="budi")

    assert await processor.process(delivery_of(body)) is Outcome.PROCESSED

    [contact] = await live_contacts(db)
    assert "wa_id" not in contact  # no phone: no key at all (the unique index is partial)
    assert (contact["user_id"], contact["username"], contact["name"]) == (BSUID, "budi", "Budi")
    [conversation] = await visible_conversations(db)
    assert (conversation["wa_id"], conversation["user_id"]) == (None, BSUID)
    assert conversation["username"] == "budi"
    assert conversation["_id"] == contact["conversation_id"]
    message = await db[MESSAGES].find_one({"wamid": wamid})
    assert message is not None
    assert message["conversation_id"] == conversation["_id"]


async def test_the_same_bsuid_with_a_phone_later_is_the_same_person(
    processor: WebhookProcessor, db: Database, channel: Document
) -> None:
    first, second = payloads.new_wamid(), payloads.new_wamid()
    await processor.process(delivery_of(from_user(first, "a", phone=None, bsuid=BSUID)))
    await processor.process(
        delivery_of(from_user(second, "b", phone=PHONE, bsuid=BSUID, seconds=1))
    )

    [contact] = await live_contacts(db)
    assert (contact["wa_id"], contact["user_id"]) == (PHONE, BSUID)
    [conversation] = await visible_conversations(db)
    assert (conversation["wa_id"], conversation["user_id"]) == (PHONE, BSUID)
    assert sorted(conversation["unread_wamids"]) == sorted([first, second])
    # The conversation id is the one the person was first known by, and it stays.
    assert conversation["_id"] == conversation_id(channel["_id"], BSUID)


def journey() -> list[tuple[str, dict[str, Any]]]:
    """One customer: a phone-only webhook (before BSUIDs), username-only ones, one with both
    (the link), a username change; each body can arrive twice."""
    steps = [
        ("phone-only", from_user("wamid.J1", "1", phone=PHONE, bsuid=None, seconds=1)),
        ("bsuid-only", from_user("wamid.J2", "2", phone=None, bsuid=BSUID, seconds=2)),
        ("both", from_user("wamid.J3", "3", phone=PHONE, bsuid=BSUID, seconds=3)),
        (
            "username",
            from_user("wamid.J4", "4", phone=None, bsuid=BSUID, username="budi", seconds=4),
        ),
    ]
    return [*steps, *[(f"{name}-again", body) for name, body in steps]]


@pytest.mark.parametrize("seed", range(12))
async def test_any_order_and_interleaving_ends_with_one_contact_and_one_conversation(
    seed: int, processor: WebhookProcessor, db: Database, channel: Document
) -> None:
    rng = random.Random(seed)
    steps = journey()
    rng.shuffle(steps)
    # Bodies in groups: a group is processed concurrently (the same flush, or flushes that
    # overlap), the groups one after the other.
    while steps:
        size = rng.randint(1, 3)
        group, steps = steps[:size], steps[size:]
        outcomes = await asyncio.gather(
            *(processor.process(delivery_of(body)) for _, body in group)
        )
        assert set(outcomes) <= {Outcome.PROCESSED, Outcome.DUPLICATE}

    contacts = await live_contacts(db)
    assert len(contacts) == 1, contacts
    [contact] = contacts
    assert (contact.get("wa_id"), contact.get("user_id")) == (PHONE, BSUID)
    conversations = await visible_conversations(db)
    assert len(conversations) == 1, conversations
    [conversation] = conversations
    assert conversation["_id"] == contact["conversation_id"]
    wamids = {"wamid.J1", "wamid.J2", "wamid.J3", "wamid.J4"}
    assert set(conversation["unread_wamids"]) == wamids
    assert conversation["last_message_preview"] == "4"
    stored = await db[MESSAGES].find({"wamid": {"$in": sorted(wamids)}}).to_list()
    assert {m["conversation_id"] for m in stored} == {conversation["_id"]}
    assert len(stored) == len(wamids)


async def test_a_new_number_keeps_the_contact_and_its_conversation(
    processor: WebhookProcessor, db: Database, channel: Document
) -> None:
    new_phone, new_bsuid = "4915999888777", "DE.9999999999999999999"
    await processor.process(delivery_of(from_user("wamid.N1", "old", phone=PHONE, bsuid=BSUID)))
    [before] = await live_contacts(db)
    change = system_change(
        "wamid.S1",
        "user_changed_number",
        old_phone=PHONE,
        old_bsuid=BSUID,
        new_phone=new_phone,
        new_bsuid=new_bsuid,
        seconds=5,
    )

    assert await processor.process(delivery_of(change)) is Outcome.PROCESSED
    await processor.process(
        delivery_of(from_user("wamid.N2", "new", phone=new_phone, bsuid=new_bsuid, seconds=6))
    )
    # A late webhook from before the change still names the old BSUID: the same person.
    await processor.process(
        delivery_of(from_user("wamid.N0", "late", phone=None, bsuid=BSUID, seconds=4))
    )

    [after] = await live_contacts(db)
    assert after["_id"] == before["_id"]
    assert (after["wa_id"], after["user_id"]) == (new_phone, new_bsuid)
    [history] = after["identity_history"]
    assert (history["kind"], history["wa_id"], history["user_id"]) == (
        "user_changed_number",
        PHONE,
        BSUID,
    )
    [conversation] = await visible_conversations(db)
    assert conversation["_id"] == before["conversation_id"]
    assert (conversation["wa_id"], conversation["user_id"]) == (new_phone, new_bsuid)
    # The system message is no bubble and no unread mark.
    assert set(conversation["unread_wamids"]) == {"wamid.N1", "wamid.N2", "wamid.N0"}
    assert await db[MESSAGES].find_one({"wamid": "wamid.S1"}) is None
    # Applying the change again changes nothing.
    assert await processor.process(delivery_of(change)) is Outcome.DUPLICATE
    replayed = await Identities(db).change(
        channel,
        Identity.of(PHONE, BSUID),
        Identity.of(new_phone, new_bsuid),
        at=before["created_at"],
        wamid="wamid.S1",
        kind="user_changed_number",
    )
    assert replayed.id == before["_id"]
    assert len((await live_contacts(db))[0]["identity_history"]) == 1


async def test_a_message_from_the_new_number_before_the_change_is_merged_in(
    processor: WebhookProcessor, db: Database, channel: Document
) -> None:
    new_phone, new_bsuid = "4915999888777", "DE.9999999999999999999"
    await processor.process(delivery_of(from_user("wamid.M1", "old", phone=PHONE, bsuid=BSUID)))
    [original] = await live_contacts(db)
    # Out of order: the customer writes from the new number before Meta's system message.
    await processor.process(
        delivery_of(from_user("wamid.M2", "new", phone=new_phone, bsuid=new_bsuid, seconds=6))
    )
    assert len(await live_contacts(db)) == 2  # nothing links them yet

    await processor.process(
        delivery_of(
            system_change(
                "wamid.S2",
                "user_changed_number",
                old_phone=PHONE,
                old_bsuid=BSUID,
                new_phone=new_phone,
                new_bsuid=new_bsuid,
                seconds=5,
            )
        )
    )

    [contact] = await live_contacts(db)
    assert contact["_id"] == original["_id"]
    assert (contact["wa_id"], contact["user_id"]) == (new_phone, new_bsuid)
    [conversation] = await visible_conversations(db)
    assert conversation["_id"] == original["conversation_id"]
    assert set(conversation["unread_wamids"]) == {"wamid.M1", "wamid.M2"}
    assert conversation["last_message_preview"] == "new"
    moved = await db[MESSAGES].find_one({"wamid": "wamid.M2"})
    assert moved is not None
    assert moved["conversation_id"] == conversation["_id"]


async def test_a_new_bsuid_keeps_the_phone_and_the_conversation(
    processor: WebhookProcessor, db: Database, channel: Document
) -> None:
    new_bsuid = "DE.5555555555555555555"
    await processor.process(delivery_of(from_user("wamid.U1", "hi", phone=PHONE, bsuid=BSUID)))
    [before] = await live_contacts(db)

    await processor.process(
        delivery_of(
            system_change(
                "wamid.S3",
                "user_changed_user_id",
                old_phone=None,
                old_bsuid=BSUID,
                new_bsuid=new_bsuid,
                seconds=2,
            )
        )
    )
    await processor.process(
        delivery_of(from_user("wamid.U2", "again", phone=None, bsuid=new_bsuid, seconds=3))
    )

    [after] = await live_contacts(db)
    assert after["_id"] == before["_id"]
    assert (after["wa_id"], after["user_id"]) == (PHONE, new_bsuid)
    assert after["former_user_ids"] == [BSUID]
    [conversation] = await visible_conversations(db)
    assert set(conversation["unread_wamids"]) == {"wamid.U1", "wamid.U2"}


async def test_a_status_naming_phone_and_bsuid_links_them(
    processor: WebhookProcessor, db: Database, channel: Document
) -> None:
    await processor.process(delivery_of(from_user("wamid.L1", "hi", phone=PHONE, bsuid=None)))
    status = payloads.outbound_status(
        "wamid.OUT", "delivered", timestamp=T0 + 2, recipient_id=PHONE, recipient_user_id=BSUID
    )
    await processor.process(delivery_of(payloads.webhook(ACME_NUMBER, statuses=[status])))
    await processor.process(
        delivery_of(from_user("wamid.L2", "again", phone=None, bsuid=BSUID, seconds=3))
    )

    [contact] = await live_contacts(db)
    assert (contact["wa_id"], contact["user_id"]) == (PHONE, BSUID)
    [conversation] = await visible_conversations(db)
    assert set(conversation["unread_wamids"]) == {"wamid.L1", "wamid.L2"}
    message = await db[MESSAGES].find_one({"wamid": "wamid.OUT"})
    assert message is not None
    assert message["statuses"][0]["recipient_user_id"] == BSUID
