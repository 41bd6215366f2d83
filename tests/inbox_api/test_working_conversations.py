"""Agents work the inbox: they assign, close, reopen, label, annotate, read and search
conversations, and admins manage agents and their tokens.

Everything runs against the real broker and store. Where Meta is involved (a read receipt, a
note that must never be sent, a customer writing in), the whatsapp-sandbox runs as a process
and posts its signed webhooks through the real webhook-ingest. Where a change made on one
inbox-api replica must show on another (a revoked token, live updates), two replicas share
one store and one namespace.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer
from bson import ObjectId

from inbox_api.app import create_app
from inbox_api.consumer.service import Outcome, WebhookProcessor
from inbox_api.live import LIVE
from inbox_api.settings import InboxApiSettings
from inbox_common.store.client import Database, Document
from inbox_common.store.schema import MESSAGES
from inbox_common.tokens import hash_token
from inbox_sandbox import payloads
from inbox_testkit.plugin import ApiClient
from inbox_testkit.polling import wait_until
from inbox_testkit.sandbox import Sandbox, run_sandbox, sandbox_number
from inbox_testkit.store import create_channel
from inbox_testkit.tenants import ACME_NUMBER, GLOBEX_NUMBER, Tokens, bearer
from inbox_testkit.webhooks import delivery_of

pytestmark = pytest.mark.integration

CUSTOMER = "6281234567890"
TOKEN = f"EAAG-secret-{ACME_NUMBER}"  # the testkit channel's token
# Shorter than the token cache's 5 s: only the live revocation can make it.
REVOKED_WITHIN = 3.0
EVENT_SECONDS = 10.0
TOKEN_FIELDS = {"id", "tenant", "role", "name", "agent_id", "created_at", "revoked_at"}


# --- the REST API ---------------------------------------------------------------------------


async def call(
    api: ApiClient, method: str, path: str, token: str, body: Any = None
) -> tuple[int, Any]:
    response = await api.request(method, path, json=body, headers=bearer(token))
    if response.status == 204:
        return 204, None
    return response.status, await response.json()


async def ok(
    api: ApiClient, method: str, path: str, token: str, body: Any = None, *, status: int = 200
) -> Any:
    got, answer = await call(api, method, path, token, body)
    assert got == status, (method, path, got, answer)
    return answer


async def refused(
    api: ApiClient, method: str, path: str, token: str, body: Any, status: int, code: str
) -> dict[str, Any]:
    got, answer = await call(api, method, path, token, body)
    assert got == status, (method, path, body, got, answer)
    assert answer["error"]["code"] == code, (method, path, body, answer)
    error: dict[str, Any] = answer["error"]
    return error


async def listed(api: ApiClient, token: str, query: str = "") -> list[str]:
    """The ids of the conversations the listing shows, in its order."""
    page = await ok(api, "GET", f"/api/conversations{query}", token)
    return [item["id"] for item in page["items"]]


async def new_agent(api: ApiClient, admin: str, name: str, role: str = "agent") -> dict[str, Any]:
    """An agent created with POST /api/agents, with its token."""
    agent: dict[str, Any] = await ok(
        api, "POST", "/api/agents", admin, {"name": name, "role": role}, status=201
    )
    return agent


def every_token(tokens: Tokens) -> tuple[str, ...]:
    return (
        tokens.acme_agent, tokens.acme_admin, tokens.globex_agent, tokens.globex_admin,
        tokens.superadmin,
    )  # fmt: skip


async def writes_in(
    processor: WebhookProcessor, wa_id: str, name: str, text: str, *, number: str = ACME_NUMBER
) -> str:
    """A customer's text, stored as the webhook consumer stores one; returns its wamid."""
    wamid = payloads.new_wamid()
    body = payloads.text_webhook(number, wa_id, name, text, wamid=wamid)
    assert await processor.process(delivery_of(body)) is Outcome.PROCESSED
    return wamid


async def conversation_with(api: ApiClient, token: str, wa_id: str) -> str:
    [conversation] = (await ok(api, "GET", f"/api/conversations?wa_id={wa_id}", token))["items"]
    return str(conversation["id"])


