"""Status webhooks after an accepted send: Meta's format through the real ingest, delivery at
least once and out of order when asked, retries, and the health of the webhook target."""

from __future__ import annotations

import pytest

from inbox_common.local.ports import free_port
from inbox_sandbox.payloads import user_contact
from tests.whatsapp_sandbox.conftest import (
    AUTH,
    BSUID,
    CUSTOMER,
    MESSAGES,
    NUMBER,
    OTHER_NUMBER,
    WABA,
    Client,
    MakeSandbox,
    Published,
    Receiver,
    settled,
    template,
    text,
)


async def _open_window(client: Client, **fields: object) -> str:
    body = {"phone_number_id": NUMBER, "type": "text", "text": {"body": "Halo"}, **fields}
    response = await client.post("/sandbox/inbound", json=body)
    assert response.status == 200, await response.text()
    wamid: str = (await response.json())["wamid"]
    return wamid


async def _send(client: Client, body: dict[str, object], version: str = "v23.0") -> str:
    response = await client.post(f"/{version}/{NUMBER}/messages", json=body, headers=AUTH)
    assert response.status == 200, await response.text()
    wamid: str = (await response.json())["messages"][0]["id"]
    return wamid


@pytest.mark.integration
async def test_statuses_reach_the_queue_signed_and_meta_shaped(
    live: Client, published: Published
) -> None:
    await _open_window(live, **{"from": CUSTOMER, "name": "Budi", "user_id": BSUID})
    wamid = await _send(live, text(biz_opaque_callback_data="msg-7"))
    # The ingest publishes only bodies whose signature it verified.
    await published.wait_for(4, "the inbound message and sent, delivered and read")
    envelopes = published.envelopes()
    statuses = published.statuses(wamid)
    assert [s.status for s in statuses] == ["sent", "delivered", "read"]
    assert [s.timestamp for s in statuses] == sorted(s.timestamp for s in statuses)
    for status in statuses:
        assert status.recipient_id == CUSTOMER
        assert status.recipient_user_id == BSUID
        assert status.biz_opaque_callback_data == "msg-7"
    sent, delivered, read = statuses
    assert sent.pricing == {
        "billable": False,
        "pricing_model": "PMP",
        "type": "free_customer_service",
        "category": "service",
    }
    assert delivered.pricing == sent.pricing
    assert read.pricing is None
    # v23.0: a conversation object, with its expiry only on "sent".
    assert sent.conversation is not None
    assert sent.conversation["origin"] == {"type": "service"}
    assert "expiration_timestamp" in sent.conversation
    assert delivered.conversation is not None
    assert "expiration_timestamp" not in delivered.conversation
    status_envelopes = [e for e in envelopes if any(c.value.statuses for c in e.entry[0].changes)]
    for envelope in status_envelopes:
        assert envelope.object == "whatsapp_business_account"
        [entry] = envelope.entry
        assert entry.id == WABA
        [change] = entry.changes
        assert change.field == "messages"
        assert change.value.messaging_product == "whatsapp"
        assert change.value.metadata is not None
        assert change.value.metadata.phone_number_id == NUMBER
        assert change.value.metadata.display_phone_number == "15550100001"
        [contact] = change.value.contacts
        assert contact.wa_id == CUSTOMER
        assert contact.user_id == BSUID
        assert contact.profile is not None
        assert contact.profile.name == "Budi"


@pytest.mark.integration
async def test_a_send_to_a_bsuid_is_reported_with_recipient_user_id_only(
    live: Client, published: Published
) -> None:
    await _open_window(live, user_id=BSUID, username="@pablo", name="Pablo")
    body = {"messaging_product": "whatsapp", "recipient": BSUID, "type": "text"}
    wamid = await _send(live, {**body, "text": {"body": "Hi Pablo"}}, version="v24.0")
    await published.wait_for(4, "the inbound message and three statuses")
    statuses = published.statuses(wamid)
    assert [s.status for s in statuses] == ["sent", "delivered", "read"]
    for status in statuses:
        assert status.recipient_id is None
        assert status.recipient_user_id == BSUID
        # v24.0 and later: no conversation object.
        assert status.conversation is None
    status_bodies = [b for b in published.bodies if wamid.encode() in b]
    usernames = [b"@pablo" in body for body in status_bodies]
    # The username comes with delivered and read, never with sent.
    assert sorted(usernames) == [False, True, True]


async def test_read_receipts_off_means_no_read_status(
    make_sandbox: MakeSandbox, receiver: Receiver
) -> None:
    sandbox = await make_sandbox(receiver.url, sandbox_read=False)
    wamid = await _send(sandbox, template())
    await settled(sandbox)
    assert [s.status for s in receiver.statuses() if s.id == wamid] == ["sent", "delivered"]
    assert all(receiver.signed)


