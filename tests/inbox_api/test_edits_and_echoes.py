"""Meta's kinds that change what exists: a customer's ``edit`` and ``revoke`` of an earlier
message, and the business's own messages from the WhatsApp Business app
(``smb_message_echoes``).

Webhooks go through the real processor into the real store, and are read back through the
REST API. Meta redelivers and reorders, so each case is also played in the hostile order (the
edit or revoke before its message, the later edit first) and redelivered inside another body,
which the ledger cannot recognise as a duplicate.
"""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime
from typing import Any

import pytest

from inbox_api.consumer.service import Outcome, Stores, WebhookProcessor
from inbox_api.store.inbox import Writes
from inbox_common.store.client import Database, Document
from inbox_common.store.schema import CONTACTS, CONVERSATIONS, MESSAGES, WEBHOOK_EVENTS
from inbox_sandbox import payloads
from inbox_testkit.plugin import ApiClient
from inbox_testkit.store import snapshot
from inbox_testkit.tenants import ACME_NUMBER, Tokens, bearer
from inbox_testkit.webhooks import delivery_of, entries

pytestmark = pytest.mark.integration

PHONE = "4915111222333"
BSUID = "DE.1349120865530274191"
BUSINESS = "15550001111"
T0 = 1_700_000_000


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, tz=UTC)


def customer(*messages: dict[str, Any]) -> dict[str, Any]:
    """A ``messages`` webhook from the customer, with Meta's contacts entry."""
    contact = payloads.user_contact(f"US.{PHONE}", wa_id=PHONE, name="Budi")
    return payloads.webhook(ACME_NUMBER, contacts=[contact], messages=list(messages))


def text(wamid: str, body: str, seconds: int) -> dict[str, Any]:
    return payloads.user_message("text", wamid, {"body": body}, wa_id=PHONE, timestamp=T0 + seconds)


def edit(wamid: str, original: str, body: str, seconds: int) -> dict[str, Any]:
    new = payloads.edited("text", {"body": body})
    return payloads.edit_message(wamid, original, new, wa_id=PHONE, timestamp=T0 + seconds)


def revoke(wamid: str, original: str, seconds: int) -> dict[str, Any]:
    return payloads.revoke_message(wamid, original, wa_id=PHONE, timestamp=T0 + seconds)


def echoes(*items: dict[str, Any]) -> dict[str, Any]:
    return payloads.echoes_webhook(ACME_NUMBER, items, display_phone_number=BUSINESS)


def echo_text(wamid: str, body: str, seconds: int, *, to: str = f"+{PHONE}") -> dict[str, Any]:
    return payloads.echo(
        wamid, "text", {"body": body}, to=to, business_number=BUSINESS, timestamp=T0 + seconds
    )


async def deliver(processor: WebhookProcessor, body: dict[str, Any]) -> None:
    assert await processor.process(delivery_of(body)) is Outcome.PROCESSED


async def get_json(api: ApiClient, path: str, token: str) -> Any:
    response = await api.get(path, headers=bearer(token))
    assert response.status == 200, await response.text()
    return await response.json()


async def the_conversation(api: ApiClient, tokens: Tokens) -> dict[str, Any]:
    """The only conversation of the tenant, as the REST API lists it."""
    [conversation] = (await get_json(api, "/api/conversations", tokens.acme_agent))["items"]
    return conversation  # type: ignore[no-any-return]


async def shown(api: ApiClient, tokens: Tokens) -> dict[str, dict[str, Any]]:
    """The messages of the only conversation, by wamid, as the REST API shows them."""
    conversation = await the_conversation(api, tokens)
    path = f"/api/conversations/{conversation['id']}/messages"
    page = await get_json(api, path, tokens.acme_agent)
    return {m["wamid"]: m for m in page["items"]}


async def stored(db: Database, wamid: str) -> Document:
    doc = await db[MESSAGES].find_one({"wamid": wamid})
    assert doc is not None, wamid
    return doc


# --- edits ----------------------------------------------------------------------------------


