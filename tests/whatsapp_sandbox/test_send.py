"""POST /{version}/{phone_number_id}/messages: Meta's request schema, answers and errors."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from tests.whatsapp_sandbox.conftest import (
    AUTH,
    BSUID,
    CUSTOMER,
    MESSAGES,
    NUMBER,
    Client,
    ledger,
    template,
    text,
)


async def test_a_text_send_answers_meta_s_shape_and_lands_in_the_ledger(sandbox: Client) -> None:
    body = text(to="+1 555-123-4567", biz_opaque_callback_data="outbound-42")
    response = await sandbox.post(MESSAGES, json=body, headers=AUTH)
    assert response.status == 200
    answer = await response.json()
    wamid = answer["messages"][0]["id"]
    assert answer == {
        "messaging_product": "whatsapp",
        "contacts": [{"input": "+1 555-123-4567", "wa_id": CUSTOMER}],
        "messages": [{"id": wamid}],
    }
    assert wamid.startswith("wamid.")

    sent = await ledger(sandbox)
    assert sent["total"] == 1
    [item] = sent["items"]
    assert item["wamid"] == wamid
    assert item["phone_number_id"] == NUMBER
    assert item["to"] == "+1 555-123-4567"
    assert "recipient" not in item
    assert item["type"] == "text"
    assert item["request"] == body
    assert item["biz_opaque_callback_data"] == "outbound-42"
    assert datetime.fromisoformat(item["accepted_at"]).tzinfo is not None


async def test_every_send_gets_a_new_wamid_and_its_own_ledger_entry(sandbox: Client) -> None:
    # Meta has no idempotency key: the same body twice is two messages.
    wamids = []
    for _ in range(3):
        response = await sandbox.post(MESSAGES, json=template(), headers=AUTH)
        wamids.append((await response.json())["messages"][0]["id"])
    assert len(set(wamids)) == 3
    sent = await ledger(sandbox)
    assert [item["wamid"] for item in sent["items"]] == wamids
    assert [item["seq"] for item in sent["items"]] == [1, 2, 3]


async def test_a_template_answer_carries_message_status_accepted(sandbox: Client) -> None:
    response = await sandbox.post(MESSAGES, json=template(), headers=AUTH)
    assert response.status == 200
    [message] = (await response.json())["messages"]
    assert message["message_status"] == "accepted"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic token-one"}],
    ids=["missing", "wrong-token", "not-bearer"],
)
async def test_a_bad_token_is_190_with_http_401(sandbox: Client, headers: dict[str, str]) -> None:
    response = await sandbox.post(MESSAGES, json=text(), headers=headers)
    assert response.status == 401
    assert "invalid_token" in response.headers["WWW-Authenticate"]
    error = (await response.json())["error"]
    assert error["code"] == 190
    assert error["type"] == "OAuthException"
    assert error["message"] == "Invalid OAuth access token - Cannot parse access token"
    assert error["fbtrace_id"]
    # A Graph-level error: no WhatsApp error_data.
    assert "error_data" not in error
    assert (await ledger(sandbox))["total"] == 0


async def test_an_unknown_number_is_graph_s_unsupported_post_request(sandbox: Client) -> None:
    response = await sandbox.post("/v23.0/123456/messages", json=text(), headers=AUTH)
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == 100
    assert error["error_subcode"] == 33
    assert error["type"] == "GraphMethodException"
    assert error["message"].startswith("Unsupported post request. Object with ID '123456' does not")


@pytest.mark.parametrize(
    ("body", "code", "details"),
    [
        (b"{not json", 100, "not valid JSON"),
        (b"[]", 100, "must be a JSON object"),
        ({"to": CUSTOMER, "type": "text", "text": {"body": "x"}}, 100, "messaging_product"),
        ({**text(), "messaging_product": "sms"}, 100, "messaging_product"),
        ({"messaging_product": "whatsapp", "type": "text", "text": {"body": "x"}}, 131008, "'to'"),
        ({**text(), "text": {"bodyx": "x"}}, 100, 'Unexpected key "bodyx" on param "text"'),
        ({**text(), "text": {}}, 131008, "'text.body' is required"),
        ({**text(), "text": {"body": 5}}, 131009, "'text.body' is not valid"),
        ({**text(), "text": {"body": "x" * 4097}}, 131009, "'text.body'"),
        ({**text(), "type": "image", "image": {"caption": "x"}}, 131008, "'id' or 'link'"),
        ({**text(), "type": "video"}, 131008, "'video' is required for type video"),
        ({**text(), "type": "fax", "fax": {}}, 131009, "'type' is not valid"),
        ({**text(), "to": "call me"}, 131009, "'to' is not valid"),
        ({**text(), "to": None, "recipient": "13491208655302741918"}, 131009, "'recipient'"),
        ({**text(), "recipient_type": "group"}, 131009, "'recipient_type'"),
        ({**text(), "biz_opaque_callback_data": "x" * 513}, 131009, "biz_opaque_callback_data"),
        ({**text(), "context": {}}, 131008, "'context.message_id' is required"),
        ({**text(), "surprise": 1}, 100, 'Unexpected key "surprise"'),
        (
            {
                **text(),
                "type": "interactive",
                "interactive": {
                    "type": "button",
                    "body": {"text": "Pick one"},
                    "action": {
                        "buttons": [
                            {"type": "reply", "reply": {"id": str(n), "title": f"B{n}"}}
                            for n in range(4)
                        ]
                    },
                },
            },
            131009,
            "'interactive.action.buttons'",
        ),
        (
            {**template(), "template": {"name": "x"}},
            131008,
            "'template.language' is required",
        ),
    ],
    ids=[
        "not-json", "not-an-object", "no-product", "wrong-product", "no-recipient",
        "unknown-key", "no-body", "body-not-a-string", "body-too-long", "media-without-source",
        "type-without-object", "unknown-type", "bad-phone", "bad-bsuid", "group", "opaque-too-long",
        "context-without-id", "unknown-top-level-key", "four-buttons", "template-without-language",
    ],
)  # fmt: skip
async def test_an_invalid_body_gets_meta_s_code_naming_the_parameter(
    sandbox: Client, body: dict[str, Any] | bytes, code: int, details: str
) -> None:
    if isinstance(body, bytes):
        response = await sandbox.post(MESSAGES, data=body, headers=AUTH)
    else:
        response = await sandbox.post(MESSAGES, json=body, headers=AUTH)
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == code
    assert error["message"].startswith(f"(#{code}) ")
    assert error["type"] == "OAuthException"
    assert error["error_data"]["messaging_product"] == "whatsapp"
    assert details in error["error_data"]["details"]
    assert (await ledger(sandbox))["total"] == 0


SEND_BODIES: dict[str, dict[str, Any]] = {
    "image": {"type": "image", "image": {"link": "https://example.com/a.jpg", "caption": "A"}},
    "document": {"type": "document", "document": {"id": "1234", "filename": "invoice.pdf"}},
    "audio": {"type": "audio", "audio": {"id": "5678"}},
    "video": {"type": "video", "video": {"link": "https://example.com/v.mp4"}},
    "sticker": {"type": "sticker", "sticker": {"id": "42"}},
    "location": {
        "type": "location",
        "location": {"latitude": -6.2, "longitude": 106.8, "name": "Monas", "address": "Jakarta"},
    },
    "contacts": {
        "type": "contacts",
        "contacts": [{"name": {"formatted_name": "Budi"}, "phones": [{"phone": "+62 811"}]}],
    },
    "buttons": {
        "type": "interactive",
        "interactive": {
            "type": "button",
            "body": {"text": "Confirm?"},
            "action": {"buttons": [{"type": "reply", "reply": {"id": "y", "title": "Yes"}}]},
        },
    },
    "list": {
        "type": "interactive",
        "interactive": {
            "type": "list",
            "header": {"type": "text", "text": "Menu"},
            "body": {"text": "Choose"},
            "footer": {"text": "Thanks"},
            "action": {
                "button": "Options",
                "sections": [{"title": "All", "rows": [{"id": "r1", "title": "One"}]}],
            },
        },
    },
    "template-with-parameters": {
        "type": "template",
        "template": {
            "name": "order_update",
            "language": {"code": "en_US"},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": "Budi"}]}],
        },
    },
    "reaction": {"type": "reaction", "reaction": {"message_id": "wamid.X", "emoji": "👍"}},
    "reaction-removal": {"type": "reaction", "reaction": {"message_id": "wamid.X", "emoji": ""}},
    "reply": {
        "type": "text",
        "text": {"body": "Yes", "preview_url": True},
        "context": {"message_id": "wamid.Y"},
    },
}  # fmt: skip


@pytest.mark.parametrize("name", list(SEND_BODIES))
async def test_every_message_type_is_accepted_and_kept_as_received(
    sandbox: Client, name: str
) -> None:
    body = {"messaging_product": "whatsapp", "to": CUSTOMER, **SEND_BODIES[name]}
    response = await sandbox.post(MESSAGES, json=body, headers=AUTH)
    assert response.status == 200, await response.text()
    [item] = (await ledger(sandbox))["items"]
    assert item["type"] == body["type"]
    assert item["request"] == body


async def test_a_send_to_a_bsuid_answers_with_user_id_and_no_wa_id(sandbox: Client) -> None:
    body = {**template(), "to": None, "recipient": BSUID}
    del body["to"]
    response = await sandbox.post(MESSAGES, json=body, headers=AUTH)
    assert response.status == 200
    answer = await response.json()
    assert answer["contacts"] == [{"input": BSUID, "user_id": BSUID}]
    [item] = (await ledger(sandbox))["items"]
    assert item["recipient"] == BSUID
    assert "to" not in item


async def test_the_phone_number_wins_when_both_recipients_are_given(sandbox: Client) -> None:
    response = await sandbox.post(MESSAGES, json={**template(), "recipient": BSUID}, headers=AUTH)
    assert (await response.json())["contacts"] == [{"input": CUSTOMER, "wa_id": CUSTOMER}]
    [item] = (await ledger(sandbox))["items"]
    assert item["to"] == CUSTOMER
    assert "recipient" not in item


async def test_mark_as_read_succeeds_and_is_not_a_send(sandbox: Client) -> None:
    body = {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
        "typing_indicator": {"type": "text"},
    }
    response = await sandbox.post(MESSAGES, json=body, headers=AUTH)
    assert response.status == 200
    assert await response.json() == {"success": True}
    assert (await ledger(sandbox))["total"] == 0
    missing = {"messaging_product": "whatsapp", "status": "read"}
    refused = await sandbox.post(MESSAGES, json=missing, headers=AUTH)
    assert (await refused.json())["error"]["code"] == 131008


async def test_any_graph_version_is_served_and_other_paths_are_not(sandbox: Client) -> None:
    for version in ("v17.0", "v23.0", "v25.0"):
        response = await sandbox.post(
            f"/{version}/{NUMBER}/messages", json=template(), headers=AUTH
        )
        assert response.status == 200
    missing = await sandbox.post(f"/latest/{NUMBER}/messages", json=template(), headers=AUTH)
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "body",
    [
        {"messaging_product": "whatsapp", "to": None, "recipient": None, "text": {"body": "x"}},
        {**text(), "text": None},
        {**text(), "text": ["body"]},
        {**text(), "type": None},
        {**text(), "context": "wamid.X"},
        {**text(), "type": "contacts", "contacts": [{"name": "Budi"}]},
        {**text(), "type": "location", "location": {"latitude": 1e400, "longitude": 0}},
        {**text(), "type": "interactive", "interactive": {"type": "list", "action": None}},
        {**text(), "type": "template", "template": {"name": "x", "language": "en"}},
        {**text(), "to": 15551234567},
        {"messaging_product": "whatsapp", "status": "read", "message_id": None},
        {"messaging_product": "whatsapp", "status": ["read"], "message_id": "wamid.X"},
    ],
)
async def test_hostile_bodies_are_refused_with_a_meta_code_never_a_crash(
    sandbox: Client, body: dict[str, Any]
) -> None:
    response = await sandbox.post(MESSAGES, json=body, headers=AUTH)
    assert response.status == 400
    assert (await response.json())["error"]["code"] in (100, 131008, 131009)