@pytest.fixture
async def two(
    api: ApiClient, processor: WebhookProcessor, channel: Document, tokens: Tokens
) -> tuple[str, str]:
    """Two of acme's conversations: with Ann (4910000001) and with Bo (4910000002)."""
    await writes_in(processor, "4910000001", "Ann", "first")
    await writes_in(processor, "4910000002", "Bo", "second")
    return (
        await conversation_with(api, tokens.acme_agent, "4910000001"),
        await conversation_with(api, tokens.acme_agent, "4910000002"),
    )


# --- the sandbox and replicas ---------------------------------------------------------------


@pytest.fixture
async def cloud(ingest_url: str) -> AsyncIterator[Sandbox]:
    """The sandbox as a process, knowing acme's number, posting to the real ingest."""
    async with run_sandbox(
        ingest_url, [sandbox_number(ACME_NUMBER, TOKEN)], sandbox_status_delays_ms="20,60,100"
    ) as sandbox:
        yield sandbox


def wired(settings: InboxApiSettings, cloud: Sandbox) -> InboxApiSettings:
    return settings.model_copy(update={"whatsapp_api_base_url": cloud.url})


@pytest.fixture
async def inbox(
    settings: InboxApiSettings, cloud: Sandbox, channel: Document, db: Database
) -> AsyncIterator[ApiClient]:
    """inbox-api (REST, webhook consumer and sender) calling the sandbox."""
    async with TestClient(TestServer(create_app(wired(settings, cloud)))) as client:
        yield client


@asynccontextmanager
async def replica(settings: InboxApiSettings) -> AsyncIterator[ApiClient]:
    """An inbox-api replica on a TestServer, receiving the live exchange."""
    async with TestClient(TestServer(create_app(settings))) as client:

        async def bound() -> bool:
            return client.app[LIVE].bound

        await wait_until(bound, "the replica to bind its live queue", timeout=15)
        yield client


async def customer_writes(
    api: ApiClient, cloud: Sandbox, tokens: Tokens, text: str
) -> tuple[str, str]:
    """The customer writes through the sandbox; returns the conversation's id and the
    message's wamid once inbox-api lists the message."""
    wamid = await cloud.inbound(ACME_NUMBER, CUSTOMER, text, name="Budi")
    found: list[str] = []

    async def arrived() -> bool:
        page = await ok(api, "GET", f"/api/conversations?wa_id={CUSTOMER}", tokens.acme_agent)
        for conversation in page["items"]:
            messages = await ok(
                api, "GET", f"/api/conversations/{conversation['id']}/messages", tokens.acme_agent
            )
            if wamid in [m["wamid"] for m in messages["items"]]:
                found.append(conversation["id"])
                return True
        return False

    await wait_until(arrived, f"the customer's message {wamid} in the inbox", timeout=15)
    return found[0], wamid


class LiveClient:
    """A WebSocket client of GET /api/ws; every read has a deadline."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def frame(self) -> dict[str, Any]:
        message = await self.ws.receive(timeout=EVENT_SECONDS)
        assert message.type is WSMsgType.TEXT, message
        frame: dict[str, Any] = orjson.loads(message.data)
        return frame

    async def event(self) -> dict[str, Any]:
        frame = await self.frame()
        assert frame["type"] == "event", frame
        event: dict[str, Any] = frame["event"]
        return event

    async def event_where(self, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first event ``wanted`` accepts (others are skipped)."""
        while not wanted(event := await self.event()):
            pass
        return event


async def live_client(api: ApiClient, token: str) -> LiveClient:
    """A client with the token in the Authorization header, past its ``ready``."""
    client = LiveClient(await api.ws_connect("/api/ws", headers=bearer(token)))
    assert (await client.frame())["type"] == "ready"
    return client


# --- assignment -----------------------------------------------------------------------------