@pytest.mark.integration
async def test_duplicates_deliver_every_status_twice_byte_for_byte(
    ingest_url: str, make_sandbox: MakeSandbox, published: Published
) -> None:
    sandbox = await make_sandbox(ingest_url, sandbox_webhook_duplicates=1.0)
    wamid = await _send(sandbox, template())
    bodies = await published.wait_for(6, "three statuses, each delivered twice")
    assert len(bodies) == 6
    assert sorted(s.status for s in published.statuses(wamid)) == [
        "delivered", "delivered", "read", "read", "sent", "sent",
    ]  # fmt: skip
    assert all(bodies.count(body) == 2 for body in bodies)


async def test_shuffle_lets_statuses_arrive_out_of_order(
    make_sandbox: MakeSandbox, receiver: Receiver
) -> None:
    sandbox = await make_sandbox(
        receiver.url, sandbox_webhook_shuffle=True, sandbox_status_delays_ms="0,60,120"
    )
    wamids = [await _send(sandbox, template(to=f"1555000{n:04d}")) for n in range(12)]
    await settled(sandbox)
    statuses = receiver.statuses()
    arrivals = [[s.status for s in statuses if s.id == wamid] for wamid in wamids]
    assert all(sorted(order) == ["delivered", "read", "sent"] for order in arrivals)
    # Twelve messages in order by chance: (1/6)^12.
    assert any(order != ["sent", "delivered", "read"] for order in arrivals)
    for wamid in wamids:
        stamps = {s.status: int(s.timestamp.timestamp()) for s in statuses if s.id == wamid}
        assert stamps["sent"] <= stamps["delivered"] <= stamps["read"]


async def test_a_refused_webhook_is_retried_until_the_ingest_takes_it(
    make_sandbox: MakeSandbox, receiver: Receiver
) -> None:
    sandbox = await make_sandbox(receiver.url, sandbox_read=False, sandbox_status_delays_ms="0,0,0")
    receiver.answers.extend([503, 500])
    wamid = await _send(sandbox, template())
    await settled(sandbox)
    # Two refusals, then both statuses: every attempt the same signed body.
    assert len(receiver.bodies) == 4
    assert all(receiver.signed)
    assert sorted(s.status for s in receiver.statuses() if s.id == wamid) == [
        "delivered", "delivered", "sent", "sent",
    ]  # fmt: skip
    metrics = await (await sandbox.get("/metrics")).text()
    assert 'sandbox_webhooks_total{kind="status",outcome="retried"} 2.0' in metrics
    assert 'sandbox_webhooks_total{kind="status",outcome="delivered"} 2.0' in metrics


async def test_an_unreachable_ingest_degrades_health_and_is_given_up_in_time(
    make_sandbox: MakeSandbox,
) -> None:
    closed = f"http://user:pass@127.0.0.1:{free_port()}/webhooks/whatsapp"
    sandbox = await make_sandbox(closed, sandbox_webhook_retry_seconds=0.5, sandbox_read=False)
    health = await (await sandbox.get("/api/health")).json()
    assert health["status"] == "ok"
    assert health["checks"]["webhook_target"]["status"] == "ok"

    await _send(sandbox, template())
    await settled(sandbox)
    response = await sandbox.get("/api/health")
    assert response.status == 200  # degraded, not down: sends are still answered
    report = await response.json()
    assert report["status"] == "degraded"
    check = report["checks"]["webhook_target"]
    assert check["status"] == "down"
    assert "SANDBOX_WEBHOOK_URL" in check["detail"]
    assert "pass" not in check["detail"]
    assert (await sandbox.get("/livez")).status == 200
    metrics = await (await sandbox.get("/metrics")).text()
    assert 'sandbox_webhooks_total{kind="status",outcome="failed"} 2.0' in metrics


async def test_metrics_labels_never_carry_a_wamid_or_a_phone_number(
    sandbox: Client, receiver: Receiver
) -> None:
    await _send(sandbox, template())
    await sandbox.post(MESSAGES, json=text(to="bad"), headers=AUTH)
    await sandbox.post(f"/v23.0/{OTHER_NUMBER}/messages", json=template(), headers=AUTH)
    await settled(sandbox)
    metrics = await (await sandbox.get("/metrics")).text()
    assert 'sandbox_sends_total{code="",outcome="accepted"} 1.0' in metrics
    assert 'sandbox_sends_total{code="131009",outcome="refused"} 1.0' in metrics
    assert 'sandbox_sends_total{code="190",outcome="refused"} 1.0' in metrics
    assert "wamid" not in metrics
    for value in (NUMBER, OTHER_NUMBER, CUSTOMER):
        assert value not in metrics


def test_the_contact_builder_leaves_out_what_meta_leaves_out() -> None:
    assert user_contact(BSUID) == {"user_id": BSUID}
    assert user_contact(BSUID, wa_id=CUSTOMER, name="Budi", username="@budi") == {
        "profile": {"name": "Budi", "username": "@budi"},
        "wa_id": CUSTOMER,
        "user_id": BSUID,
    }
