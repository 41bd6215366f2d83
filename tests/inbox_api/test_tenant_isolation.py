"""Tenant isolation on every operation of the REST API, walked from its own OpenAPI document
(``GET /api/openapi.json``), so a new route is covered the day it is documented.

Acme's admin and acme's agent call each operation against a store that also holds globex's
conversations, channel, agent, tokens and webhook logs:

- an operation on one thing (``{id}`` in its path) gets globex's real id of that kind. The
  answer must be the one an id that exists nowhere gets, which is a 404 (an agent on an
  admin-only route gets the role's 403, whatever the id), it must show nothing of globex, the
  store must be the same afterwards, and globex's live clients must hear nothing;
- a listing is read as it is, and with each of its documented query parameters set to each of
  globex's values (ids, phone, name, text, label, a cursor of globex's own listing): it must
  show nothing of globex;
- a creation is tried into globex: how each is refused or confined is decided below.

Only ``/api/health`` and ``/api/ws`` are skipped (no tenant data; the WebSocket's isolation is
tested in ``test_live.py``). An operation this test cannot place fails it: an ``{id}`` of a
kind it has no globex id for, a creation without a check, a request body without a sample.
Whoever adds a route decides how it is isolated.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer
from bson import ObjectId

from inbox_api.app import create_app
from inbox_api.consumer.service import Outcome, WebhookProcessor
from inbox_api.live import LIVE
from inbox_api.settings import InboxApiSettings
from inbox_common.alerts import AlertKind, Alerts
from inbox_common.local.ports import free_port
from inbox_common.store.client import Database, Document
from inbox_common.tokens import hash_token
from inbox_sandbox import payloads
from inbox_testkit.plugin import ApiClient
from inbox_testkit.polling import wait_until
from inbox_testkit.store import create_channel, record_webhook
from inbox_testkit.tenants import ACME_NUMBER, GLOBEX_NUMBER, Tokens, bearer
from inbox_testkit.webhooks import delivery_of, entries

pytestmark = pytest.mark.integration

SKIPPED = {
    ("get", "/api/health"): "no tenant data",
    ("get", "/api/ws"): "a WebSocket; its tenant isolation is tested in test_live.py",
}
# The kind of thing the {id} of each path names: the test calls it with globex's id of it.
ID_KINDS = {
    "/api/conversations/{id}": "conversation",
    "/api/channels/{id}": "channel",
    "/api/tokens/{id}": "token",
    "/api/admin/webhook-logs/{id}": "webhook_log",
    "/api/admin/alerts/{id}": "alert",
    "/api/campaigns/{id}": "campaign",
}
# A valid body of each request schema, so that a call gets past validation to the lookup.
BODIES: dict[str, Any] = {
    "AssignBody": {"agent_id": None},
    "LabelsBody": {"labels": ["acme-label"]},
    "NoteBody": {"body": "acme's note"},
    "OutgoingMessage": {"type": "text", "text": {"body": "acme's reply"}},
    "ChannelReconnect": {"access_token": "EAAG-acme-new-token"},
    "CampaignStart": {},
    "RecipientsAdd": {"recipients": [{"wa_id": "4910000009", "variables": {"name": "Ann"}}]},
}
GLOBEX_CAMPAIGN = "Globex's spring promo"
PATH_PARAMETER = re.compile(r"\{([^}]+)\}")
MIXED_GLOBEX_HALF = ("4930000003", "Gina Globex", "globex's half")
MIXED = entries(
    payloads.text_webhook(ACME_NUMBER, "4910000003", "Ari", "acme's half"),
    payloads.text_webhook(GLOBEX_NUMBER, *MIXED_GLOBEX_HALF),
)


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    spec: dict[str, Any]

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.path}"

    @property
    def kind(self) -> str:
        """``id`` (it names one thing), ``list`` (a GET of many) or ``create``."""
        if PATH_PARAMETER.search(self.path):
            return "id"
        return "list" if self.method == "get" else "create"

    @property
    def id_kind(self) -> str | None:
        names = PATH_PARAMETER.findall(self.path)
        if names != ["id"]:
            return None
        return ID_KINDS.get(self.path[: self.path.index("{id}") + len("{id}")])

    @property
    def body(self) -> Any:
        """A valid request body, ``None`` when the operation takes none; raises ``KeyError``
        for a schema without a sample."""
        content = self.spec.get("requestBody", {}).get("content", {})
        if not content:
            return None
        ref = content["application/json"]["schema"]["$ref"]
        return BODIES[ref.rsplit("/", 1)[1]]

    @property
    def query_parameters(self) -> list[str]:
        return [p["name"] for p in self.spec.get("parameters", []) if p["in"] == "query"]

    def documents(self, status: int) -> bool:
        return str(status) in self.spec["responses"]


async def operations(api: ApiClient) -> list[Operation]:
    response = await api.get("/api/openapi.json")
    assert response.status == 200
    doc = orjson.loads(await response.read())
    found = [
        Operation(method, path, spec)
        for path, methods in doc["paths"].items()
        for method, spec in methods.items()
    ]
    for skipped in SKIPPED:  # a skip that no longer matches a route must go
        assert skipped in {(op.method, op.path) for op in found}, skipped
    return [op for op in found if (op.method, op.path) not in SKIPPED]


# --- the two tenants ------------------------------------------------------------------------


@dataclass
class World:
    """Both tenants' data, and everything of globex's that acme must never see."""

    globex_ids: dict[str, str]  # kind → one of globex's ids of that kind
    markers: set[str]  # globex's ids, phones, names, texts, label, number, tenant name
    values: list[str]  # globex's values to put in acme's query parameters
    cursors: dict[str, str] = field(default_factory=dict)  # path → a cursor of globex's


async def call(api: ApiClient, op: Operation, token: str, ident: str) -> tuple[int, str, str]:
    """Call ``op`` with ``ident`` as its {id}; returns the status, the error code (empty on a
    success) and the body's text."""
    response = await api.request(
        op.method, op.path.replace("{id}", ident), json=op.body, headers=bearer(token)
    )
    text = await response.text()
    code = orjson.loads(text)["error"]["code"] if response.status >= 400 else ""
    return response.status, code, text