async def test_an_agent_finds_the_conversations_assigned_to_them_and_the_unassigned_ones(
    api: ApiClient, tokens: Tokens, two: tuple[str, str]
) -> None:
    first, second = two
    ann = await new_agent(api, tokens.acme_admin, "Ann Agent")

    assigned = await ok(
        api,
        "POST",
        f"/api/conversations/{first}/assign",
        tokens.acme_agent,
        {"agent_id": ann["id"]},
    )

    assert (assigned["id"], assigned["assignee"]) == (first, ann["id"])
    assert await listed(api, ann["token"], "?assignee=me") == [first]
    assert await listed(api, tokens.acme_agent, f"?assignee={ann['id']}") == [first]
    assert await listed(api, tokens.acme_agent, "?assignee=none") == [second]
    assert await listed(api, tokens.acme_agent, f"?assignee={ObjectId()}") == []
    # An admin's token is no agent's: "me" means nobody, and it says so.
    await refused(
        api, "GET", "/api/conversations?assignee=me", tokens.acme_admin, None, 400, "not_an_agent"
    )

    unassigned = await ok(
        api, "POST", f"/api/conversations/{first}/assign", ann["token"], {"agent_id": None}
    )

    assert unassigned["assignee"] is None
    assert await listed(api, ann["token"], "?assignee=me") == []
    assert set(await listed(api, tokens.acme_agent, "?assignee=none")) == {first, second}


async def test_assigning_to_an_agent_the_tenant_does_not_have_is_422_and_changes_nothing(
    api: ApiClient, tokens: Tokens, two: tuple[str, str]
) -> None:
    first, _ = two
    ann = await new_agent(api, tokens.acme_admin, "Ann Agent")
    gus = await new_agent(api, tokens.globex_admin, "Gus Globex")
    path = f"/api/conversations/{first}/assign"
    await ok(api, "POST", path, tokens.acme_agent, {"agent_id": ann["id"]})

    for agent_id in (str(ObjectId()), gus["id"], "not-an-id", ""):
        error = await refused(
            api, "POST", path, tokens.acme_agent, {"agent_id": agent_id}, 422, "unknown_agent"
        )
        assert error["details"] == {"field": "agent_id"}

    await refused(api, "POST", path, tokens.acme_agent, {}, 422, "validation_error")
    still = await ok(api, "GET", f"/api/conversations/{first}", tokens.acme_agent)
    assert still["assignee"] == ann["id"]


async def test_an_agent_id_in_capitals_still_assigns_to_that_agent(
    api: ApiClient, tokens: Tokens, two: tuple[str, str]
) -> None:
    """An ObjectId is hex, and hex has no case: the id in capitals names the same agent (it
    passes the check), so the agent must find the conversation under ``assignee=me``, which
    compares the id as text."""
    first, _ = two
    ann = await new_agent(api, tokens.acme_admin, "Ann Agent")

    assigned = await ok(
        api,
        "POST",
        f"/api/conversations/{first}/assign",
        tokens.acme_agent,
        {"agent_id": ann["id"].upper()},
    )

    assert assigned["assignee"] == ann["id"]
    assert await listed(api, ann["token"], "?assignee=me") == [first]


# --- status and labels ----------------------------------------------------------------------


async def test_close_and_reopen_move_a_conversation_between_the_status_filters(
    api: ApiClient, tokens: Tokens, two: tuple[str, str]
) -> None:
    first, second = two

    closed = await ok(api, "POST", f"/api/conversations/{first}/close", tokens.acme_agent)

    assert closed["status"] == "closed"
    assert await listed(api, tokens.acme_agent, "?status=closed") == [first]
    assert await listed(api, tokens.acme_agent, "?status=open") == [second]
    again = await ok(api, "POST", f"/api/conversations/{first}/close", tokens.acme_agent)
    assert again["status"] == "closed"

    reopened = await ok(api, "POST", f"/api/conversations/{first}/reopen", tokens.acme_agent)

    assert reopened["status"] == "open"
    assert await listed(api, tokens.acme_agent, "?status=closed") == []
    assert set(await listed(api, tokens.acme_agent, "?status=open")) == {first, second}
    await refused(
        api, "GET", "/api/conversations?status=archived", tokens.acme_agent, None, 400,
        "invalid_status",
    )  # fmt: skip


