"""Live updates over WebSocket: two inbox-api replicas on one namespace of the real broker
and the real store, each on aiohttp's TestServer, and real WebSocket clients (aiohttp's, and
a raw socket for a client that stops reading). A replica's broker connection is cut through
a TCP proxy to show that it binds again and receives every event once."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer
from bson import ObjectId
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs
from yarl import URL

from inbox_api.app import create_app
from inbox_api.live import LIVE, TOKEN_REVOKED, LiveUpdates, add_live_routes, live_ctx
from inbox_api.live.handlers import PATH
from inbox_api.live.metrics import LiveMetrics
from inbox_api.rest.auth import TOKEN_CACHE, TokenCache
from inbox_api.settings import InboxApiSettings
from inbox_common.broker.connection import Broker
from inbox_common.broker.topology import Names
from inbox_common.local.ports import free_port
from inbox_common.metrics import METRICS_REGISTRY
from inbox_common.store.client import Database
from inbox_common.store.schema import API_TOKENS
from inbox_common.tokens import Role, create_token, hash_token, revoke_token
from inbox_testkit.faults.proxy import TcpProxy
from inbox_testkit.polling import wait_until
from inbox_testkit.tenants import Tokens, bearer

pytestmark = pytest.mark.integration

OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$")
RECEIVE_SECONDS = 10.0


# --- replicas and clients -------------------------------------------------------------------


@dataclass
class Replica:
    app: web.Application
    client: TestClient[web.Request, web.Application]

    @property
    def hub(self) -> LiveUpdates:
        return self.app[LIVE]

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.app[METRICS_REGISTRY].get_sample_value(name, labels or {})
        return 0.0 if value is None else value


def live_app(settings: InboxApiSettings) -> web.Application:
    app = create_app(settings)
    # create_app wires the live updates now; this adds them to an app built without them
    # (as create_app was when these tests were written) and can go once that is committed.
    if not any(resource.canonical == PATH for resource in app.router.resources()):
        app.cleanup_ctx.append(live_ctx())
        add_live_routes(app)
    return app


@asynccontextmanager
async def replica(settings: InboxApiSettings) -> AsyncIterator[Replica]:
    """An inbox-api replica on a TestServer, bound to the live exchange."""
    app = live_app(settings)
    async with TestClient(TestServer(app)) as client:
        running = Replica(app, client)

        async def bound() -> bool:
            return running.hub.bound

        await wait_until(bound, "the replica to bind its live queue", timeout=15)
        yield running


@pytest.fixture
async def replicas(
    settings: InboxApiSettings, db: Database
) -> AsyncIterator[tuple[Replica, Replica]]:
    """Two replicas of inbox-api on the same namespace and store."""
    async with replica(settings) as a, replica(settings) as b:
        yield a, b


class LiveClient:
    """One WebSocket client; every read has a deadline."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def next(self) -> dict[str, Any]:
        message = await self.ws.receive(timeout=RECEIVE_SECONDS)
        assert message.type is WSMsgType.TEXT, message
        body: dict[str, Any] = orjson.loads(message.data)
        return body

    async def event(self) -> dict[str, Any]:
        message = await self.next()
        assert message["type"] == "event", message
        event: dict[str, Any] = message["event"]
        return event

    async def ready(self) -> str | None:
        message = await self.next()
        assert message["type"] == "ready", message
        assert set(message) == {"type", "last_event_id"}
        newest: str | None = message["last_event_id"]
        return newest

    async def closed(self) -> tuple[int, str]:
        """The close code and reason the server sent."""
        message = await self.ws.receive(timeout=RECEIVE_SECONDS)
        assert message.type is WSMsgType.CLOSE, message
        return int(message.data), str(message.extra)


async def connect(
    server: Replica, token: str | None = None, *, last_event_id: str | None = None
) -> LiveClient:
    """A client of ``server``, with the token in the Authorization header (when given)."""
    ws = await server.client.ws_connect(
        PATH,
        headers=bearer(token) if token is not None else None,
        params={"last_event_id": last_event_id} if last_event_id else None,
        autoping=True,
    )
    return LiveClient(ws)


async def session(server: Replica, token: str, *, last_event_id: str | None = None) -> LiveClient:
    """An authenticated client that got its ``ready``."""
    client = await connect(server, token, last_event_id=last_event_id)
    await client.ready()
    return client


# --- fan-out and tenants --------------------------------------------------------------------