async def ok(api: ApiClient, method: str, path: str, token: str, body: Any = None) -> Any:
    response = await api.request(method, path, json=body, headers=bearer(token))
    assert response.status < 300, (method, path, await response.text())
    return await response.json()


async def writes_in(processor: WebhookProcessor, body: dict[str, Any]) -> None:
    assert await processor.process(delivery_of(body)) in (Outcome.PROCESSED, Outcome.FAILED)


def shown(text: str, markers: set[str], *, besides: str = "") -> list[str]:
    """The markers ``text`` shows (an input echoed back, ``besides``, does not count)."""
    if besides:
        text = text.replace(besides, "")
    return sorted(marker for marker in markers if marker in text)


async def snapshot(db: Database) -> dict[str, list[Document]]:
    return {
        name: await db[name].find({}).sort("_id", 1).to_list()
        for name in sorted(await db.list_collection_names())
    }


@pytest.fixture
async def app(settings: InboxApiSettings, db: Database) -> AsyncIterator[ApiClient]:
    """inbox-api receiving its live events; Meta is a port where nothing listens, so that a
    send that should never happen cannot reach anything."""
    unreachable = settings.model_copy(
        update={"whatsapp_api_base_url": f"http://127.0.0.1:{free_port()}"}
    )
    async with TestClient(TestServer(create_app(unreachable))) as client:

        async def bound() -> bool:
            return client.app[LIVE].bound

        await wait_until(bound, "inbox-api to bind its live queue", timeout=15)
        yield client