async def test_a_customer_writing_after_the_close_reopens_the_conversation(
    api: ApiClient, processor: WebhookProcessor, tokens: Tokens, two: tuple[str, str]
) -> None:
    first, _ = two
    await ok(api, "POST", f"/api/conversations/{first}/close", tokens.acme_agent)
    now = int(time.time())

    # Written before the close, delivered after it (Meta retries late): it stays closed.
    late = payloads.text_webhook(ACME_NUMBER, "4910000001", "Ann", "late", timestamp=now - 60)
    assert await processor.process(delivery_of(late)) is Outcome.PROCESSED
    stays = await ok(api, "GET", f"/api/conversations/{first}", tokens.acme_agent)
    assert stays["status"] == "closed"
    assert await listed(api, tokens.acme_agent, "?status=closed") == [first]

    again = payloads.text_webhook(ACME_NUMBER, "4910000001", "Ann", "one more", timestamp=now + 2)
    assert await processor.process(delivery_of(again)) is Outcome.PROCESSED

    reopened = await ok(api, "GET", f"/api/conversations/{first}", tokens.acme_agent)
    assert reopened["status"] == "open"
    assert reopened["last_message_preview"] == "one more"
    assert await listed(api, tokens.acme_agent, "?status=closed") == []


async def test_labels_are_a_set_that_replaces_the_last_one_and_filters_the_list(
    api: ApiClient, tokens: Tokens, two: tuple[str, str]
) -> None:
    first, second = two

    async def put(conversation: str, labels: Any) -> list[str]:
        answer = await ok(
            api, "PUT", f"/api/conversations/{conversation}/labels", tokens.acme_agent,
            {"labels": labels},
        )  # fmt: skip
        shown: list[str] = answer["labels"]
        return shown

    assert await put(first, ["vip", "billing", "vip"]) == ["billing", "vip"]
    assert await listed(api, tokens.acme_agent, "?label=vip") == [first]
    assert await listed(api, tokens.acme_agent, "?label=VIP") == []  # labels are exact
    assert await put(first, ["late", "billing"]) == ["billing", "late"]  # replaced, not added
    assert await listed(api, tokens.acme_agent, "?label=vip") == []
    assert await put(second, ["late"]) == ["late"]
    assert set(await listed(api, tokens.acme_agent, "?label=late")) == {first, second}
    assert await listed(api, tokens.acme_agent, "?label=billing&status=open") == [first]

    for bad in ([""], ["x" * 51], [f"l{n}" for n in range(51)], "vip", [None]):
        await refused(
            api, "PUT", f"/api/conversations/{first}/labels", tokens.acme_agent,
            {"labels": bad}, 422, "validation_error",
        )  # fmt: skip
    shown = await ok(api, "GET", f"/api/conversations/{first}", tokens.acme_agent)
    assert shown["labels"] == ["billing", "late"]
    assert await put(first, []) == []
    assert await listed(api, tokens.acme_agent, "?label=late") == [second]