async def test_an_event_published_on_one_replica_reaches_clients_on_every_replica(
    replicas: tuple[Replica, Replica], tokens: Tokens
) -> None:
    a, b = replicas
    on_a = await session(a, tokens.acme_agent)
    on_b = await session(b, tokens.acme_admin)
    conversation = ObjectId()
    moment = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)

    a.hub.publish("acme", "conversation.updated", {"id": conversation, "at": moment, "n": 1})

    event = await on_b.event()
    assert await on_a.event() == event
    assert set(event) == {"id", "type", "tenant", "at", "data"}
    assert OBJECT_ID.match(event["id"])
    assert ISO_UTC.match(event["at"])
    assert (event["type"], event["tenant"]) == ("conversation.updated", "acme")
    assert event["data"] == {"id": str(conversation), "at": "2026-03-01T12:30:00+00:00", "n": 1}
    assert b.metric("live_clients") == 1
    assert a.metric("live_events_published_total") == 1
    assert b.metric("live_events_delivered_total") == 1
    health = await (await b.client.get("/api/health")).json()
    assert health["checks"]["live_updates"]["status"] == "ok"


async def test_tenants_are_isolated_and_a_superadmin_sees_every_tenant(
    replicas: tuple[Replica, Replica], tokens: Tokens
) -> None:
    a, b = replicas
    acme = await session(a, tokens.acme_agent)
    globex = await session(b, tokens.globex_agent)
    everyone = await session(b, tokens.superadmin)

    # One publisher's events arrive in order: had globex's client been sent acme's event,
    # it would read it before its own.
    a.hub.publish("acme", "message.created", {"n": 1})
    a.hub.publish("globex", "message.created", {"n": 2})
    a.hub.publish("acme", "message.created", {"n": 3})

    assert [(e["tenant"], e["data"]["n"]) for e in [await globex.event()]] == [("globex", 2)]
    assert [(await acme.event())["data"]["n"] for _ in range(2)] == [1, 3]
    assert [(await everyone.event())["data"]["n"] for _ in range(3)] == [1, 2, 3]
    a.hub.publish("globex", "message.created", {"n": 4})
    assert (await globex.event())["data"]["n"] == 4


# --- authentication -------------------------------------------------------------------------


async def test_a_browser_authenticates_with_its_first_message(
    replicas: tuple[Replica, Replica], tokens: Tokens
) -> None:
    a, b = replicas
    browser = await connect(b)
    await browser.ws.send_str(orjson.dumps({"type": "auth", "token": tokens.acme_agent}).decode())
    await browser.ready()

    a.hub.publish("acme", "conversation.updated", {"n": 1})

    assert (await browser.event())["data"] == {"n": 1}
    await browser.ws.send_str('{"type":"ping"}')
    assert await browser.next() == {"type": "pong"}


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("unknown token in the header", "the bearer token is not valid (unknown or revoked)"),
        ("unknown token in the auth message", "the bearer token is not valid (unknown or revoked)"),
        ("malformed token in the auth message", "the bearer token is not valid (malformed)"),
        ("token in a message that is not JSON", "the first message must be"),
        ("token in a message of another type", "the first message must be"),
        ("basic credentials in the header", "the Authorization header must be Bearer"),
    ],
)
async def test_a_bad_token_is_refused_with_4001_and_never_logged(
    replicas: tuple[Replica, Replica],
    caplog: pytest.LogCaptureFixture,
    how: str,
    reason: str,
) -> None:
    _, b = replicas
    secret = "wai_" + secrets.token_urlsafe(32)
    caplog.set_level(logging.DEBUG)
    with capture_logs() as logs:
        if how == "unknown token in the header":
            client = await connect(b, secret)
        elif how == "basic credentials in the header":
            ws = await b.client.ws_connect(
                PATH,
                headers={"Authorization": "Basic " + base64.b64encode(secret.encode()).decode()},
            )
            client = LiveClient(ws)
        else:
            client = await connect(b)
            token = f"{secret} !" if how.startswith("malformed") else secret
            message = {
                "unknown token in the auth message": orjson.dumps({"type": "auth", "token": token}),
                "malformed token in the auth message": orjson.dumps(
                    {"type": "auth", "token": token}
                ),
                "token in a message that is not JSON": f"auth {token}".encode(),
                "token in a message of another type": orjson.dumps(
                    {"type": "hello", "token": token}
                ),
            }[how]
            await client.ws.send_str(message.decode())
        code, text = await client.closed()

    assert code == 4001
    assert text.startswith(reason), text
    assert [line["event"] for line in logs if line["event"].startswith("live.")] == ["live.refused"]
    for output in (repr(logs), caplog.text, text):
        assert secret not in output
    assert b.metric("live_sessions_closed_total", {"reason": "unauthorized"}) == 1
    assert b.metric("live_clients") == 0