@pytest.fixture
async def world(
    app: ApiClient,
    db: Database,
    channel: Document,
    processor: WebhookProcessor,
    tokens: Tokens,
) -> World:
    globex_channel = await create_channel(db, tenant="globex", phone_number_id=GLOBEX_NUMBER)
    # Alerts of each tenant (globex: two, for a cursor) and one of the platform's, which a
    # tenant's admin must not see either.
    alerts = Alerts(db)
    await alerts.raise_alert(
        AlertKind.CHANNEL_QUIET,
        title="acme's number is quiet",
        subject=str(channel["_id"]),
        tenant="acme",
    )
    globex_alerts = [
        await alerts.raise_alert(
            kind,
            title=f"globex's {GLOBEX_NUMBER}: {kind.value}",
            subject=str(globex_channel["_id"]),
            tenant="globex",
            evidence={"phone_number_id": GLOBEX_NUMBER},
        )
        for kind in (AlertKind.CHANNEL_DISCONNECTED, AlertKind.CHANNEL_QUIET)
    ]
    platform_alert = await alerts.raise_alert(
        AlertKind.STORE_UNREACHABLE, title="the platform's store is unreachable"
    )
    await ok(app, "POST", "/api/agents", tokens.acme_admin, {"name": "Ann Acme"})
    for wa_id, name in (("4910000001", "Ada"), ("4910000002", "Abe")):
        await writes_in(
            processor, payloads.text_webhook(ACME_NUMBER, wa_id, name, f"hello from {name}")
        )
    people = {"4930000001": "Greta Globex", "4930000002": "Gunter Globex"}
    for wa_id, name in people.items():
        await writes_in(
            processor, payloads.text_webhook(GLOBEX_NUMBER, wa_id, name, f"secret of {name}")
        )
    # One body with an entry of each tenant (Meta batches the entries of an app's accounts).
    await writes_in(processor, MIXED)
    gus = await ok(app, "POST", "/api/agents", tokens.globex_admin, {"name": "Gus Globex"})
    conversations = (await ok(app, "GET", "/api/conversations", tokens.globex_agent))["items"]
    conversation = conversations[0]["id"]
    await ok(
        app, "POST", f"/api/conversations/{conversation}/assign", tokens.globex_agent,
        {"agent_id": gus["id"]},
    )  # fmt: skip
    await ok(
        app, "PUT", f"/api/conversations/{conversation}/labels", tokens.globex_agent,
        {"labels": ["globex-label"]},
    )  # fmt: skip
    messages = (
        await ok(app, "GET", f"/api/conversations/{conversation}/messages", tokens.globex_agent)
    )["items"]
    token_ids = [
        t["id"] for t in (await ok(app, "GET", "/api/tokens", tokens.globex_admin))["items"]
    ]
    logs = [
        log
        for log in (await ok(app, "GET", "/api/admin/webhook-logs", tokens.superadmin))["items"]
        if GLOBEX_NUMBER in log["phone_number_ids"]
    ]
    own_logs = [log for log in logs if log["phone_number_ids"] == [GLOBEX_NUMBER]]
    campaigns = [
        await campaign_of(app, tokens.globex_admin, globex_channel, GLOBEX_CAMPAIGN)
        for _ in range(2)
    ]
    await campaign_of(app, tokens.acme_admin, channel, "Acme's own campaign")
    globex_ids = {
        "conversation": conversation,
        "channel": str(globex_channel["_id"]),
        "token": token_ids[0],
        "webhook_log": own_logs[0]["id"],
        "alert": str(globex_alerts[0]["_id"]),
        "campaign": campaigns[0]["id"],
    }
    wa_ids = list(people)
    values = [
        *globex_ids.values(),
        gus["id"],
        wa_ids[0],
        f"US.{wa_ids[0]}",
        "Greta",
        "secret of",
        "globex-label",
        GLOBEX_NUMBER,
        "globex",
    ]
    markers = {
        *values,
        *(c["id"] for c in conversations),
        *(m["id"] for m in messages),
        *(m["wamid"] for m in messages),
        *token_ids,
        *(log["id"] for log in own_logs),
        *(log["sha256"] for log in own_logs),
        *MIXED_GLOBEX_HALF,
        *wa_ids,
        *people.values(),
        "Gus Globex",
        tokens.globex_admin,
        tokens.globex_agent,
        hash_token(tokens.globex_admin),
        hash_token(tokens.globex_agent),
        gus["token"],
        *(str(alert["_id"]) for alert in [*globex_alerts, platform_alert]),
        "the platform's store is unreachable",
        GLOBEX_CAMPAIGN,
        *(c["id"] for c in campaigns),
    }
    world = World(globex_ids, markers, values)
    paths = ("/api/conversations", "/api/admin/webhook-logs", "/api/admin/alerts", "/api/campaigns")
    for path in paths:
        page = await ok(app, "GET", f"{path}?limit=1", tokens.globex_admin)
        assert page["next_cursor"], path  # globex has two of each
        world.cursors[path] = page["next_cursor"]
    return world


