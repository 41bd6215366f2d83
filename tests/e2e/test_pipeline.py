"""The whole inbound path as processes: signed POST → ingest → RabbitMQ → inbox-api → REST."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest

from inbox_common.local.ports import free_port
from inbox_common.local.processes import ServiceProcess, wait_http
from inbox_common.store.client import create_client
from inbox_common.store.migrations import apply_migrations
from inbox_common.tokens import Role, create_token
from inbox_common.whatsapp.signature import SIGNATURE_HEADER, sign
from inbox_sandbox import payloads
from inbox_testkit import backends

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SECRET = "e2e-secret"
PHONE_NUMBER_ID = "5550001"


@dataclass
class Stack:
    ingest: str
    api: str
    token: str
    superadmin: str
    logs: list[str]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
async def stack(
    amqp_url: str, mongo_url: str, mongo_db_name: str, amqp_namespace: backends.AmqpNamespace
) -> AsyncIterator[Stack]:
    amqp_namespace.track_topology()
    client = create_client(mongo_url, app_name="e2e")
    db = client[mongo_db_name]
    await apply_migrations(db)
    token = await create_token(db, role=Role.ADMIN, tenant="acme")
    superadmin = await create_token(db, role=Role.SUPERADMIN, tenant="ops")
    await client.close()
    ingest_port, api_port = free_port(), free_port()
    env = {
        **os.environ,
        "RABBITMQ_URL": amqp_url,
        "MONGODB_URL": mongo_url,
        "MONGODB_DB": mongo_db_name,
        "AMQP_NAMESPACE": amqp_namespace.name,
        "WHATSAPP_WEBHOOK_SECRET": SECRET,
        "WHATSAPP_WEBHOOK_VERIFY_TOKEN": "e2e-verify",
        "WEBHOOK_INGEST_PORT": str(ingest_port),
        "INBOX_API_PORT": str(api_port),
        "HTTP_HOST": "127.0.0.1",
        "LOG_FORMAT": "json",
    }
    logs: list[str] = []
    children = [
        ServiceProcess(
            name,
            [sys.executable, "-m", module],
            env=env,
            sink=lambda n, line: logs.append(f"{n}: {line}"),
        )
        for name, module in (("webhook-ingest", "inbox_ingest"), ("inbox-api", "inbox_api"))
    ]
    try:
        for child, port in zip(children, (ingest_port, api_port), strict=True):
            await child.start()
            await wait_http(f"http://127.0.0.1:{port}/api/health", timeout=30, process=child)
        yield Stack(
            f"http://127.0.0.1:{ingest_port}",
            f"http://127.0.0.1:{api_port}",
            token,
            superadmin,
            logs,
        )
    finally:
        for child in children:
            assert await child.stop() == 0, "a service did not shut down cleanly"


async def _post(session: aiohttp.ClientSession, stack: Stack, payload: dict[str, Any]) -> int:
    body = orjson.dumps(payload)
    headers = {SIGNATURE_HEADER: sign(SECRET.encode(), body), "Content-Type": "application/json"}
    async with session.post(f"{stack.ingest}/webhooks/whatsapp", data=body, headers=headers) as r:
        return r.status


async def _poll(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], ready: Any
) -> Any:
    for _ in range(150):
        async with session.get(url, headers=headers) as response:
            data = await response.json()
        if ready(data):
            return data
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never got ready; last answer {data}")


async def test_signed_webhooks_become_conversations(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{stack.api}/api/channels",
            headers=stack.auth,
            json={
                "name": "Support",
                "phone_number_id": PHONE_NUMBER_ID,
                "waba_id": "777",
                "display_phone_number": "+1 555 0001",
                "access_token": "EAAG-secret-token",
            },
        ) as created:
            assert created.status == 201
            assert "EAAG-secret-token" not in await created.text()

        first = payloads.new_wamid()
        statuses = [200]
        statuses.append(
            await _post(
                session,
                stack,
                payloads.text_webhook(PHONE_NUMBER_ID, "4917", "Ann", "hi", wamid=first),
            )
        )
        # The same body again (Meta retries) and a reply, a reaction and a status.
        statuses.append(
            await _post(
                session,
                stack,
                payloads.text_webhook(PHONE_NUMBER_ID, "4917", "Ann", "hi", wamid=first),
            )
        )
        reply = payloads.webhook(
            PHONE_NUMBER_ID,
            contacts=[payloads.contact("4917", "Ann")],
            messages=[
                payloads.text_message("4917", payloads.new_wamid(), "second", reply_to=first),
                payloads.reaction_message("4917", payloads.new_wamid(), first, "👍"),
            ],
        )
        statuses.append(await _post(session, stack, reply))
        statuses.append(
            await _post(
                session, stack, payloads.text_webhook(PHONE_NUMBER_ID, "4918", "Bob", "hello")
            )
        )
        assert statuses == [200] * 5

        page = await _poll(
            session,
            f"{stack.api}/api/conversations",
            stack.auth,
            lambda d: (
                sorted((c["contact"]["wa_id"], c["unread_count"]) for c in d["items"])
                == [("4917", 2), ("4918", 1)]
            ),
        )
        ann = next(c for c in page["items"] if c["contact"]["wa_id"] == "4917")
        assert ann["contact"]["name"] == "Ann"
        messages = await _poll(
            session,
            f"{stack.api}/api/conversations/{ann['id']}/messages",
            stack.auth,
            lambda d: len(d["items"]) == 2 and d["items"][0]["reactions"],
        )
        hi, second = messages["items"]
        assert hi["wamid"] == first
        assert hi["content"] == {"body": "hi"}
        assert hi["reactions"][0]["emoji"] == "👍"
        assert second["reply_to"] == first


async def test_unknown_number_is_kept_as_failed_not_dropped(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        lost = payloads.text_webhook("999999", "4917", "Ann", "lost?")
        assert await _post(session, stack, lost) == 200  # authentic: accepted and kept
        everyone = {"Authorization": f"Bearer {stack.superadmin}"}
        logs = await _poll(
            session,
            f"{stack.api}/api/admin/webhook-logs?status=failed",
            everyone,
            lambda d: len(d["items"]) == 1,
        )
        event = logs["items"][0]
        assert event["error"]["code"] == "unknown_channel"
        assert "999999" in event["error"]["message"]
        async with session.get(
            f"{stack.api}/api/admin/webhook-logs/{event['id']}", headers=everyone
        ) as detail:
            assert orjson.loads((await detail.json())["body"]) == lost
        # The admin of tenant acme owns no channel with that number: not theirs to see.
        async with session.get(
            f"{stack.api}/api/admin/webhook-logs?status=failed", headers=stack.auth
        ) as scoped:
            assert (await scoped.json())["items"] == []

        # Meta will not resend it (it got a 200): creating the channel replays it.
        async with session.post(
            f"{stack.api}/api/channels",
            headers=stack.auth,
            json={
                "name": "Late",
                "phone_number_id": "999999",
                "waba_id": "778",
                "display_phone_number": "+1 555 9999",
                "access_token": "EAAG-late",
            },
        ) as created:
            assert created.status == 201
            assert (await created.json())["replayed_webhooks"] == 1
        page = await _poll(
            session,
            f"{stack.api}/api/conversations",
            stack.auth,
            lambda d: len(d["items"]) == 1,
        )
        assert page["items"][0]["last_message_preview"] == "lost?"
        replayed = await _poll(
            session,
            f"{stack.api}/api/admin/webhook-logs/{event['id']}",
            everyone,
            lambda d: d["status"] == "processed",
        )
        assert replayed["attempts"] == 2