# --- search ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        pytest.param("budi", {"budi"}, id="name-lower-case"),
        pytest.param("SANTOSO", {"budi"}, id="name-upper-case"),
        pytest.param("ÉLODIE", {"elodie"}, id="name-non-ascii-other-case"),
        pytest.param("98765", {"siti"}, id="part-of-the-phone"),
        pytest.param("where is my order", {"budi"}, id="message-text-any-case"),
        pytest.param("(urgent)? [#42]", {"siti"}, id="regex-groups-and-classes-are-literal"),
        pytest.param(".*", {"siti"}, id="a-regex-wildcard-is-literal"),
        pytest.param("Budi|Rina", set(), id="an-alternation-is-literal"),
        pytest.param("[", {"siti"}, id="an-unclosed-class-is-literal"),
        pytest.param("$5 \\o/", {"siti"}, id="anchors-and-backslashes-are-literal"),
        pytest.param("^thanks$", set(), id="anchors-are-literal"),
        pytest.param("ZZZ", set(), id="nothing"),
    ],
)
async def test_search_matches_name_phone_and_message_text_whatever_the_case(
    api: ApiClient,
    tokens: Tokens,
    processor: WebhookProcessor,
    channel: Document,
    db: Database,
    q: str,
    expected: set[str],
) -> None:
    await create_channel(db, tenant="globex", phone_number_id=GLOBEX_NUMBER)
    people = {
        "budi": ("6281234567890", "Budi Santoso", "Where is my ORDER?"),
        "siti": ("6289876543210", "Siti", "Invoice (urgent)? [#42] costs a+b.* $5 \\o/"),
        "rina": ("6285550001111", "Rina", "thanks"),
        "elodie": ("33612345678", "Élodie Ørsted", "bonjour"),
    }
    for wa_id, name, text in people.values():
        await writes_in(processor, wa_id, name, text)
    # Another tenant's customer who matches everything acme's do: never found by acme.
    for wa_id, name, text in people.values():
        await writes_in(processor, "49" + wa_id, name, text, number=GLOBEX_NUMBER)
    ids = {who: await conversation_with(api, tokens.acme_agent, p[0]) for who, p in people.items()}

    response = await api.get(
        "/api/conversations", params={"q": q}, headers=bearer(tokens.acme_agent)
    )

    assert response.status == 200, await response.text()
    found = {item["id"] for item in (await response.json())["items"]}
    assert found == {ids[who] for who in expected}


async def test_search_combines_with_the_other_filters(
    api: ApiClient, tokens: Tokens, two: tuple[str, str]
) -> None:
    first, second = two
    await ok(api, "POST", f"/api/conversations/{first}/close", tokens.acme_agent)

    assert await listed(api, tokens.acme_agent, "?q=ann&status=closed") == [first]
    assert await listed(api, tokens.acme_agent, "?q=ann&status=open") == []
    assert await listed(api, tokens.acme_agent, "?q=second&status=open") == [second]


# --- notes and read receipts (the sandbox is Meta) ------------------------------------------


async def test_a_note_is_listed_with_the_messages_and_never_sent(
    inbox: ApiClient, cloud: Sandbox, tokens: Tokens, db: Database
) -> None:
    ann = await new_agent(inbox, tokens.acme_admin, "Ann Agent")
    conversation, wamid = await customer_writes(inbox, cloud, tokens, "Can you call me?")
    path = f"/api/conversations/{conversation}"

    note = await ok(
        inbox, "POST", f"{path}/notes", ann["token"], {"body": "Prefers a call after 5pm"},
        status=201,
    )  # fmt: skip

    assert (note["direction"], note["type"], note["author"]) == ("note", "note", ann["id"])
    assert note["content"] == {"body": "Prefers a call after 5pm"}
    assert (note["status"], note["send_state"]) == (None, None)
    for bad in ("", "x" * 4097):
        await refused(
            inbox, "POST", f"{path}/notes", ann["token"], {"body": bad}, 422, "validation_error"
        )
    # A reply written after the note goes out the way a sent note would have, and after it:
    # once Meta has the reply, it would have the note too.
    reply = await ok(
        inbox, "POST", f"{path}/messages", ann["token"],
        {"type": "text", "text": {"body": "Calling you at 5"}}, status=202,
    )  # fmt: skip

    async def reply_sent() -> bool:
        return bool(await cloud.sent())

    await wait_until(reply_sent, "the reply to reach the sandbox", timeout=15)
    sent = await cloud.sent()
    assert [entry["request"].get("text") for entry in sent] == [
        {"body": "Calling you at 5", "preview_url": False}
    ]
    page = await ok(inbox, "GET", f"{path}/messages", ann["token"])
    assert [(m["direction"], m["id"]) for m in page["items"]] == [
        ("inbound", page["items"][0]["id"]),
        ("note", note["id"]),
        ("outbound", reply["id"]),
    ]
    assert page["items"][0]["wamid"] == wamid
    assert page["items"][1] == note
    stored = await db[MESSAGES].find_one({"_id": ObjectId(note["id"])})
    assert stored is not None
    assert "send_state" not in stored