@pytest.mark.slow
async def test_a_client_that_never_authenticates_is_closed_after_the_deadline(
    replicas: tuple[Replica, Replica],
) -> None:
    _, b = replicas
    silent = await connect(b)

    code, text = await silent.closed()

    assert code == 4001
    assert text == (
        'no auth message within 5s; send {"type":"auth","token":"..."} first, '
        "or the Authorization header"
    )


# --- resuming -------------------------------------------------------------------------------


@pytest.mark.parametrize("resume_with", ["query parameter", "auth message"])
async def test_a_client_that_resumes_with_a_known_id_gets_exactly_what_it_missed(
    replicas: tuple[Replica, Replica], tokens: Tokens, resume_with: str
) -> None:
    a, b = replicas
    observer = await session(b, tokens.superadmin)
    first = await session(b, tokens.acme_agent)
    a.hub.publish("acme", "message.created", {"n": 1})
    seen = await first.event()
    await first.ws.close()

    for tenant, n in (("acme", 2), ("globex", 3), ("acme", 4)):
        a.hub.publish(tenant, "message.created", {"n": n})
    observed = [await observer.event() for _ in range(4)]  # B has them all now
    assert [e["data"]["n"] for e in observed] == [1, 2, 3, 4]

    if resume_with == "query parameter":
        resumed = await connect(b, tokens.acme_agent, last_event_id=seen["id"])
    else:
        resumed = await connect(b)
        hello = {"type": "auth", "token": tokens.acme_agent, "last_event_id": seen["id"]}
        await resumed.ws.send_str(orjson.dumps(hello).decode())
    assert await resumed.ready() == observed[-1]["id"]
    assert [await resumed.event() for _ in range(2)] == [observed[1], observed[3]]

    a.hub.publish("acme", "message.created", {"n": 5})
    assert (await resumed.event())["data"] == {"n": 5}  # live, nothing replayed twice


async def test_a_client_with_an_unknown_id_is_told_to_reload_and_then_gets_live_events(
    replicas: tuple[Replica, Replica], tokens: Tokens
) -> None:
    a, b = replicas
    client = await session(b, tokens.acme_agent, last_event_id=str(ObjectId()))

    reload = await client.next()

    assert reload["type"] == "reload"
    assert "refetch" in reload["reason"]
    a.hub.publish("acme", "message.created", {"n": 1})
    assert (await client.event())["data"] == {"n": 1}


# --- revocation -----------------------------------------------------------------------------


async def test_a_token_revoked_on_one_replica_closes_its_sessions_on_every_replica(
    replicas: tuple[Replica, Replica], tokens: Tokens, db: Database
) -> None:
    a, b = replicas
    token = await create_token(db, role=Role.AGENT, tenant="acme", name="leaving")
    token_hash = hash_token(token)
    victim = await session(b, token)
    bystander = await session(b, tokens.acme_agent)
    assert b.app[TOKEN_CACHE].get(token_hash) is not None  # a later request would skip the store

    record = await db[API_TOKENS].find_one({"token_hash": token_hash})
    assert record is not None
    assert await revoke_token(db, record["_id"], "acme") == token_hash
    a.hub.publish("acme", TOKEN_REVOKED, {"token_hash": token_hash})

    assert await victim.closed() == (4001, "token revoked")
    assert b.app[TOKEN_CACHE].get(token_hash) is None
    # Within the cache's lifetime, yet refused: the cache forgot it.
    again = await connect(b, token)
    assert await again.closed() == (4001, "the bearer token is not valid (unknown or revoked)")
    # The revocation is for the replicas: other sessions do not see it, and go on.
    a.hub.publish("acme", "message.created", {"n": 1})
    assert (await bystander.event())["type"] == "message.created"
    assert b.metric("live_sessions_closed_total", {"reason": "revoked"}) == 1


# --- the broker -----------------------------------------------------------------------------


