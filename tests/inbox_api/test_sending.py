"""Agents reply: the whole loop against the real broker, store and whatsapp-sandbox process.

A customer writes through the sandbox (signed webhook → webhook-ingest → RabbitMQ →
inbox-api); an agent replies through the REST API; the sender calls the sandbox's Graph
API; the sandbox's status webhooks come back the same way and move the message to ``read``.
The sandbox's ledger (``GET /sandbox/sent``) is the ground truth of what "Meta" received.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from bson import ObjectId

from inbox_api.app import create_app
from inbox_api.settings import InboxApiSettings
from inbox_common.broker.consumer import TIER_HEADER
from inbox_common.broker.topology import Names
from inbox_common.local.ports import free_port
from inbox_common.local.processes import ServiceProcess, wait_http
from inbox_common.store.client import Database, Document
from inbox_common.store.schema import CHANNELS, MESSAGES
from inbox_testkit.agent import Http, healthy, reaches, reply, writes_in
from inbox_testkit.plugin import ApiClient
from inbox_testkit.polling import wait_until
from inbox_testkit.sandbox import Sandbox, run_sandbox, sandbox_number
from inbox_testkit.store import store_message
from inbox_testkit.tenants import ACME_NUMBER, Tokens, bearer

pytestmark = pytest.mark.integration

CUSTOMER = "6281234567890"
TOKEN = f"EAAG-secret-{ACME_NUMBER}"  # the testkit channel's token


@pytest.fixture
async def cloud(ingest_url: str) -> AsyncIterator[Sandbox]:
    """The sandbox as a process, knowing acme's number, posting to the real ingest."""
    async with run_sandbox(
        ingest_url,
        [sandbox_number(ACME_NUMBER, TOKEN)],
        sandbox_status_delays_ms="20,60,100",
        sandbox_timeout_hold_seconds="20",
    ) as sandbox:
        yield sandbox


def wired(settings: InboxApiSettings, cloud: Sandbox, **overrides: Any) -> InboxApiSettings:
    return settings.model_copy(update={"whatsapp_api_base_url": cloud.url, **overrides})


@pytest.fixture
async def app(
    settings: InboxApiSettings, cloud: Sandbox, channel: Document, db: Database
) -> AsyncIterator[ApiClient]:
    """inbox-api (REST, webhook consumer and sender) calling the sandbox."""
    async with TestClient(TestServer(create_app(wired(settings, cloud)))) as client:
        await healthy(client)
        yield client


async def customer_writes(api: Http, cloud: Sandbox, tokens: Tokens, text: str) -> str:
    return await writes_in(api, cloud, tokens.acme_agent, ACME_NUMBER, CUSTOMER, text)


async def sends_to_customer(cloud: Sandbox) -> list[dict[str, Any]]:
    return await cloud.sent(phone_number_id=ACME_NUMBER, to=CUSTOMER)


async def test_reply_reaches_the_customer_and_goes_sent_delivered_read(
    app: ApiClient, cloud: Sandbox, tokens: Tokens
) -> None:
    conversation = await customer_writes(app, cloud, tokens, "Halo, is my order shipped?")
    status, message = await reply(
        app,
        tokens.acme_agent,
        conversation,
        {"type": "text", "text": {"body": "Yes, today!"}},
        "k1",
    )
    assert status == 202, message
    assert message["direction"] == "outbound"
    assert message["status"] == "pending"
    assert message["wamid"] == f"local:{message['id']}"

    final = await reaches(app, tokens.acme_agent, conversation, message["id"], status="read")
    sent = await sends_to_customer(cloud)
    assert len(sent) == 1
    request = sent[0]["request"]
    # Meta's request shape, with our id for the status webhooks to echo.
    assert request == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": CUSTOMER,
        "type": "text",
        "text": {"body": "Yes, today!", "preview_url": False},
        "biz_opaque_callback_data": f"inbox:{message['id']}",
    }
    assert final["wamid"] == sent[0]["wamid"]
    assert final["send_state"] == "accepted"
    assert [s["status"] for s in final["statuses"]] == ["sent", "delivered", "read"]

    listed = await app.get(f"/api/conversations/{conversation}", headers=bearer(tokens.acme_agent))
    assert (await listed.json())["last_message_preview"] == "Yes, today!"


