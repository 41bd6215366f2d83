"""Meta's sending rules: the 24-hour customer service window, throughput and the pair rate."""

from __future__ import annotations

import asyncio

import pytest

from inbox_testkit.polling import wait_until
from tests.whatsapp_sandbox.conftest import (
    AUTH,
    BSUID,
    CUSTOMER,
    MESSAGES,
    NUMBER,
    Client,
    MakeSandbox,
    Published,
    Receiver,
    ledger,
    settled,
    template,
    text,
)


async def _inbound(client: Client, **fields: object) -> None:
    body = {
        "phone_number_id": NUMBER,
        "from": CUSTOMER,
        "type": "text",
        "text": {"body": "Halo"},
        **fields,
    }
    response = await client.post("/sandbox/inbound", json=body)
    assert response.status == 200, await response.text()


async def _wamid(client: Client, body: dict[str, object]) -> str:
    response = await client.post(MESSAGES, json=body, headers=AUTH)
    assert response.status == 200, await response.text()
    wamid: str = (await response.json())["messages"][0]["id"]
    return wamid


@pytest.mark.integration
async def test_a_text_outside_the_window_is_accepted_then_fails_with_131047(
    live: Client, published: Published
) -> None:
    wamid = await _wamid(live, text(biz_opaque_callback_data="out-1"))
    # Meta accepted it: it is in the ledger, and the failure comes as a status webhook.
    assert [item["wamid"] for item in (await ledger(live))["items"]] == [wamid]
    await published.wait_for(1, "the failed status of the text sent outside the window")
    [envelope] = published.envelopes()
    value = envelope.entry[0].changes[0].value
    assert value.contacts == []  # Meta leaves contacts out of failed statuses
    [status] = published.statuses(wamid)
    assert status.status == "failed"
    assert status.recipient_id == CUSTOMER
    assert status.recipient_user_id is None  # sent to a phone number
    assert status.biz_opaque_callback_data == "out-1"
    [error] = status.errors
    assert error.code == 131047
    assert error.title == error.message == "Re-engagement message"
    assert error.error_data is not None
    assert "more than 24 hours have passed" in str(error.error_data.details)
    assert error.href


@pytest.mark.integration
async def test_an_inbound_message_opens_the_window_for_texts(
    live: Client, published: Published
) -> None:
    await _inbound(live)
    wamid = await _wamid(live, text())
    await published.wait_for(4, "the inbound message and the text's three statuses")
    assert [s.status for s in published.statuses(wamid)] == ["sent", "delivered", "read"]
    assert all(not s.errors for s in published.statuses(wamid))


@pytest.mark.integration
async def test_a_template_outside_the_window_is_delivered(
    live: Client, published: Published
) -> None:
    wamid = await _wamid(live, template())
    await published.wait_for(3, "the template's three statuses")
    statuses = published.statuses(wamid)
    assert [s.status for s in statuses] == ["sent", "delivered", "read"]
    assert statuses[0].pricing == {
        "billable": True,
        "pricing_model": "PMP",
        "type": "regular",
        "category": "marketing",
    }


async def test_the_window_closes_when_its_time_is_up(
    make_sandbox: MakeSandbox, receiver: Receiver
) -> None:
    sandbox = await make_sandbox(receiver.url, sandbox_window_seconds=0.3)
    await _inbound(sandbox)
    inside = await _wamid(sandbox, text())
    # The window is a duration: let it run out.
    await asyncio.sleep(0.35)
    outside = await _wamid(sandbox, text())
    await settled(sandbox)
    by_wamid = {s.id: s for s in receiver.statuses() if s.status in ("sent", "failed")}
    assert by_wamid[inside].status == "sent"
    assert by_wamid[outside].status == "failed"
    assert by_wamid[outside].errors[0].code == 131047


async def test_throughput_above_the_number_s_rate_is_refused_with_130429(
    make_sandbox: MakeSandbox, receiver: Receiver
) -> None:
    sandbox = await make_sandbox(receiver.url, sandbox_throughput=3)
    for n in range(3):
        await _wamid(sandbox, template(to=f"1555000000{n}"))
    refused = await sandbox.post(MESSAGES, json=template(to="15550000009"), headers=AUTH)
    assert refused.status == 400
    error = (await refused.json())["error"]
    assert error["code"] == 130429
    assert error["message"] == "(#130429) Rate limit hit"
    assert error["error_data"]["details"] == "Cloud API message throughput has been reached."
    assert (await ledger(sandbox))["total"] == 3
    metrics = await (await sandbox.get("/metrics")).text()
    assert 'sandbox_sends_total{code="130429",outcome="refused"} 1.0' in metrics

    async def accepted_again() -> bool:
        response = await sandbox.post(MESSAGES, json=template(to="15550000009"), headers=AUTH)
        return response.status == 200

    await wait_until(accepted_again, "the throughput bucket to refill")


async def test_the_pair_rate_refuses_a_burst_to_one_user_with_131056(
    make_sandbox: MakeSandbox, receiver: Receiver
) -> None:
    sandbox = await make_sandbox(
        receiver.url, sandbox_pair_burst=2, sandbox_pair_interval_seconds=60
    )
    # The customer writes with both ids, so the phone number and the BSUID are one user.
    await _inbound(sandbox, user_id=BSUID)
    await _wamid(sandbox, text())
    await _wamid(sandbox, text())
    by_phone = await sandbox.post(MESSAGES, json=text(), headers=AUTH)
    by_bsuid = await sandbox.post(
        MESSAGES, json={**template(), "to": None, "recipient": BSUID}, headers=AUTH
    )
    for refused in (by_phone, by_bsuid):
        assert refused.status == 400
        error = (await refused.json())["error"]
        assert error["code"] == 131056
        assert "pair rate limit hit" in error["message"]
    # Another user of the same number is not affected.
    await _wamid(sandbox, template(to="15559876543"))
    assert (await ledger(sandbox))["total"] == 3