async def campaign_of(api: ApiClient, token: str, channel: Document, name: str) -> Any:
    """A campaign of the token's tenant with one recipient, sent nowhere (a draft)."""
    body = {
        "name": name,
        "channel_id": str(channel["_id"]),
        "template": {"name": "promo", "language": {"code": "en"}},
        "recipients": [{"wa_id": "4930000001"}],
        "draft": True,
    }
    return await ok(api, "POST", "/api/campaigns", token, body)


# --- the walk -------------------------------------------------------------------------------


async def test_every_operation_is_placed(app: ApiClient) -> None:
    """An operation the walk cannot place fails here, naming what to decide."""
    undecided: list[str] = []
    for op in await operations(app):
        if op.kind == "id" and op.id_kind is None:
            undecided.append(f"{op}: no globex id of this kind is known; add it to ID_KINDS")
        if op.kind == "create" and (op.method, op.path) not in CREATIONS:
            undecided.append(f"{op}: no check of a creation into globex; add one to CREATIONS")
        if op.kind == "id":
            try:
                op.body  # noqa: B018 - a sample body must exist
            except KeyError as missing:
                undecided.append(f"{op}: no sample body of {missing}; add one to BODIES")
    assert undecided == []


async def test_another_tenants_ids_are_not_found_and_change_nothing(
    app: ApiClient, world: World, tokens: Tokens, db: Database
) -> None:
    globex_live = await app.ws_connect("/api/ws", headers=bearer(tokens.globex_agent))
    assert orjson.loads((await globex_live.receive(timeout=10)).data)["type"] == "ready"
    before = await snapshot(db)
    failures: list[str] = []
    walked = 0
    for op in await operations(app):
        if op.kind != "id" or op.id_kind is None:
            continue
        ident = world.globex_ids[op.id_kind]
        for who, token in (("admin", tokens.acme_admin), ("agent", tokens.acme_agent)):
            walked += 1
            status, code, text = await call(app, op, token, ident)
            nowhere = await call(app, op, token, str(ObjectId()))
            expected = {(404, "not_found")}
            if who == "agent" and op.documents(403):
                expected.add((403, "forbidden"))  # the role's refusal, whatever the id
            if (status, code) not in expected or (status, code) != nowhere[:2]:
                failures.append(
                    f"{op} as acme's {who} with globex's {op.id_kind}: {status} {code}, "
                    f"an id of nobody's: {nowhere[0]} {nowhere[1]}"
                )
            if leaked := shown(text, world.markers, besides=ident):
                failures.append(f"{op} as acme's {who}: the answer shows {leaked}")
            if await snapshot(db) != before:
                failures.append(f"{op} as acme's {who} changed the store")
                before = await snapshot(db)
    assert failures == []
    assert walked >= 2 * len(ID_KINDS)

    # Globex's own change comes after every call: it is the first thing globex's client hears.
    await ok(
        app, "POST", f"/api/conversations/{world.globex_ids['conversation']}/close",
        tokens.globex_agent,
    )  # fmt: skip
    message = await globex_live.receive(timeout=10)
    assert message.type is WSMsgType.TEXT
    event = orjson.loads(message.data)["event"]
    assert (event["type"], event["data"]["id"]) == (
        "conversation.updated",
        world.globex_ids["conversation"],
    )
    await globex_live.close()


async def test_listings_show_nothing_of_another_tenant_whatever_the_filter(
    app: ApiClient, world: World, tokens: Tokens
) -> None:
    failures: list[str] = []
    for op in await operations(app):
        if op.kind != "list":
            continue
        for who, token in (("admin", tokens.acme_admin), ("agent", tokens.acme_agent)):
            response = await app.get(op.path, headers=bearer(token))
            text = await response.text()
            if response.status == 403 and who == "agent" and op.documents(403):
                continue  # not the agent's to read at all
            if response.status != 200:
                failures.append(f"{op} as acme's {who}: {response.status} {text}")
                continue
            if not orjson.loads(text)["items"]:
                failures.append(f"{op} as acme's {who} lists nothing: give acme some")
            if leaked := shown(text, world.markers):
                failures.append(f"{op} as acme's {who} shows {leaked}")
            for name in op.query_parameters:
                values = world.values + ([world.cursors[op.path]] if name == "cursor" else [])
                for value in values:
                    filtered = await app.get(op.path, params={name: value}, headers=bearer(token))
                    text = await filtered.text()
                    if filtered.status >= 500:
                        failures.append(f"{op}?{name}={value} as acme's {who}: {text}")
                    elif leaked := shown(text, world.markers, besides=value):
                        failures.append(f"{op}?{name}={value} as acme's {who} shows {leaked}")
    assert failures == []