async def test_an_edit_replaces_the_content_keeps_the_history_and_adds_no_bubble(
    api: ApiClient, tokens: Tokens, processor: WebhookProcessor, channel: Document, db: Database
) -> None:
    await deliver(processor, customer(text("wamid.O", "Halo, stok ada?", 0)))
    await deliver(processor, customer(edit("wamid.E", "wamid.O", "Halo, stok masih ada?", 60)))

    messages = await shown(api, tokens)
    assert list(messages) == ["wamid.O"]
    assert messages["wamid.O"]["content"] == {"body": "Halo, stok masih ada?"}
    assert messages["wamid.O"]["edited"] is True
    assert messages["wamid.O"]["deleted"] is False
    doc = await stored(db, "wamid.O")
    assert doc["edits"] == [
        {
            "wamid": "wamid.E",
            "type": "text",
            "content": {"body": "Halo, stok masih ada?"},
            "timestamp": at(60),
        }
    ]
    conversation = await the_conversation(api, tokens)
    assert conversation["last_message_preview"] == "Halo, stok masih ada?"
    assert conversation["unread_count"] == 1  # the edit is no new message
    assert conversation["last_inbound_at"] == at(0).isoformat().replace("+00:00", "Z")


async def test_an_edit_before_its_message_is_shown_once_the_message_arrives(
    api: ApiClient, tokens: Tokens, processor: WebhookProcessor, channel: Document
) -> None:
    await deliver(processor, customer(edit("wamid.E", "wamid.O", "second thoughts", 60)))

    assert await shown(api, tokens) == {}  # a placeholder, never a bubble of its own

    await deliver(processor, customer(text("wamid.O", "first thoughts", 0)))

    messages = await shown(api, tokens)
    assert messages["wamid.O"]["content"] == {"body": "second thoughts"}
    assert messages["wamid.O"]["edited"] is True
    assert messages["wamid.O"]["direction"] == "inbound"
    assert messages["wamid.O"]["status"] == "received"
    conversation = await the_conversation(api, tokens)
    assert conversation["last_message_preview"] == "second thoughts"
    assert conversation["unread_count"] == 1


async def test_the_same_edit_redelivered_in_another_body_is_recorded_once(
    processor: WebhookProcessor, channel: Document, db: Database
) -> None:
    await deliver(processor, customer(text("wamid.O", "hallo", 0)))
    first = customer(edit("wamid.E", "wamid.O", "halo", 60))
    await deliver(processor, first)

    assert await processor.process(delivery_of(first)) is Outcome.DUPLICATE  # the ledger's
    # Meta batches its retries with other events: a body the ledger has never seen.
    await deliver(processor, entries(first, customer(text("wamid.N", "ok?", 90))))

    doc = await stored(db, "wamid.O")
    assert [e["wamid"] for e in doc["edits"]] == ["wamid.E"]
    assert doc["content"] == {"body": "halo"}


@pytest.mark.parametrize("order", ["in order", "later edit first"])
async def test_of_two_edits_the_latest_wins_and_both_stay_in_the_history(
    api: ApiClient,
    tokens: Tokens,
    processor: WebhookProcessor,
    channel: Document,
    db: Database,
    order: str,
) -> None:
    await deliver(processor, customer(text("wamid.O", "one", 0)))
    bodies = [
        customer(edit("wamid.E1", "wamid.O", "two", 60)),
        customer(edit("wamid.E2", "wamid.O", "three", 120)),
    ]
    for body in bodies if order == "in order" else reversed(bodies):
        await deliver(processor, body)

    assert (await shown(api, tokens))["wamid.O"]["content"] == {"body": "three"}
    doc = await stored(db, "wamid.O")
    assert [(e["wamid"], e["content"]["body"]) for e in doc["edits"]] == [
        ("wamid.E1", "two"),
        ("wamid.E2", "three"),
    ]
    assert (await the_conversation(api, tokens))["last_message_preview"] == "three"


async def test_an_edited_caption_replaces_the_media_object(
    api: ApiClient, tokens: Tokens, processor: WebhookProcessor, channel: Document
) -> None:
    image = payloads.media_content("image", "wamid.O", {"caption": "merah"})
    original = payloads.user_message("image", "wamid.O", image, wa_id=PHONE, timestamp=T0)
    new = payloads.edited("image", {**image, "caption": "biru"}, context_id="wamid.Q")
    changed = payloads.edit_message("wamid.E", "wamid.O", new, wa_id=PHONE, timestamp=T0 + 30)
    await deliver(processor, customer(original, changed))  # one body, in Meta's order

    messages = await shown(api, tokens)
    assert messages["wamid.O"]["content"] == {**image, "caption": "biru"}
    assert messages["wamid.O"]["type"] == "image"
    assert (await the_conversation(api, tokens))["last_message_preview"] == "biru"


