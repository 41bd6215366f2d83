"""Fixtures of the sandbox's tests: the sandbox on a TestServer, the real webhook-ingest in
front of the test's broker namespace, and a plain webhook endpoint for tests that look at the
HTTP side of deliveries (retries, arrival order) rather than at what the ingest published."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aio_pika.abc import AbstractQueue
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from inbox_common.contracts.delivery import deliveries_from_amqp
from inbox_common.contracts.webhook import (
    InboundMessage,
    MessageStatus,
    WebhookEnvelope,
    iter_changes,
    parse_envelope,
)
from inbox_common.whatsapp.signature import SIGNATURE_HEADER, verify
from inbox_sandbox.app import create_app
from inbox_sandbox.keys import WEBHOOKS
from inbox_sandbox.settings import SandboxSettings
from inbox_testkit.polling import wait_until
from inbox_testkit.sandbox import SECRET

Client = TestClient[web.Request, web.Application]
MakeSandbox = Callable[..., Awaitable[Client]]

NUMBER = "100000000000001"
TOKEN = "token-one"
WABA = "100000000000009"
DISPLAY = "+1 555 010 0001"
OTHER_NUMBER = "100000000000002"
OTHER_TOKEN = "token-two"
CUSTOMER = "15551234567"
BSUID = "US.13491208655302741918"
MESSAGES = f"/v23.0/{NUMBER}/messages"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def sandbox_settings(webhook_url: str, **overrides: Any) -> SandboxSettings:
    values: dict[str, Any] = {
        "whatsapp_webhook_secret": SECRET,
        "sandbox_webhook_url": webhook_url,
        "sandbox_numbers": f"{NUMBER}:{TOKEN}:{WABA}:{DISPLAY},{OTHER_NUMBER}:{OTHER_TOKEN}",
        "sandbox_status_delays_ms": "5,10,15",
        "sandbox_webhook_retry_seconds": 1.0,
        "sandbox_webhook_timeout_seconds": 2.0,
        "log_format": "console",
        **overrides,
    }
    return SandboxSettings.model_validate(values)


def text(to: str = CUSTOMER, body: str = "Halo", **extra: Any) -> dict[str, Any]:
    """A text send request as a client of the Cloud API writes it."""
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "text",
        "text": {"body": body},
        **extra,
    }


def template(to: str = CUSTOMER, **extra: Any) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "to": to,
        "type": "template",
        "template": {"name": "order_update", "language": {"code": "id"}},
        **extra,
    }


async def ledger(client: Client, **query: str) -> dict[str, Any]:
    response = await client.get("/sandbox/sent", params=query)
    assert response.status == 200
    result: dict[str, Any] = await response.json()
    return result


async def settled(client: Client) -> None:
    """Wait until the sandbox has no webhook scheduled or being retried."""
    sender = client.app[WEBHOOKS]

    async def idle() -> bool:
        pending: int = sender.pending
        return pending == 0

    await wait_until(idle, "every scheduled webhook to be delivered or given up")


class Receiver:
    """A webhook endpoint that records each POST and answers from a script (200 when empty)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.signed: list[bool] = []
        self.answers: deque[int] = deque()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.bodies.append(body)
        self.signed.append(verify(body, request.headers.get(SIGNATURE_HEADER), [SECRET.encode()]))
        status = self.answers.popleft() if self.answers else 200
        return web.Response(status=status, text="ok")

    def statuses(self) -> list[MessageStatus]:
        return [status for body in self.bodies for status in statuses_of(parse_envelope(body))]


def statuses_of(envelope: WebhookEnvelope) -> list[MessageStatus]:
    return [status for change in iter_changes(envelope) for status in change.statuses]


def messages_of(envelope: WebhookEnvelope) -> list[InboundMessage]:
    return [message for change in iter_changes(envelope) for message in change.messages]


class Published:
    """The bodies webhook-ingest published, read from the namespace's webhook queue."""

    def __init__(self, queue: AbstractQueue) -> None:
        self._queue = queue
        self.bodies: list[bytes] = []

    async def _drain(self) -> None:
        while (message := await self._queue.get(no_ack=True, fail=False)) is not None:
            self.bodies.extend(d.body for d in deliveries_from_amqp(message.body, message.headers))

    async def wait_for(self, count: int, what: str, timeout: float = 5.0) -> list[bytes]:  # noqa: ASYNC109
        """Wait until at least ``count`` bodies were published; return them all."""

        async def enough() -> bool:
            await self._drain()
            return len(self.bodies) >= count

        await wait_until(enough, what, timeout)
        return self.bodies

    def envelopes(self) -> list[WebhookEnvelope]:
        return [parse_envelope(body) for body in self.bodies]

    def statuses(self, wamid: str | None = None) -> list[MessageStatus]:
        found = [s for envelope in self.envelopes() for s in statuses_of(envelope)]
        return [s for s in found if wamid is None or s.id == wamid]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recorder = Receiver()
    app = web.Application()
    app.router.add_post("/webhooks/whatsapp", recorder.handle)
    server = TestServer(app)
    await server.start_server()
    recorder.url = str(server.make_url("/webhooks/whatsapp"))
    yield recorder
    await server.close()


@pytest.fixture
async def make_sandbox(receiver: Receiver) -> AsyncIterator[MakeSandbox]:
    """Start sandboxes posting to a given URL, with settings overridden by keyword.

    Depends on ``receiver`` so that the sandboxes stop (and cancel their pending webhooks)
    before the endpoint they post to goes away.
    """
    clients: list[Client] = []

    async def make(webhook_url: str, **overrides: Any) -> Client:
        client: Client = TestClient(
            TestServer(create_app(sandbox_settings(webhook_url, **overrides)))
        )
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def sandbox(make_sandbox: MakeSandbox, receiver: Receiver) -> Client:
    """A sandbox whose webhooks go to ``receiver``."""
    return await make_sandbox(receiver.url)


@pytest.fixture
def published(work_queue: AbstractQueue) -> Published:
    return Published(work_queue)


@pytest.fixture
async def live(ingest_url: str, make_sandbox: MakeSandbox) -> Client:
    """A sandbox whose webhooks go to the real ingest."""
    return await make_sandbox(ingest_url)
