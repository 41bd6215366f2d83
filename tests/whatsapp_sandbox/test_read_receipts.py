"""GET /sandbox/read-receipts: the mark-as-read requests "Meta" answered, and only those."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from inbox_sandbox.receipts import ReadReceipts
from tests.whatsapp_sandbox.conftest import (
    AUTH,
    MESSAGES,
    NUMBER,
    OTHER_NUMBER,
    OTHER_TOKEN,
    Client,
    ledger,
)

WAMID = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="


def read(message_id: Any = WAMID, **extra: Any) -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "status": "read", "message_id": message_id, **extra}


async def receipts(client: Client, **query: str) -> dict[str, Any]:
    response = await client.get("/sandbox/read-receipts", params=query)
    assert response.status == 200
    result: dict[str, Any] = await response.json()
    return result


async def test_an_answered_read_receipt_is_recorded_and_is_not_a_send(sandbox: Client) -> None:
    before = datetime.now(UTC)
    response = await sandbox.post(
        MESSAGES, json=read(typing_indicator={"type": "text"}), headers=AUTH
    )
    assert await response.json() == {"success": True}
    other = await sandbox.post(
        f"/v23.0/{OTHER_NUMBER}/messages",
        json=read("wamid.OTHER"),
        headers={"Authorization": f"Bearer {OTHER_TOKEN}"},
    )
    assert other.status == 200

    listed = await receipts(sandbox)
    assert (listed["total"], listed["dropped"]) == (2, 0)
    first, second = listed["items"]
    assert set(first) == {"phone_number_id", "message_id", "at"}
    assert (first["phone_number_id"], first["message_id"]) == (NUMBER, WAMID)
    assert before <= datetime.fromisoformat(first["at"]) <= datetime.now(UTC)
    assert (second["phone_number_id"], second["message_id"]) == (OTHER_NUMBER, "wamid.OTHER")
    mine = await receipts(sandbox, phone_number_id=NUMBER)
    assert [r["message_id"] for r in mine["items"]] == [WAMID]
    assert (await receipts(sandbox, limit="1"))["items"] == [first]
    assert (await ledger(sandbox))["total"] == 0


async def test_a_refused_read_receipt_leaves_no_entry(sandbox: Client) -> None:
    wrong_token = await sandbox.post(
        MESSAGES, json=read(), headers={"Authorization": f"Bearer {OTHER_TOKEN}"}
    )
    assert wrong_token.status == 401
    no_message = await sandbox.post(MESSAGES, json=read(None), headers=AUTH)
    assert no_message.status == 400
    unknown_number = await sandbox.post("/v23.0/987654321/messages", json=read(), headers=AUTH)
    assert unknown_number.status == 400

    assert (await receipts(sandbox))["total"] == 0
    bad = await sandbox.get("/sandbox/read-receipts", params={"limit": "0"})
    assert bad.status == 400
    assert (await bad.json())["error"]["code"] == "invalid_query"


def test_the_receipts_are_bounded_and_say_how_many_were_dropped() -> None:
    kept = ReadReceipts(limit=2)
    now = datetime.now(UTC)
    for n in range(3):
        kept.append(phone_number_id=NUMBER, message_id=f"wamid.{n}", at=now)

    items, total = kept.query(limit=10)
    assert [r.message_id for r in items] == ["wamid.1", "wamid.2"]
    assert (total, kept.dropped, len(kept)) == (2, 1, 2)