# --- creations ------------------------------------------------------------------------------


Creation = Callable[[ApiClient, World, Tokens, Database], Awaitable[list[str]]]


async def channel_into_globex(
    api: ApiClient, world: World, tokens: Tokens, db: Database
) -> list[str]:
    """A channel for globex, or globex's own number: refused, and nothing is stored."""
    failures: list[str] = []
    before = await snapshot(db)
    body = {
        "name": "Sneaky",
        "phone_number_id": "123456789012345",
        "waba_id": "102290129340398",
        "display_phone_number": "+1 555 010 0000",
        "access_token": "EAAG-acme",
    }
    tries = [
        (tokens.acme_admin, {**body, "tenant": "globex"}, 403),
        (tokens.acme_agent, {**body, "tenant": "globex"}, 403),
        (tokens.acme_agent, body, 403),
        # The number is taken, and says no more than that (not whose, not its id).
        (tokens.acme_admin, {**body, "phone_number_id": GLOBEX_NUMBER}, 409),
    ]
    for token, sent, status in tries:
        response = await api.post("/api/channels", json=sent, headers=bearer(token))
        text = await response.text()
        if response.status != status:
            failures.append(f"POST /api/channels {sent}: {response.status} {text}")
        if leaked := shown(text, world.markers, besides=sent["phone_number_id"]):
            failures.append(f"POST /api/channels {sent} shows {leaked}")
    if await snapshot(db) != before:
        failures.append("POST /api/channels into globex changed the store")
    return failures


async def agent_into_globex(
    api: ApiClient, world: World, tokens: Tokens, db: Database
) -> list[str]:
    """An agent is created in the creator's tenant only; globex's names are no obstacle."""
    failures: list[str] = []
    globex_agents = await ok(api, "GET", "/api/agents", tokens.globex_admin)
    forced = await api.post(
        "/api/agents", json={"name": "Mole", "tenant": "globex"}, headers=bearer(tokens.acme_admin)
    )
    if forced.status != 422:
        failures.append(f"POST /api/agents with a tenant: {forced.status} {await forced.text()}")
    by_agent = await api.post(
        "/api/agents", json={"name": "Mole"}, headers=bearer(tokens.acme_agent)
    )
    if by_agent.status != 403:
        failures.append(f"POST /api/agents by an agent: {by_agent.status}")
    same_name = await api.post(
        "/api/agents", json={"name": "Gus Globex"}, headers=bearer(tokens.acme_admin)
    )
    created = await same_name.json()
    if same_name.status != 201 or created.get("tenant") != "acme":
        failures.append(f"POST /api/agents named as globex's: {same_name.status} {created}")
    if await ok(api, "GET", "/api/agents", tokens.globex_admin) != globex_agents:
        failures.append("POST /api/agents by acme changed globex's agents")
    return failures


async def replay_into_globex(
    api: ApiClient, world: World, tokens: Tokens, db: Database
) -> list[str]:
    """A replay by filter takes the caller's own events only: globex's failed event is
    neither replayed nor counted, whether acme names globex's number or not; and an agent may
    not replay at all."""
    failures: list[str] = []
    path = "/api/admin/webhook-logs/replay"
    late = payloads.text_webhook(GLOBEX_NUMBER, "4930000009", "Gail Globex", "globex's late one")
    error = {"code": "unknown_channel", "message": "no channel had the number then"}
    await record_webhook(
        db, delivery_of(late), status="failed", phone_number_ids=[GLOBEX_NUMBER], error=error
    )
    before = await snapshot(db)
    for body in ({}, {"phone_number_id": GLOBEX_NUMBER}, {"reason": "unknown_channel"}):
        response = await api.post(path, json=body, headers=bearer(tokens.acme_admin))
        text = await response.text()
        if response.status != 202 or orjson.loads(text) != {"replayed": 0, "matched": 0}:
            failures.append(f"POST {path} {body} as acme's admin: {response.status} {text}")
    by_agent = await api.post(path, json={}, headers=bearer(tokens.acme_agent))
    if by_agent.status != 403:
        failures.append(f"POST {path} by acme's agent: {by_agent.status}")
    if await snapshot(db) != before:
        failures.append(f"POST {path} by acme changed the store")
    return failures