async def test_the_same_idempotency_key_sends_once_and_another_body_conflicts(
    app: ApiClient, cloud: Sandbox, tokens: Tokens
) -> None:
    conversation = await customer_writes(app, cloud, tokens, "Hi")
    body = {"type": "text", "text": {"body": "Once only"}}
    # Two concurrent requests with one key, then a third one later.
    answers = await asyncio.gather(
        reply(app, tokens.acme_agent, conversation, body, "same-key"),
        reply(app, tokens.acme_agent, conversation, body, "same-key"),
    )
    assert [status for status, _ in answers] == [202, 202]
    ids = {message["id"] for _, message in answers}
    assert len(ids) == 1
    message_id = ids.pop()
    await reaches(app, tokens.acme_agent, conversation, message_id, status="read")
    status, again = await reply(app, tokens.acme_agent, conversation, body, "same-key")
    assert (status, again["id"]) == (202, message_id)

    status, conflict = await reply(
        app,
        tokens.acme_agent,
        conversation,
        {"type": "text", "text": {"body": "Other"}},
        "same-key",
    )
    assert status == 409
    assert conflict["error"]["code"] == "conflict"
    assert "Idempotency-Key" in conflict["error"]["message"]

    await asyncio.sleep(0.3)  # a second send would have reached the sandbox by now
    assert len(await sends_to_customer(cloud)) == 1


async def test_outside_the_24_hour_window_only_a_template_goes_out(
    app: ApiClient, cloud: Sandbox, tokens: Tokens, db: Database, channel: Document
) -> None:
    two_days_ago = datetime.now(UTC) - timedelta(days=2)
    conversation = await store_message(
        db,
        channel,
        CUSTOMER,
        {"wamid": "wamid.OLD", "timestamp": two_days_ago, "type": "text", "direction": "inbound",
         "content": {"body": "old"}},
        preview="old",
        inbound=True,
        status="received",
    )  # fmt: skip
    status, refused = await reply(
        app, tokens.acme_agent, str(conversation), {"type": "text", "text": {"body": "Late"}}
    )
    assert status == 422
    assert refused["error"]["code"] == "outside_service_window"
    assert "template" in refused["error"]["message"]
    closed = datetime.fromisoformat(refused["error"]["details"]["window_closed_at"])
    assert abs(closed - (two_days_ago + timedelta(hours=24))) < timedelta(seconds=1)

    template = {
        "type": "template",
        "template": {"name": "order_update", "language": {"code": "en"}},
    }
    status, accepted = await reply(app, tokens.acme_agent, str(conversation), template, "t1")
    assert status == 202, accepted
    await reaches(app, tokens.acme_agent, str(conversation), accepted["id"], send_state="accepted")
    sent = await sends_to_customer(cloud)
    assert [s["type"] for s in sent] == ["template"]


async def test_token_refused_disconnects_the_channel_and_holds_until_reconnected(
    app: ApiClient, cloud: Sandbox, tokens: Tokens, db: Database, channel: Document
) -> None:
    conversation = await customer_writes(app, cloud, tokens, "Hello?")
    await cloud.fail_next(190)
    status, message = await reply(
        app, tokens.acme_agent, conversation, {"type": "text", "text": {"body": "Held"}}, "h1"
    )
    assert status == 202
    held = await reaches(app, tokens.acme_agent, conversation, message["id"], send_state="held")
    assert held["status"] == "pending"
    assert "reconnect the channel" in held["held_reason"]
    stored = await db[CHANNELS].find_one({"_id": channel["_id"]})
    assert stored is not None
    assert stored["status"] == "disconnected"
    assert stored["disconnected_code"] == 190
    assert "reconnect the channel" in stored["disconnected_reason"]
    listed = await app.get("/api/channels", headers=bearer(tokens.acme_admin))
    shown = (await listed.json())["items"][0]
    assert shown["status"] == "disconnected"
    assert TOKEN not in await listed.text()
    assert await sends_to_customer(cloud) == []

    refused = await app.post(
        f"/api/channels/{channel['_id']}/reconnect",
        json={"access_token": "EAAG-not-the-numbers-token"},
        headers=bearer(tokens.acme_admin),
    )
    assert refused.status == 422, await refused.text()
    assert (await refused.json())["error"]["code"] == "token_refused"
    still = await db[CHANNELS].find_one({"_id": channel["_id"]})
    assert still is not None
    assert still["status"] == "disconnected"

    answer = await app.post(
        f"/api/channels/{channel['_id']}/reconnect",
        json={"access_token": TOKEN},
        headers=bearer(tokens.acme_admin),
    )
    assert answer.status == 200, await answer.text()
    reconnected = await answer.json()
    assert (reconnected["status"], reconnected["requeued_messages"]) == ("connected", 1)
    await reaches(app, tokens.acme_agent, conversation, message["id"], status="read")
    assert len(await sends_to_customer(cloud)) == 1


async def test_a_permanent_refusal_marks_the_message_failed_with_metas_error(
    app: ApiClient, cloud: Sandbox, tokens: Tokens
) -> None:
    conversation = await customer_writes(app, cloud, tokens, "Hi")
    await cloud.fail_next(131026)  # undeliverable: Meta says so in a failed status webhook
    _, message = await reply(
        app, tokens.acme_agent, conversation, {"type": "text", "text": {"body": "Lost"}}, "p1"
    )
    failed = await reaches(app, tokens.acme_agent, conversation, message["id"], status="failed")
    assert failed["error"]["code"] == 131026
    assert failed["error"]["title"]
    assert failed["statuses"][-1]["errors"][0]["code"] == 131026