async def test_publish_never_raises_while_the_broker_is_unreachable(names: Names) -> None:
    broker = Broker(f"amqp://guest:guest@127.0.0.1:{free_port()}/", name="unreachable")
    broker.start()
    registry = CollectorRegistry()
    hub = LiveUpdates(broker, names, TokenCache(), LiveMetrics(registry))
    hub.start()
    try:
        for n in range(50):
            hub.publish("acme", "message.created", {"n": n})
        hub.publish("acme", "message.created", {"not JSON": object()})
        hub.publish("acme", TOKEN_REVOKED, {"token_hash": "0" * 64})

        def dropped(reason: str) -> float | None:
            return registry.get_sample_value("live_events_dropped_total", {"reason": reason})

        assert dropped("broker_unavailable") == 51
        assert dropped("unserializable") == 1
        assert registry.get_sample_value("live_events_published_total") == 0
        probe = await hub.probe()
        assert probe.status == "down"
        assert probe.detail is not None
        assert names.live_exchange in probe.detail
    finally:
        await hub.stop()
        await broker.close()


async def test_a_replica_that_lost_its_broker_connection_receives_again(
    settings: InboxApiSettings, db: Database, amqp_url: str, tokens: Tokens
) -> None:
    upstream = URL(amqp_url)
    proxy = TcpProxy([(upstream.host or "127.0.0.1", upstream.port or 5672)], name="b-broker")
    await proxy.start()
    proxied = settings.model_copy(
        update={"rabbitmq_url": str(upstream.with_host("127.0.0.1").with_port(proxy.port))}
    )
    try:
        async with replica(settings) as a, replica(proxied) as b:
            client = await session(b, tokens.acme_agent)
            a.hub.publish("acme", "message.created", {"n": 1})
            before = await client.event()
            queue = b.hub.queue

            assert proxy.cut() >= 1

            reload = await client.next()  # sent once B is bound again
            assert reload["type"] == "reload"
            assert "missed" in reload["reason"]
            assert b.hub.bound
            assert b.hub.queue != queue  # a fresh queue from the server
            for n in (2, 3):
                a.hub.publish("acme", "message.created", {"n": n})
            # Each exactly once: one binding, not an old one restored next to the new one.
            assert [(await client.event())["data"]["n"] for _ in range(2)] == [2, 3]
            # What B buffered before the gap may have a hole after it: no replay from there.
            resumed = await session(b, tokens.acme_agent, last_event_id=before["id"])
            assert (await resumed.next())["type"] == "reload"
    finally:
        await proxy.close()


# --- slow clients and shutdown --------------------------------------------------------------


async def _upgrade_without_reading(server: Replica, token: str) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    host, port = server.client.server.host, server.client.server.port
    assert port is not None
    await loop.sock_connect(sock, (host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 1), RECEIVE_SECONDS)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


async def test_a_client_too_slow_to_keep_up_is_dropped_without_holding_up_the_others(
    replicas: tuple[Replica, Replica], tokens: Tokens
) -> None:
    a, b = replicas
    stuck = await _upgrade_without_reading(b, tokens.acme_agent)
    fast = await session(b, tokens.acme_admin)
    pad = "x" * 16_000
    received = 0

    async def read_fast() -> None:
        nonlocal received
        while True:
            await fast.event()
            received += 1

    reader = asyncio.create_task(read_fast())
    sent = 0
    try:

        async def slow_one_dropped() -> bool:
            nonlocal sent
            for _ in range(50):
                a.hub.publish("acme", "message.created", {"pad": pad})
            sent += 50
            return b.metric("live_sessions_closed_total", {"reason": "too_slow"}) == 1

        await wait_until(slow_one_dropped, "the stuck client to be dropped", timeout=60)

        async def fast_one_kept_up() -> bool:
            return received == sent

        await wait_until(fast_one_kept_up, "the fast client to get every event", timeout=30)
        assert not reader.done()

        async def stuck_one_gone() -> bool:
            return b.metric("live_clients") == 1

        await wait_until(stuck_one_gone, "the stuck client's session to end")
    finally:
        reader.cancel()
        await asyncio.wait([reader])
        stuck.close()


async def test_shutdown_says_going_away_to_every_session(
    settings: InboxApiSettings, db: Database, tokens: Tokens
) -> None:
    app = live_app(settings)
    server = TestServer(app)
    await server.start_server()
    try:

        async def bound() -> bool:
            return app[LIVE].bound

        await wait_until(bound, "the replica to bind its live queue", timeout=15)
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(server.make_url(PATH), headers=bearer(tokens.acme_agent))
            client = LiveClient(ws)
            await client.ready()
            closing = asyncio.create_task(server.close())

            assert await client.closed() == (1001, "going away")
            await asyncio.wait_for(closing, RECEIVE_SECONDS)
    finally:
        await server.close()
