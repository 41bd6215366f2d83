"""POST /sandbox/inbound: a customer writes, and the ingest receives what Meta would send."""

from __future__ import annotations

from typing import Any

import pytest

from inbox_common.local.ports import free_port
from tests.whatsapp_sandbox.conftest import (
    BSUID,
    CUSTOMER,
    NUMBER,
    WABA,
    Client,
    MakeSandbox,
    Published,
    Receiver,
    messages_of,
    settled,
)

# Each inbound type: the object the request gives, and what Meta's message carries for it.
INBOUND: dict[str, tuple[str, Any, dict[str, Any]]] = {
    "text": ("text", {"body": "Halo"}, {"body": "Halo"}),
    "image": ("image", None, {"mime_type": "image/jpeg"}),
    "voice": ("audio", {"voice": True}, {"voice": True, "mime_type": "audio/ogg; codecs=opus"}),
    "video": ("video", {"caption": "Lihat"}, {"caption": "Lihat", "mime_type": "video/mp4"}),
    "document": ("document", {"filename": "nota.pdf"}, {"filename": "nota.pdf"}),
    "sticker": ("sticker", {"animated": False}, {"animated": False, "mime_type": "image/webp"}),
    "location": (
        "location",
        {"latitude": -6.2, "longitude": 106.8, "name": "Monas"},
        {"latitude": -6.2, "longitude": 106.8, "name": "Monas"},
    ),
    "contacts": (
        "contacts",
        [{"name": {"formatted_name": "Siti"}, "phones": [{"phone": "+62 811 000"}]}],
        {"contacts": [{"name": {"formatted_name": "Siti"}, "phones": [{"phone": "+62 811 000"}]}]},
    ),
    "button_reply": (
        "interactive",
        {"type": "button_reply", "button_reply": {"id": "yes", "title": "Ya"}},
        {"type": "button_reply", "button_reply": {"id": "yes", "title": "Ya"}},
    ),
    "list_reply": (
        "interactive",
        {"type": "list_reply", "list_reply": {"id": "r1", "title": "Satu", "description": "1"}},
        {"type": "list_reply", "list_reply": {"id": "r1", "title": "Satu", "description": "1"}},
    ),
    "button": ("button", {"text": "Stop", "payload": "stop"}, {"text": "Stop", "payload": "stop"}),
    "reaction": (
        "reaction",
        {"message_id": "wamid.OUT", "emoji": "👍"},
        {"message_id": "wamid.OUT", "emoji": "👍"},
    ),
    "unknown": ("ephemeral", None, {}),
}


async def _inbound(client: Client, **fields: Any) -> dict[str, Any]:
    response = await client.post("/sandbox/inbound", json={"phone_number_id": NUMBER, **fields})
    assert response.status == 200, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


@pytest.mark.integration
async def test_every_inbound_type_reaches_the_queue_as_meta_sends_it(
    live: Client, published: Published
) -> None:
    sent: dict[str, str] = {}
    for name, (type_, content, _) in INBOUND.items():
        fields: dict[str, Any] = {"from": f"+{CUSTOMER}", "name": "Budi", "type": type_}
        if content is not None:
            fields[type_] = content
        answer = await _inbound(live, **fields)
        assert answer["ingest_status"] == 200
        sent[answer["wamid"]] = name
    await published.wait_for(len(INBOUND), "every inbound message")
    seen = 0
    for envelope in published.envelopes():
        [entry] = envelope.entry
        assert entry.id == WABA
        [change] = entry.changes
        [contact] = change.value.contacts
        assert contact.wa_id == CUSTOMER
        assert contact.user_id == f"US.{CUSTOMER}"
        assert contact.profile is not None
        assert contact.profile.name == "Budi"
        for message in messages_of(envelope):
            type_, _, expected = INBOUND[sent[message.id]]
            assert message.type == type_
            assert message.from_ == CUSTOMER
            assert message.from_user_id == f"US.{CUSTOMER}"
            content = message.content
            assert content == {**content, **expected}
            if type_ in ("image", "audio", "video", "document", "sticker"):
                assert content["id"]
                assert content["sha256"]
                assert content["mime_type"]
            seen += 1
    assert seen == len(INBOUND)


@pytest.mark.integration
async def test_a_username_customer_comes_with_a_bsuid_and_no_phone_number(
    live: Client, published: Published
) -> None:
    answer = await _inbound(
        live,
        user_id=BSUID,
        username="@realsheenanelson",
        name="Sheena",
        type="text",
        text={"body": "Does it come in another color?"},
    )
    [body] = await published.wait_for(1, "the username customer's message")
    assert b'"from"' not in body.split(b'"messages"')[1]
    [message] = messages_of(published.envelopes()[0])
    assert message.id == answer["wamid"]
    assert message.from_ is None
    assert message.from_user_id == BSUID
    [contact] = published.envelopes()[0].entry[0].changes[0].value.contacts
    assert contact.wa_id is None
    assert contact.user_id == BSUID
    assert contact.profile is not None
    assert contact.profile.username == "@realsheenanelson"
    assert contact.profile.model_extra == {}


