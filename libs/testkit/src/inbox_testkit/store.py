"""Store helpers for tests: channels, ledger entries, messages and outbound messages written
directly, and a comparable snapshot of the inbox collections."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from inbox_api.store.inbox import Inbox, Touch, Writes
from inbox_common.contracts.delivery import WebhookDelivery
from inbox_common.store.channels import Channels
from inbox_common.store.client import Database, Document
from inbox_common.store.identities import Identities, Identity
from inbox_common.store.ledger import Fate, Ledger
from inbox_common.store.outbound import Outbound, local_wamid
from inbox_common.store.schema import CONTACTS, CONVERSATIONS, MESSAGES, WEBHOOK_EVENTS
from inbox_common.store.token_cipher import TokenCipher, TokenCipherSettings


def cipher() -> TokenCipher:
    """The channel token cipher of the services a test starts (``CHANNEL_TOKEN_KEYS``)."""
    return TokenCipherSettings().token_cipher()


async def create_channel(
    db: Database,
    *,
    tenant: str,
    phone_number_id: str,
    name: str = "Support",
    waba_id: str | None = None,
    display_phone_number: str = "15550001111",
) -> Document:
    """A channel as ``POST /api/channels`` stores one; its WABA is ``WABA<last 4 digits>``
    unless given (give one to put several numbers in one business account)."""
    return await Channels(db, cipher=cipher()).create(
        tenant=tenant,
        fields={
            "name": name,
            "phone_number_id": phone_number_id,
            "waba_id": waba_id or f"WABA{phone_number_id[-4:]}",
            "display_phone_number": display_phone_number,
            "access_token": f"EAAG-secret-{phone_number_id}",
        },
    )


async def record_webhook(
    db: Database,
    delivery: WebhookDelivery,
    *,
    status: str,
    phone_number_ids: list[str],
    error: dict[str, Any] | None = None,
) -> None:
    """A ledger entry for ``delivery`` with the given fate, as the consumer records one."""
    await Ledger(db).record([Fate(delivery, status, phone_number_ids, error)])


async def ledger_entry(db: Database, sha256: str) -> Document:
    """The ledger entry of a body (without the body); fails the test when there is none."""
    entry = await db[WEBHOOK_EVENTS].find_one({"sha256": sha256}, {"body": 0})
    assert entry is not None, f"no ledger entry for sha256 {sha256}"
    return entry


async def store_message(
    db: Database,
    channel: Document,
    wa_id: str,
    doc: Document,
    *,
    preview: str,
    inbound: bool,
    status: str,
) -> ObjectId:
    """Store one message (``wamid``, ``timestamp``...) in its conversation with ``wa_id``, as
    the webhook path writes one; returns the conversation id."""
    writes = Writes()
    touch = Touch(doc["wamid"], doc["timestamp"], preview, inbound)
    contact = await Identities(db).resolve(channel, Identity.of(wa_id, None))
    conversation = writes.touch(channel, contact, name=None, touch=touch)
    writes.message(channel, {**doc, "conversation_id": conversation}, status=status)
    await Inbox(db).write(writes)
    return conversation


async def store_outbound(db: Database, *, tenant: str, send_state: str, **fields: Any) -> Document:
    """An outbound text as inbox-api stores one, in ``send_state`` (``fields`` on top)."""
    message_id = ObjectId()
    now = datetime.now(UTC)
    doc: Document = {
        "_id": message_id,
        "wamid": local_wamid(message_id),
        "conversation_id": ObjectId(),
        "channel_id": ObjectId(),
        "tenant": tenant,
        "direction": "outbound",
        "type": "text",
        "content": {"body": "Your order ships today"},
        "timestamp": now,
        "status": "pending",
        "status_rank": 0,
        "send_state": send_state,
        "attempts": 1,
        "created_at": now,
        **fields,
    }
    stored, _ = await Outbound(db).store(doc)
    return stored


async def snapshot(db: Database) -> dict[str, list[Document]]:
    """Contacts, conversations and messages, comparable across runs and databases.

    Ids are replaced by natural keys (channel → phone number, contact and conversation → the
    contact's phone or BSUID), sets are sorted, and ``created_at`` (the moment of the first
    write) is dropped.
    """
    numbers = {c["_id"]: c["phone_number_id"] async for c in db["channels"].find({})}
    people = {
        c["_id"]: str(c.get("wa_id") or c.get("user_id")) async for c in db[CONTACTS].find({})
    }
    conversations = {
        c["_id"]: people.get(c.get("contact_id"), str(c.get("wa_id")))
        async for c in db[CONVERSATIONS].find({})
    }

    def normal(doc: Document) -> Document:
        out = {k: v for k, v in doc.items() if k not in {"_id", "created_at"}}
        if "channel_id" in out:
            out["channel_id"] = numbers[out["channel_id"]]
        if "contact_id" in out:
            out["contact_id"] = people[out["contact_id"]]
        if "conversation_id" in out:
            out["conversation_id"] = conversations.get(out["conversation_id"], "?")
        if "unread_wamids" in out:
            out["unread_wamids"] = sorted(out["unread_wamids"])
        return out

    def key(doc: Document) -> tuple[str, str]:
        who = doc.get("wamid") or doc.get("wa_id") or doc.get("user_id") or ""
        return (str(doc.get("channel_id")), str(who))

    result: dict[str, list[Document]] = {}
    for collection in (CONTACTS, CONVERSATIONS, MESSAGES):
        docs = [normal(d) async for d in db[collection].find({})]
        result[collection] = sorted(docs, key=key)
    return result
