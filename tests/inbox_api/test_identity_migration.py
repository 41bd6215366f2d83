"""Migration 2 on data in the shape the code before BSUIDs wrote, and an event that arrives
while it runs.

That code keyed a contact by ``wa_id`` (the phone, or the BSUID when the phone was missing)
and derived the conversation id from that key: a customer who wrote once with a phone and
once with only a username became two contacts and two conversations. The documents below are
written exactly as it wrote them (the same fields and the same id formula).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pymongo.errors import OperationFailure

from inbox_api.consumer.service import Stores, WebhookProcessor
from inbox_common.store.client import Database, Document, create_client
from inbox_common.store.identities import conversation_id, migrate_contacts
from inbox_common.store.migrations import apply_migrations, check_schema
from inbox_common.store.schema import CONTACTS, CONVERSATIONS, MESSAGES
from inbox_common.tokens import Role, create_token
from inbox_sandbox import payloads
from inbox_testkit.plugin import ApiClient
from inbox_testkit.store import create_channel
from inbox_testkit.tenants import ACME_NUMBER, bearer
from inbox_testkit.webhooks import delivery_of

pytestmark = pytest.mark.integration

PHONE, BSUID = "4915111222333", "DE.1349120865530274191"
ONLY_BSUID = "DE.7777777777777777777"  # a username customer: never a phone
T0 = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture
async def db(mongo_url: str, mongo_db_name: str) -> AsyncIterator[Database]:
    """A database at migration 1: the schema the code before BSUIDs ran on."""
    client = create_client(mongo_url, app_name="tests")
    database = client[mongo_db_name]
    await apply_migrations(database, up_to=1)
    yield database
    await client.close()


async def write_as_before(db: Database, channel: Document) -> dict[str, object]:
    """What the code before BSUIDs stored for two customers (see the module docstring)."""
    by_phone = conversation_id(channel["_id"], PHONE)
    by_bsuid = conversation_id(channel["_id"], BSUID)
    by_only = conversation_id(channel["_id"], ONLY_BSUID)
    base = {"channel_id": channel["_id"], "tenant": channel["tenant"]}
    await db[CONTACTS].insert_many(
        [
            {**base, "wa_id": PHONE, "user_id": BSUID, "name": "Budi", "created_at": T0},
            {
                **base,
                "wa_id": BSUID,
                "user_id": BSUID,
                "name": "Budi",
                "created_at": T0 + timedelta(days=1),
            },
            {
                **base,
                "wa_id": ONLY_BSUID,
                "user_id": ONLY_BSUID,
                "name": "Sari",
                "created_at": T0,
            },
        ]
    )
    conversations = []
    for oid, key, wamid, at in (
        (by_phone, PHONE, "wamid.P", T0),
        (by_bsuid, BSUID, "wamid.B", T0 + timedelta(days=1)),
        (by_only, ONLY_BSUID, "wamid.O", T0),
    ):
        conversations.append(
            {
                **base,
                "_id": oid,
                "wa_id": key,
                "status": "open",
                "created_at": at,
                "contact_name": "Budi",
                "last_message_at": at,
                "last_message_wamid": wamid,
                "last_message_preview": wamid,
                "last_inbound_at": at,
                "unread_wamids": [wamid],
            }
        )
        await db[MESSAGES].insert_one(
            {
                **base,
                "wamid": wamid,
                "conversation_id": oid,
                "direction": "inbound",
                "from": key,
                "type": "text",
                "content": {"body": wamid},
                "timestamp": at,
                "status": "received",
                "created_at": at,
            }
        )
    await db[CONVERSATIONS].insert_many(conversations)
    return {"by_phone": by_phone, "by_bsuid": by_bsuid, "by_only": by_only}


async def test_the_migration_merges_the_split_customer_and_keeps_every_conversation_id(
    db: Database, channel: Document, api: ApiClient
) -> None:
    ids = await write_as_before(db, channel)

    applied = await apply_migrations(db)

    assert applied[0].version == 2  # and whatever came after it
    assert await check_schema(db) == []
    contacts = await db[CONTACTS].find({"merged_into": {"$exists": False}}).to_list()
    by_bsuid = {c["user_id"]: c for c in contacts}
    assert set(by_bsuid) == {BSUID, ONLY_BSUID}
    budi, sari = by_bsuid[BSUID], by_bsuid[ONLY_BSUID]
    assert budi["wa_id"] == PHONE
    assert "wa_id" not in sari  # the BSUID left the phone's field
    assert budi["conversation_id"] == ids["by_phone"]  # the older one survives
    assert sari["conversation_id"] == ids["by_only"]
    token = await create_token(db, role=Role.AGENT, tenant="acme")
    for key in ("by_phone", "by_bsuid"):  # both ids lead to Budi's one conversation
        response = await api.get(f"/api/conversations/{ids[key]}", headers=bearer(token))
        assert response.status == 200, await response.text()
        body = await response.json()
        assert body["id"] == str(ids["by_phone"])
        assert body["contact"] == {
            "wa_id": PHONE,
            "user_id": BSUID,
            "username": None,
            "name": "Budi",
        }
        assert body["unread_count"] == 2
    response = await api.get(
        f"/api/conversations/{ids['by_phone']}/messages", headers=bearer(token)
    )
    assert [m["wamid"] for m in (await response.json())["items"]] == ["wamid.P", "wamid.B"]
    response = await api.get("/api/conversations", headers=bearer(token))
    listed = {c["id"]: c["contact"] for c in (await response.json())["items"]}
    assert listed == {
        str(ids["by_phone"]): {"wa_id": PHONE, "user_id": BSUID, "username": None, "name": "Budi"},
        str(ids["by_only"]): {
            "wa_id": None,
            "user_id": ONLY_BSUID,
            "username": None,
            "name": "Budi",
        },
    }

    # Idempotent: the data step again changes nothing.
    before = await db[CONTACTS].find({}).sort("_id", 1).to_list()
    await migrate_contacts(db)
    assert await db[CONTACTS].find({}).sort("_id", 1).to_list() == before


async def test_an_event_that_arrives_during_the_migration_is_applied_once(
    db: Database, channel: Document
) -> None:
    ids = await write_as_before(db, channel)
    processor = WebhookProcessor(Stores.of(db))
    contact = payloads.user_contact(BSUID, wa_id=PHONE, name="Budi")
    message = payloads.user_message(
        "text", "wamid.MID", {"body": "mid"}, wa_id=PHONE, user_id=BSUID, timestamp=1_800_000_000
    )
    body = delivery_of(payloads.webhook(ACME_NUMBER, contacts=[contact], messages=[message]))

    async def migrate() -> None:
        try:
            await apply_migrations(db)
        except OperationFailure:
            # An index build can meet a duplicate the concurrent writer made between the
            # data step and the build: db-deploy is run again, and merges it.
            await apply_migrations(db)

    await asyncio.gather(migrate(), processor.process(body))
    await processor.process(body)  # and a redelivery of it: still once

    assert await check_schema(db) == []
    live = await db[CONTACTS].find({"user_id": BSUID, "merged_into": {"$exists": False}}).to_list()
    assert len(live) == 1
    stored = await db[MESSAGES].find({"wamid": "wamid.MID"}).to_list()
    assert len(stored) == 1
    conversation = await db[CONVERSATIONS].find_one({"_id": live[0]["conversation_id"]})
    assert conversation is not None
    assert "merged_into" not in conversation
    assert conversation["_id"] == ids["by_phone"]
    assert stored[0]["conversation_id"] == conversation["_id"]
    assert "wamid.MID" in conversation["unread_wamids"]


@pytest.fixture
async def channel(db: Database) -> Document:
    return await create_channel(db, tenant="acme", phone_number_id=ACME_NUMBER)
