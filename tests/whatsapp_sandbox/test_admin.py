"""The phone number node, business numbers registered at run time, and the ledger's filters."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

import pytest

from tests.whatsapp_sandbox.conftest import (
    AUTH,
    BSUID,
    CUSTOMER,
    DISPLAY,
    MESSAGES,
    NUMBER,
    OTHER_NUMBER,
    OTHER_TOKEN,
    TOKEN,
    Client,
    ledger,
    template,
)

NODE = f"/v23.0/{NUMBER}"


async def test_the_phone_number_node_has_meta_s_default_fields(sandbox: Client) -> None:
    response = await sandbox.get(NODE, headers=AUTH)
    assert response.status == 200
    assert await response.json() == {
        "verified_name": "Sandbox Business",
        "code_verification_status": "VERIFIED",
        "display_phone_number": DISPLAY,
        "quality_rating": "GREEN",
        "platform_type": "CLOUD_API",
        "throughput": {"level": "STANDARD"},
        "id": NUMBER,
    }


async def test_the_phone_number_node_answers_the_fields_asked_for(sandbox: Client) -> None:
    response = await sandbox.get(NODE, params={"fields": "throughput,name_status"}, headers=AUTH)
    assert await response.json() == {
        "throughput": {"level": "STANDARD"},
        "name_status": "APPROVED",
        "id": NUMBER,
    }
    unknown = await sandbox.get(NODE, params={"fields": "secret_sauce"}, headers=AUTH)
    assert unknown.status == 400
    error = (await unknown.json())["error"]
    assert error["code"] == 100
    assert "nonexisting field (secret_sauce)" in error["error_data"]["details"]


async def test_the_phone_number_node_checks_the_token_and_the_id(sandbox: Client) -> None:
    expired = await sandbox.get(NODE, headers={"Authorization": f"Bearer {OTHER_TOKEN}"})
    assert expired.status == 401
    assert (await expired.json())["error"]["code"] == 190
    unknown = await sandbox.get("/v23.0/987654321", headers=AUTH)
    assert unknown.status == 400
    error = (await unknown.json())["error"]
    assert error["message"].startswith("Unsupported get request. Object with ID '987654321'")


async def test_numbers_are_listed_without_their_tokens(sandbox: Client) -> None:
    listing = await sandbox.get("/sandbox/numbers")
    text = await listing.text()
    assert TOKEN not in text
    assert OTHER_TOKEN not in text
    numbers = (await listing.json())["numbers"]
    assert [n["phone_number_id"] for n in numbers] == [NUMBER, OTHER_NUMBER]
    assert numbers[0] == {
        "phone_number_id": NUMBER,
        "waba_id": "100000000000009",
        "display_phone_number": DISPLAY,
        "verified_name": "Sandbox Business",
        "throughput": 80,
    }


async def test_a_number_registered_at_run_time_sends_and_can_be_updated(sandbox: Client) -> None:
    body = {
        "phone_number_id": "100000000000042",
        "access_token": "fresh-token",
        "waba_id": "100000000000077",
        "display_phone_number": "+62 811 0000 042",
        "throughput": 1000,
    }
    created = await sandbox.post("/sandbox/numbers", json=body)
    assert created.status == 201
    registered = await created.json()
    assert "access_token" not in registered
    assert registered["throughput"] == 1000
    path = "/v23.0/100000000000042"
    node = await sandbox.get(path, headers={"Authorization": "Bearer fresh-token"})
    assert (await node.json())["throughput"] == {"level": "HIGH"}
    sent = await sandbox.post(
        f"{path}/messages", json=template(), headers={"Authorization": "Bearer fresh-token"}
    )
    assert sent.status == 200

    # A new token replaces the old one (a rotated channel token); the rest is kept.
    updated = await sandbox.post(
        "/sandbox/numbers", json={"phone_number_id": "100000000000042", "access_token": "rotated"}
    )
    assert updated.status == 200
    assert (await updated.json())["waba_id"] == "100000000000077"
    old = await sandbox.post(
        f"{path}/messages", json=template(), headers={"Authorization": "Bearer fresh-token"}
    )
    assert old.status == 401


@pytest.mark.parametrize(
    "body",
    [
        {"phone_number_id": "abc", "access_token": "t"},
        {"phone_number_id": "1", "access_token": ""},
        {"phone_number_id": "1", "access_token": "t", "throughput": 5000},
        {"phone_number_id": "1", "access_token": "t", "display_phone_number": "call me"},
        {"phone_number_id": "1"},
    ],
    ids=["id-not-digits", "empty-token", "throughput-too-high", "bad-display", "no-token"],
)
async def test_a_bad_number_is_refused_in_the_project_s_error_shape(
    sandbox: Client, body: dict[str, object]
) -> None:
    response = await sandbox.post("/sandbox/numbers", json=body)
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "invalid_body"
    assert error["details"]


async def test_the_ledger_filters_by_number_recipient_time_and_position(sandbox: Client) -> None:
    before = datetime.now(UTC)
    await sandbox.post(MESSAGES, json=template(), headers=AUTH)
    await sandbox.post(MESSAGES, json=template(to="+62 811 111"), headers=AUTH)
    await sandbox.post(MESSAGES, json={**template(), "to": None, "recipient": BSUID}, headers=AUTH)
    other = {"Authorization": f"Bearer {OTHER_TOKEN}"}
    await sandbox.post(f"/v23.0/{OTHER_NUMBER}/messages", json=template(), headers=other)

    everything = await ledger(sandbox)
    assert everything["total"] == 4
    assert everything["dropped"] == 0
    assert (await ledger(sandbox, phone_number_id=OTHER_NUMBER))["total"] == 1
    by_phone = await ledger(sandbox, to=f"+{CUSTOMER}")
    assert [item["phone_number_id"] for item in by_phone["items"]] == [NUMBER, OTHER_NUMBER]
    assert (await ledger(sandbox, to="62811111"))["total"] == 1
    assert [i["recipient"] for i in (await ledger(sandbox, to=BSUID))["items"]] == [BSUID]
    assert (await ledger(sandbox, since=before.isoformat()))["total"] == 4
    assert (await ledger(sandbox, since=str(before.timestamp() + 3600)))["total"] == 0
    page = await ledger(sandbox, after="1", limit="2")
    assert [item["seq"] for item in page["items"]] == [2, 3]
    assert page["total"] == 3

    for query in ("limit=0", "after=-1", f"since={quote('yesterday')}"):
        refused = await sandbox.get(f"/sandbox/sent?{query}")
        assert refused.status == 400
        assert (await refused.json())["error"]["code"] == "invalid_query"