async def test_a_rate_limited_send_waits_in_its_delay_tier(
    app: ApiClient, cloud: Sandbox, tokens: Tokens, db: Database, names: Names, amqp_channel: Any
) -> None:
    conversation = await customer_writes(app, cloud, tokens, "Hi")
    await cloud.fail_next(130429)
    _, message = await reply(
        app, tokens.acme_agent, conversation, {"type": "text", "text": {"body": "Later"}}, "r1"
    )
    waiting = await reaches(
        app, tokens.acme_agent, conversation, message["id"], send_state="retrying"
    )
    assert waiting["status"] == "pending"
    # The agent sees why and until when: the attempt made, Meta's error, the next attempt.
    assert (waiting["attempts"], waiting["last_error"]["code"]) == (1, 130429)
    assert waiting["retry_due_at"] is not None
    stored = await db[MESSAGES].find_one({"_id": ObjectId(message["id"])})
    assert stored is not None
    assert (stored["next_tier"], stored["last_error"]["code"]) == ("30s", 130429)

    # Taken from the tier itself (a quorum queue's declare-ok count reads 0 when its leader is
    # slow to answer, so counting would flake under load): this message, with its tier.
    held: list[Any] = []

    async def in_tier() -> bool:
        queue = await amqp_channel.get_queue(names.retry_tier_queue("30s"))
        got = await queue.get(no_ack=True, fail=False, timeout=10)
        if got is not None:
            held.append(got)
        return bool(held)

    await wait_until(in_tier, "the send in the 30s delay tier", timeout=20)
    assert held[0].headers[TIER_HEADER] == "30s"
    assert str(message["id"]) in held[0].body.decode()
    assert await sends_to_customer(cloud) == []


async def test_a_sender_killed_after_meta_took_the_message_sends_nothing_twice(
    settings: InboxApiSettings, ingest_url: str, channel: Document, db: Database, tokens: Tokens
) -> None:
    """Meta takes the message but its answer never comes back, and the sender is killed
    (SIGKILL) before its ack. RabbitMQ delivers the job again to another sender, which finds
    the message ``sending`` and waits for proof instead of sending; the status webhooks carry
    our id (``biz_opaque_callback_data``) and prove that Meta has it (they come late here,
    after the kill)."""
    async with run_sandbox(
        ingest_url,
        [sandbox_number(ACME_NUMBER, TOKEN)],
        sandbox_status_delays_ms="3000,3100,3200",
        sandbox_timeout_hold_seconds="60",
    ) as cloud:
        await killed_mid_call(settings, cloud, db, tokens)


async def killed_mid_call(
    settings: InboxApiSettings, cloud: Sandbox, db: Database, tokens: Tokens
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "RABBITMQ_URL": settings.rabbitmq_url,
        "AMQP_NAMESPACE": settings.amqp_namespace,
        "MONGODB_URL": settings.mongodb_url,
        "MONGODB_DB": settings.mongodb_db,
        "INBOX_API_PORT": str(port),
        "HTTP_HOST": "127.0.0.1",
        "WHATSAPP_API_BASE_URL": cloud.url,
        "WHATSAPP_API_TIMEOUT_SECONDS": "30",
    }
    first = ServiceProcess(
        "inbox-api", [sys.executable, "-m", "inbox_api"], env=env, sink=lambda _n, _l: None
    )
    await first.start()
    try:
        await wait_http(f"http://127.0.0.1:{port}/api/health", timeout=30, process=first)
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as http:
            conversation = await customer_writes(http, cloud, tokens, "Hi")
            await cloud.fail_next("lost_answer")
            _, message = await reply(
                http,
                tokens.acme_agent,
                conversation,
                {"type": "text", "text": {"body": "Once"}},
                "x1",
            )

            async def meta_has_it() -> bool:
                return len(await sends_to_customer(cloud)) == 1

            await wait_until(meta_has_it, "the sandbox to take the send")
            first.kill()  # mid-call: no answer recorded, no ack
            await first.wait()
    finally:
        await first.stop(timeout=5)

    async with TestClient(TestServer(create_app(wired(settings, cloud)))) as second:
        final = await reaches(second, tokens.acme_agent, conversation, message["id"], status="read")
    sent = await sends_to_customer(cloud)
    assert len(sent) == 1, sent
    assert final["wamid"] == sent[0]["wamid"]
    stored = await db[MESSAGES].find_one({"_id": ObjectId(message["id"])})
    assert stored is not None
    assert stored["attempts"] == 1
    assert not stored.get("possible_duplicate")