async def test_read_clears_the_unread_marks_and_tells_meta_the_last_inbound_message(
    inbox: ApiClient, cloud: Sandbox, tokens: Tokens
) -> None:
    conversation, _ = await customer_writes(inbox, cloud, tokens, "Hello")
    _, last = await customer_writes(inbox, cloud, tokens, "Are you there?")
    path = f"/api/conversations/{conversation}"

    async def unread(count: int) -> bool:
        # The conversation is written after its messages: listed is not yet counted.
        return bool((await ok(inbox, "GET", path, tokens.acme_agent))["unread_count"] == count)

    await wait_until(lambda: unread(2), "two unread messages")
    # Later than the last inbound message, but neither is one Meta can be told was read.
    await ok(
        inbox, "POST", f"{path}/messages", tokens.acme_agent,
        {"type": "text", "text": {"body": "Yes!"}}, status=202,
    )  # fmt: skip
    await ok(inbox, "POST", f"{path}/notes", tokens.acme_agent, {"body": "vip"}, status=201)

    read = await ok(inbox, "POST", f"{path}/read", tokens.acme_agent)

    assert read["unread_count"] == 0
    assert (await ok(inbox, "GET", path, tokens.acme_agent))["unread_count"] == 0
    [shown] = (await ok(inbox, "GET", "/api/conversations", tokens.acme_agent))["items"]
    assert shown["unread_count"] == 0

    async def receipt() -> bool:
        return bool(await cloud.read_receipts())

    await wait_until(receipt, "the read receipt to reach the sandbox", timeout=10)
    receipts = await cloud.read_receipts()
    assert [(r["phone_number_id"], r["message_id"]) for r in receipts] == [(ACME_NUMBER, last)]

    await customer_writes(inbox, cloud, tokens, "One more thing")
    await wait_until(lambda: unread(1), "the new message unread")


# --- agents and tokens ----------------------------------------------------------------------


async def test_only_an_admin_creates_agents_and_tokens_are_listed_without_their_secrets(
    api: ApiClient, tokens: Tokens
) -> None:
    await refused(api, "POST", "/api/agents", tokens.acme_agent, {"name": "Eve"}, 403, "forbidden")

    ann = await new_agent(api, tokens.acme_admin, "Ann")
    boss = await new_agent(api, tokens.acme_admin, "Boss", role="admin")
    gus = await new_agent(api, tokens.globex_admin, "Ann")  # names are unique per tenant

    assert (ann["tenant"], ann["name"], ann["role"]) == ("acme", "Ann", "agent")
    assert ann["token"].startswith("wai_")
    await refused(api, "POST", "/api/agents", tokens.acme_admin, {"name": "Ann"}, 409, "conflict")
    await refused(
        api, "POST", "/api/agents", tokens.acme_admin, {"name": "Root", "role": "superadmin"},
        422, "validation_error",
    )  # fmt: skip
    # An admin created here is an admin: it creates agents in turn.
    await new_agent(api, boss["token"], "Cleo")
    agents = await ok(api, "GET", "/api/agents", tokens.acme_agent)
    assert [(a["id"], a["name"]) for a in agents["items"]][:2] == [
        (ann["id"], "Ann"),
        (boss["id"], "Boss"),
    ]
    assert {a["tenant"] for a in agents["items"]} == {"acme"}

    await refused(api, "GET", "/api/tokens", tokens.acme_agent, None, 403, "forbidden")
    response = await api.get("/api/tokens", headers=bearer(tokens.acme_admin))
    assert response.status == 200
    text = await response.text()
    for secret in (*every_token(tokens), ann["token"], boss["token"], gus["token"]):
        assert secret not in text
        assert hash_token(secret) not in text
    items = (await response.json())["items"]
    assert all(set(item) == TOKEN_FIELDS for item in items)
    assert {item["tenant"] for item in items} == {"acme"}
    by_agent = {item["agent_id"]: item for item in items if item["agent_id"]}
    assert set(by_agent) >= {ann["id"], boss["id"]}
    assert by_agent[ann["id"]]["role"] == "agent"
    assert by_agent[boss["id"]]["role"] == "admin"
    assert len(items) == 5  # the two of the fixtures, Ann's, Boss's and Cleo's