async def test_an_edit_of_an_earlier_message_leaves_the_preview_to_the_last_one(
    api: ApiClient, tokens: Tokens, processor: WebhookProcessor, channel: Document
) -> None:
    await deliver(processor, customer(text("wamid.O", "typo", 0), text("wamid.L", "last", 10)))
    await deliver(processor, customer(edit("wamid.E", "wamid.O", "fixed", 60)))

    assert (await shown(api, tokens))["wamid.O"]["content"] == {"body": "fixed"}
    assert (await the_conversation(api, tokens))["last_message_preview"] == "last"


# --- revokes --------------------------------------------------------------------------------


async def test_a_revoke_deletes_the_message_its_edits_and_its_unread_mark(
    api: ApiClient, tokens: Tokens, processor: WebhookProcessor, channel: Document, db: Database
) -> None:
    await deliver(processor, customer(text("wamid.O", "my card number is 4111", 0)))
    await deliver(processor, customer(edit("wamid.E", "wamid.O", "my card is 4111 1111", 30)))
    await deliver(processor, customer(revoke("wamid.R", "wamid.O", 90)))
    assert "4111" not in repr(await stored(db, "wamid.O"))
    # An edit Meta delivers late does not bring the words back.
    await deliver(processor, customer(edit("wamid.E0", "wamid.O", "my card: 4111", 20)))

    message = (await shown(api, tokens))["wamid.O"]
    assert message["deleted"] is True
    assert message["content"] == {}
    doc = await stored(db, "wamid.O")
    assert doc["deleted_at"] == at(90)
    assert "4111" not in repr(doc)
    assert [e["wamid"] for e in doc["edits"]] == ["wamid.E0", "wamid.E"]
    conversation = await the_conversation(api, tokens)
    assert conversation["last_message_preview"] == "[deleted message]"
    assert conversation["unread_count"] == 0


async def test_a_revoke_before_its_message_leaves_it_deleted(
    api: ApiClient, tokens: Tokens, processor: WebhookProcessor, channel: Document, db: Database
) -> None:
    await deliver(processor, customer(revoke("wamid.R", "wamid.O", 90)))
    await deliver(processor, customer(text("wamid.O", "oops, wrong chat", 0)))

    message = (await shown(api, tokens))["wamid.O"]
    assert message["deleted"] is True
    assert message["content"] == {}
    assert message["edited"] is False
    assert (await stored(db, "wamid.O"))["deleted_at"] == at(90)
    conversation = await the_conversation(api, tokens)
    assert conversation["last_message_preview"] == "[deleted message]"
    assert conversation["unread_count"] == 0


async def test_edits_and_revokes_are_announced_as_changes_of_their_message(
    stores: Stores, channel: Document
) -> None:
    announced: list[Writes] = []

    async def written(writes: Writes) -> None:
        announced.append(writes)

    processor = WebhookProcessor(stores, on_written=written)
    await deliver(processor, customer(text("wamid.O", "hi", 0)))
    await deliver(processor, customer(edit("wamid.E", "wamid.O", "hello", 5)))
    await deliver(processor, customer(revoke("wamid.R", "wamid.O", 9)))

    assert [w.changed for w in announced] == [[], ["wamid.O"], ["wamid.O"]]
    assert [[doc["wamid"] for doc, _ in w.new_messages] for w in announced] == [["wamid.O"], [], []]


# --- echoes of the WhatsApp Business app -----------------------------------------------------


async def test_an_echo_is_an_outbound_message_with_no_unread_mark_and_no_window_change(
    api: ApiClient, tokens: Tokens, processor: WebhookProcessor, channel: Document, db: Database
) -> None:
    await deliver(processor, customer(text("wamid.IN", "Ada warna biru?", 0)))
    before = await the_conversation(api, tokens)

    await deliver(processor, echoes(echo_text("wamid.ECHO", "Ada, kak!", 300)))

    after = await the_conversation(api, tokens)  # the same, only conversation
    assert after["id"] == before["id"]
    assert after["last_message_preview"] == "Ada, kak!"
    assert after["last_message_at"] == at(300).isoformat().replace("+00:00", "Z")
    assert after["unread_count"] == before["unread_count"] == 1
    assert after["last_inbound_at"] == before["last_inbound_at"]
    message = (await shown(api, tokens))["wamid.ECHO"]
    assert message["direction"] == "outbound"
    assert message["status"] == "sent"
    assert message["send_state"] == "accepted"
    assert message["content"] == {"body": "Ada, kak!"}
    doc = await stored(db, "wamid.ECHO")
    assert doc["source"] == "business_app"
    assert doc["recipient"] == {"wa_id": PHONE, "user_id": None}
    assert await db[CONTACTS].count_documents({}) == 1