@pytest.mark.integration
async def test_a_reply_carries_meta_s_context(live: Client, published: Published) -> None:
    await _inbound(
        live,
        **{"from": CUSTOMER},
        type="text",
        text={"body": "Yes"},
        context={"message_id": "wamid.ASKED"},
    )
    await published.wait_for(1, "the reply")
    [message] = messages_of(published.envelopes()[0])
    assert message.context is not None
    assert message.context.id == "wamid.ASKED"
    assert message.context.from_ == "15550100001"
    assert message.reply_to == "wamid.ASKED"


@pytest.mark.integration
async def test_a_signature_the_ingest_refuses_is_reported_and_nothing_is_published(
    ingest_url: str, make_sandbox: MakeSandbox, published: Published
) -> None:
    sandbox = await make_sandbox(
        ingest_url, whatsapp_webhook_secret="not-the-app-secret", sandbox_webhook_retry_seconds=0.3
    )
    answer = await _inbound(sandbox, **{"from": CUSTOMER}, type="text", text={"body": "x"})
    assert answer["ingest_status"] == 401
    await settled(sandbox)
    await published.wait_for(0, "nothing")
    assert published.bodies == []


async def test_an_unreachable_ingest_is_a_502_that_says_what_to_check(
    make_sandbox: MakeSandbox,
) -> None:
    sandbox = await make_sandbox(
        f"http://127.0.0.1:{free_port()}/webhooks/whatsapp", sandbox_webhook_retry_seconds=0.3
    )
    response = await sandbox.post(
        "/sandbox/inbound",
        json={"phone_number_id": NUMBER, "from": CUSTOMER, "type": "text", "text": {"body": "x"}},
    )
    assert response.status == 502
    error = (await response.json())["error"]
    assert error["code"] == "ingest_unreachable"
    assert "SANDBOX_WEBHOOK_URL" in error["message"]


async def test_inbound_is_signed_and_duplicated_when_asked(
    make_sandbox: MakeSandbox, receiver: Receiver
) -> None:
    sandbox = await make_sandbox(receiver.url, sandbox_webhook_duplicates=1.0)
    await _inbound(sandbox, **{"from": CUSTOMER}, type="text", text={"body": "x"})
    await settled(sandbox)
    assert len(receiver.bodies) == 2
    assert receiver.bodies[0] == receiver.bodies[1]
    assert all(receiver.signed)


@pytest.mark.parametrize(
    ("fields", "status", "code", "mentions"),
    [
        ({"type": "text", "text": {"body": "x"}}, 400, "invalid_body", "'from'"),
        ({"from": "abc", "type": "text", "text": {"body": "x"}}, 400, "invalid_body", "from"),
        ({"user_id": "13491208655302741918", "type": "text"}, 400, "invalid_body", "user_id"),
        ({"from": CUSTOMER, "type": "text"}, 400, "invalid_body", "text"),
        ({"from": CUSTOMER, "type": "text", "text": {}}, 400, "invalid_body", "body"),
        ({"from": CUSTOMER, "type": "location", "location": {}}, 400, "invalid_body", "latitude"),
        ({"from": CUSTOMER, "type": "interactive", "interactive": {"type": "button_reply"}},
         400, "invalid_body", "interactive"),
        ({"from": CUSTOMER, "type": "text", "text": {"body": "x"}, "image": {}},
         400, "invalid_body", "image"),
        ({"from": CUSTOMER, "type": "Text!"}, 400, "invalid_body", "type"),
        ({"from": None, "user_id": None, "type": "text", "text": {"body": "x"}},
         400, "invalid_body", "'from'"),
        ({"phone_number_id": "42", "from": CUSTOMER, "type": "text", "text": {"body": "x"}},
         404, "unknown_number", "42"),
    ],
    ids=[
        "no-customer", "bad-phone", "bad-bsuid", "no-text", "text-without-body",
        "location-without-coordinates", "interactive-without-reply", "stray-object", "bad-type",
        "null-customer", "unknown-number",
    ],
)  # fmt: skip
async def test_a_bad_inbound_request_says_what_is_wrong(
    sandbox: Client, receiver: Receiver, fields: dict[str, Any], status: int, code: str,
    mentions: str,
) -> None:  # fmt: skip
    response = await sandbox.post("/sandbox/inbound", json={"phone_number_id": NUMBER, **fields})
    assert response.status == status
    error = (await response.json())["error"]
    assert error["code"] == code
    assert mentions in error["message"]
    assert receiver.bodies == []