async def test_a_revoked_token_is_refused_at_once_and_by_another_replica_within_seconds(
    settings: InboxApiSettings, db: Database, tokens: Tokens
) -> None:
    async with replica(settings) as a, replica(settings) as b:
        ann = await new_agent(a, tokens.acme_admin, "Ann")
        for server in (a, b):  # both replicas hold the token in their caches now
            assert (await server.get("/api/agents", headers=bearer(ann["token"]))).status == 200
        [record] = [
            item
            for item in (await ok(a, "GET", "/api/tokens", tokens.acme_admin))["items"]
            if item["agent_id"] == ann["id"]
        ]

        await ok(a, "DELETE", f"/api/tokens/{record['id']}", tokens.acme_admin, status=204)

        error = await refused(a, "GET", "/api/agents", ann["token"], None, 401, "unauthorized")
        assert error["message"] == "the bearer token is not valid (unknown or revoked)"

        async def refused_by_b() -> bool:
            return (await b.get("/api/agents", headers=bearer(ann["token"]))).status == 401

        await wait_until(refused_by_b, "replica B to refuse the revoked token", REVOKED_WITHIN)
        assert (await b.get("/api/agents", headers=bearer(tokens.acme_agent))).status == 200
        shown = (await ok(b, "GET", "/api/tokens", tokens.acme_admin))["items"]
        assert [t["revoked_at"] is not None for t in shown if t["id"] == record["id"]] == [True]
        await refused(
            b, "DELETE", f"/api/tokens/{record['id']}", tokens.acme_admin, None, 404, "not_found"
        )


# --- live updates ---------------------------------------------------------------------------


async def test_an_agent_on_another_replica_sees_assignments_and_new_messages_live(
    settings: InboxApiSettings,
    cloud: Sandbox,
    channel: Document,
    db: Database,
    tokens: Tokens,
    processor: WebhookProcessor,
) -> None:
    await create_channel(db, tenant="globex", phone_number_id=GLOBEX_NUMBER)
    await writes_in(processor, "4930000001", "Greta", "globex's own", number=GLOBEX_NUMBER)
    async with replica(wired(settings, cloud)) as a, replica(wired(settings, cloud)) as b:
        globex_conversation = await conversation_with(a, tokens.globex_agent, "4930000001")
        ann = await new_agent(a, tokens.acme_admin, "Ann")
        acme = await live_client(b, ann["token"])
        globex = await live_client(b, tokens.globex_agent)

        wamid = await cloud.inbound(ACME_NUMBER, CUSTOMER, "Is anyone there?", name="Budi")

        created = await acme.event_where(
            lambda e: e["type"] == "message.created" and e["data"]["wamid"] == wamid
        )
        assert created["tenant"] == "acme"
        assert (created["data"]["direction"], created["data"]["content"]) == (
            "inbound",
            {"body": "Is anyone there?"},
        )
        conversation = created["data"]["conversation_id"]

        assigned = await ok(
            a, "POST", f"/api/conversations/{conversation}/assign", ann["token"],
            {"agent_id": ann["id"]},
        )  # fmt: skip

        updated = await acme.event_where(
            lambda e: e["type"] == "conversation.updated" and e["data"]["assignee"] == ann["id"]
        )
        assert updated["data"] == assigned  # the conversation as REST shows it
        # Globex's own change comes after all of acme's: it is the first thing globex sees.
        await ok(a, "POST", f"/api/conversations/{globex_conversation}/close", tokens.globex_agent)
        first = await globex.event()
        assert (first["tenant"], first["type"], first["data"]["id"]) == (
            "globex",
            "conversation.updated",
            globex_conversation,
        )