async def test_a_redelivered_echo_is_stored_once(
    api: ApiClient, tokens: Tokens, processor: WebhookProcessor, channel: Document, db: Database
) -> None:
    first = echoes(echo_text("wamid.ECHO", "Terima kasih", 10))
    await deliver(processor, first)
    await deliver(processor, entries(first, echoes(echo_text("wamid.ECHO2", "Sampai jumpa", 20))))

    assert await db[MESSAGES].count_documents({"wamid": "wamid.ECHO"}) == 1
    assert sorted(await shown(api, tokens)) == ["wamid.ECHO", "wamid.ECHO2"]
    conversation = await the_conversation(api, tokens)
    assert conversation["unread_count"] == 0
    assert conversation["last_inbound_at"] is None  # the business never opens the window


async def test_an_echo_to_a_bsuid_only_customer_finds_their_conversation(
    api: ApiClient, tokens: Tokens, processor: WebhookProcessor, channel: Document, db: Database
) -> None:
    contact = payloads.user_contact(BSUID, name="Budi", username="budi")
    message = payloads.user_message("text", "wamid.IN", {"body": "hi"}, user_id=BSUID, timestamp=T0)
    await deliver(processor, payloads.webhook(ACME_NUMBER, contacts=[contact], messages=[message]))
    reply = payloads.echo("wamid.ECHO", "text", {"body": "hai"}, to="", timestamp=T0 + 5)
    del reply["to"]
    reply["to_user_id"] = BSUID

    await deliver(processor, echoes(reply))

    assert sorted(await shown(api, tokens)) == ["wamid.ECHO", "wamid.IN"]
    assert (await stored(db, "wamid.ECHO"))["recipient"] == {"wa_id": None, "user_id": BSUID}


async def test_the_business_edits_and_deletes_its_own_echoed_messages(
    api: ApiClient, tokens: Tokens, processor: WebhookProcessor, channel: Document
) -> None:
    await deliver(processor, customer(text("wamid.IN", "harga?", 0)))
    await deliver(
        processor,
        echoes(echo_text("wamid.A", "Rp 10.000", 10), echo_text("wamid.B", "salah kirim", 20)),
    )
    new = payloads.edited("text", {"body": "Rp 12.000"})
    await deliver(
        processor,
        echoes(
            payloads.echo("wamid.EA", "edit", {"original_message_id": "wamid.A", "message": new},
                          to=f"+{PHONE}", timestamp=T0 + 30),
            payloads.echo("wamid.RB", "revoke", {"original_message_id": "wamid.B"},
                          to=f"+{PHONE}", timestamp=T0 + 40),
        ),
    )  # fmt: skip

    messages = await shown(api, tokens)
    assert sorted(messages) == ["wamid.A", "wamid.B", "wamid.IN"]
    assert messages["wamid.A"]["content"] == {"body": "Rp 12.000"}
    assert messages["wamid.A"]["edited"] is True
    assert messages["wamid.B"]["deleted"] is True
    assert messages["wamid.B"]["content"] == {}
    assert (await the_conversation(api, tokens))["last_message_preview"] == "[deleted message]"


# --- any order ------------------------------------------------------------------------------


JOURNEY = [
    customer(text("wamid.O", "satu", 30)),
    customer(edit("wamid.E1", "wamid.O", "dua", 60)),
    customer(edit("wamid.E2", "wamid.O", "tiga", 120)),
    echoes(echo_text("wamid.ECHO", "oke", 20)),
    customer(text("wamid.P", "nanti dihapus", 10)),
    customer(revoke("wamid.R", "wamid.P", 50)),
]


async def test_any_order_of_messages_edits_revokes_and_echoes_ends_the_same(
    processor: WebhookProcessor, channel: Document, db: Database
) -> None:
    orders = list(itertools.permutations(range(len(JOURNEY))))
    chosen = [orders[0], orders[-1], *random.Random(7).sample(orders[1:-1], 6)]
    snapshots = []
    for order in chosen:
        for name in (CONTACTS, CONVERSATIONS, MESSAGES, WEBHOOK_EVENTS):
            await db[name].delete_many({})
        for i in order:
            await deliver(processor, JOURNEY[i])
        snapshots.append(await snapshot(db))

    assert all(s == snapshots[0] for s in snapshots[1:])
    [conversation] = snapshots[0][CONVERSATIONS]
    assert conversation["last_message_preview"] == "tiga"
    assert conversation["unread_wamids"] == ["wamid.O"]