async def campaign_into_globex(
    api: ApiClient, world: World, tokens: Tokens, db: Database
) -> list[str]:
    """A campaign is created in the creator's tenant, from its own channels only: globex's
    channel is unknown to acme, a tenant field is refused, and an agent creates none."""
    failures: list[str] = []
    before = await snapshot(db)
    body = {
        "name": "Sneaky",
        "channel_id": world.globex_ids["channel"],
        "template": {"name": "promo", "language": {"code": "en"}},
        "draft": True,
    }
    tries = [
        (tokens.acme_admin, body, 422, "unknown_channel"),
        (tokens.acme_admin, {**body, "tenant": "globex"}, 422, "validation_error"),
        (tokens.acme_agent, body, 403, "forbidden"),
    ]
    for token, sent, status, code in tries:
        response = await api.post("/api/campaigns", json=sent, headers=bearer(token))
        text = await response.text()
        if (response.status, orjson.loads(text)["error"]["code"]) != (status, code):
            failures.append(f"POST /api/campaigns {sent}: {response.status} {text}")
        if leaked := shown(text, world.markers, besides=str(sent["channel_id"])):
            failures.append(f"POST /api/campaigns {sent} shows {leaked}")
    if await snapshot(db) != before:
        failures.append("POST /api/campaigns into globex changed the store")
    return failures


CREATIONS: dict[tuple[str, str], Creation] = {
    ("post", "/api/campaigns"): campaign_into_globex,
    ("post", "/api/channels"): channel_into_globex,
    ("post", "/api/agents"): agent_into_globex,
    ("post", "/api/admin/webhook-logs/replay"): replay_into_globex,
}


async def test_creating_cannot_reach_into_another_tenant(
    app: ApiClient, world: World, tokens: Tokens, db: Database
) -> None:
    failures: list[str] = []
    for op in await operations(app):
        if op.kind == "create":
            failures += await CREATIONS[(op.method, op.path)](app, world, tokens, db)
    assert failures == []


# --- a webhook of both tenants --------------------------------------------------------------


async def test_a_webhook_that_carried_both_tenants_shows_each_admin_only_their_part(
    app: ApiClient, world: World, tokens: Tokens
) -> None:
    sha256 = delivery_of(MIXED).sha256
    raw = orjson.dumps(MIXED).decode()
    for admin, own, other in (
        (tokens.acme_admin, ACME_NUMBER, GLOBEX_NUMBER),
        (tokens.globex_admin, GLOBEX_NUMBER, ACME_NUMBER),
    ):
        listing = (await ok(app, "GET", "/api/admin/webhook-logs", admin))["items"]
        [event] = [e for e in listing if e["sha256"] == sha256]
        assert event["phone_number_ids"] == [own]
        detail = await ok(app, "GET", f"/api/admin/webhook-logs/{event['id']}", admin)
        assert detail["phone_number_ids"] == [own]
        assert detail["body_filtered"] is True
        body = orjson.loads(detail["body"])
        numbers = [
            change["value"]["metadata"]["phone_number_id"]
            for entry in body["entry"]
            for change in entry["changes"]
        ]
        assert numbers == [own]
        assert other not in detail["body"]
    [event] = [
        e
        for e in (await ok(app, "GET", "/api/admin/webhook-logs", tokens.superadmin))["items"]
        if e["sha256"] == sha256
    ]
    whole = await ok(app, "GET", f"/api/admin/webhook-logs/{event['id']}", tokens.superadmin)
    assert (whole["body"], whole["body_filtered"]) == (raw, False)
    assert whole["phone_number_ids"] == [ACME_NUMBER, GLOBEX_NUMBER]
