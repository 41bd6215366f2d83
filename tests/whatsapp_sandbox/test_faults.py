"""Fault injection: the next N sends fail the way Meta fails them."""

from __future__ import annotations

import aiohttp
import pytest

from tests.whatsapp_sandbox.conftest import (
    AUTH,
    MESSAGES,
    NUMBER,
    OTHER_NUMBER,
    OTHER_TOKEN,
    Client,
    MakeSandbox,
    Published,
    Receiver,
    ledger,
    template,
)


async def _fault(client: Client, code: int | str, count: int = 1, **fields: object) -> None:
    response = await client.post("/sandbox/faults", json={"code": code, "count": count, **fields})
    assert response.status == 201, await response.text()


@pytest.mark.parametrize(
    ("code", "status", "message"),
    [
        (130429, 400, "(#130429) Rate limit hit"),
        (131056, 400, "(#131056) (Business Account, Consumer Account) pair rate limit hit"),
        (368, 403, "(#368) Temporarily blocked for policies violations"),
        (4, 400, "(#4) Application request limit reached"),
        (80007, 400, "(#80007) Rate limit issues"),
        (131000, 500, "(#131000) Something went wrong"),
    ],
)
async def test_a_synchronous_fault_refuses_the_next_send_only(
    sandbox: Client, code: int, status: int, message: str
) -> None:
    await _fault(sandbox, code)
    refused = await sandbox.post(MESSAGES, json=template(), headers=AUTH)
    assert refused.status == status
    error = (await refused.json())["error"]
    assert error["code"] == code
    assert error["message"] == message
    assert error["type"] == "OAuthException"
    assert error["error_data"]["messaging_product"] == "whatsapp"
    assert error["error_data"]["details"]
    assert error["fbtrace_id"]
    accepted = await sandbox.post(MESSAGES, json=template(), headers=AUTH)
    assert accepted.status == 200
    assert (await ledger(sandbox))["total"] == 1


async def test_the_190_fault_is_an_expired_token(sandbox: Client) -> None:
    await _fault(sandbox, 190)
    refused = await sandbox.post(MESSAGES, json=template(), headers=AUTH)
    assert refused.status == 401
    error = (await refused.json())["error"]
    assert error["code"] == 190
    assert error["error_subcode"] == 463
    assert error["message"].startswith("Error validating access token: Session has expired on ")


@pytest.mark.parametrize(("fault", "status", "code"), [("http_500", 500, 1), ("http_503", 503, 2)])
async def test_an_http_fault_answers_graph_s_transient_error(
    sandbox: Client, fault: str, status: int, code: int
) -> None:
    await _fault(sandbox, fault)
    refused = await sandbox.post(MESSAGES, json=template(), headers=AUTH)
    assert refused.status == status
    error = (await refused.json())["error"]
    assert error["code"] == code
    assert error["is_transient"] is True
    assert (await ledger(sandbox))["total"] == 0


async def test_a_timeout_fault_holds_the_request_and_sends_nothing(
    make_sandbox: MakeSandbox, receiver: Receiver
) -> None:
    sandbox = await make_sandbox(receiver.url, sandbox_timeout_hold_seconds=0.5)
    await _fault(sandbox, "timeout")
    with pytest.raises(TimeoutError):
        await sandbox.post(
            MESSAGES, json=template(), headers=AUTH, timeout=aiohttp.ClientTimeout(total=0.15)
        )
    assert (await ledger(sandbox))["total"] == 0
    assert (await sandbox.post(MESSAGES, json=template(), headers=AUTH)).status == 200
    assert (await ledger(sandbox))["total"] == 1


@pytest.mark.integration
@pytest.mark.parametrize("code", [131026, 131047, 131048])
async def test_an_asynchronous_fault_is_accepted_then_fails_by_webhook(
    live: Client, published: Published, code: int
) -> None:
    await _fault(live, code)
    response = await live.post(
        MESSAGES, json=template(biz_opaque_callback_data="b-1"), headers=AUTH
    )
    assert response.status == 200
    wamid = (await response.json())["messages"][0]["id"]
    # Meta accepted it, so it was sent as far as the ledger knows.
    assert [item["wamid"] for item in (await ledger(live))["items"]] == [wamid]
    await published.wait_for(1, f"the failed status carrying {code}")
    [status] = published.statuses(wamid)
    assert status.status == "failed"
    assert status.biz_opaque_callback_data == "b-1"
    [error] = status.errors
    assert error.code == code
    assert error.title == error.message
    assert error.error_data is not None
    assert error.error_data.details
    assert error.href


async def test_a_fault_for_one_number_spares_the_others_and_counts_down(sandbox: Client) -> None:
    await _fault(sandbox, 131000, count=2, phone_number_id=OTHER_NUMBER)
    pending = await (await sandbox.get("/sandbox/faults")).json()
    assert pending == {
        "faults": [{"phone_number_id": OTHER_NUMBER, "code": 131000, "remaining": 2}]
    }
    assert (await sandbox.post(MESSAGES, json=template(), headers=AUTH)).status == 200
    other = f"/v23.0/{OTHER_NUMBER}/messages"
    other_auth = {"Authorization": f"Bearer {OTHER_TOKEN}"}
    statuses = [
        (await sandbox.post(other, json=template(), headers=other_auth)).status for _ in range(3)
    ]
    assert statuses == [500, 500, 200]
    assert (await (await sandbox.get("/sandbox/faults")).json()) == {"faults": []}


async def test_pending_faults_can_be_cleared(sandbox: Client) -> None:
    await _fault(sandbox, 130429, count=5)
    await _fault(sandbox, "http_503", phone_number_id=NUMBER)
    cleared = await sandbox.delete("/sandbox/faults")
    assert await cleared.json() == {"cleared": 2}
    assert (await sandbox.post(MESSAGES, json=template(), headers=AUTH)).status == 200


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"code": 999}, 400, "invalid_body"),
        ({"code": "http_418"}, 400, "invalid_body"),
        ({"code": 130429, "count": 0}, 400, "invalid_body"),
        ({"code": 130429, "surprise": True}, 400, "invalid_body"),
        ({"code": 130429, "phone_number_id": "42"}, 404, "unknown_number"),
    ],
)
async def test_a_bad_fault_request_gets_the_project_s_error_shape(
    sandbox: Client, body: dict[str, object], status: int, code: str
) -> None:
    response = await sandbox.post("/sandbox/faults", json=body)
    assert response.status == status
    error = (await response.json())["error"]
    assert error["code"] == code
    assert error["message"]
