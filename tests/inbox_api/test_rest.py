"""The REST API served by the real app (aiohttp TestServer) over the real store and broker."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiohttp import ClientResponse
from bson import ObjectId

from inbox_api.consumer.service import Outcome, WebhookProcessor
from inbox_common.store.client import Database, Document
from inbox_common.store.schema import CHANNELS, CONVERSATIONS
from inbox_sandbox import payloads
from inbox_testkit.plugin import ApiClient
from inbox_testkit.polling import wait_until
from inbox_testkit.store import cipher, create_channel, store_message
from inbox_testkit.tenants import (
    ACME_NUMBER,
    ACME_SECOND_NUMBER,
    GLOBEX_NUMBER,
    UNKNOWN_NUMBER,
    Tokens,
    bearer,
)
from inbox_testkit.webhooks import delivery_of

pytestmark = pytest.mark.integration

T0 = 1_700_000_000
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$")
CHANNEL_BODY = {
    "name": "Sales",
    "phone_number_id": "123456789012345",
    "waba_id": "102290129340398",
    "display_phone_number": "+1 555 010 0000",
    "access_token": "EAAG-very-secret-token",
}


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, tz=UTC)


async def error_of(response: ClientResponse, status: int) -> dict[str, Any]:
    """Assert the status and the one error shape; return the error object."""
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert isinstance(error["code"], str)
    assert isinstance(error["message"], str)
    assert error["message"]
    return error


async def get_json(client: ApiClient, path: str, token: str) -> Any:
    response = await client.get(path, headers=bearer(token))
    assert response.status == 200, await response.text()
    return await response.json()


async def deliver(processor: WebhookProcessor, body: dict[str, Any]) -> None:
    assert await processor.process(delivery_of(body)) is Outcome.PROCESSED


async def text_from(
    processor: WebhookProcessor,
    wa_id: str,
    text: str,
    seconds: int,
    *,
    number: str = ACME_NUMBER,
    name: str = "Ann",
    reply_to: str | None = None,
) -> str:
    wamid = payloads.new_wamid()
    await deliver(
        processor,
        payloads.webhook(
            number,
            contacts=[payloads.contact(wa_id, name)],
            messages=[
                payloads.text_message(wa_id, wamid, text, timestamp=T0 + seconds, reply_to=reply_to)
            ],
        ),
    )
    return wamid


# --- authentication and errors --------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-header"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="wrong-scheme"),
        pytest.param({"Authorization": "Bearer "}, id="empty-token"),
        pytest.param({"Authorization": "Bearer wai_not-a-real-token"}, id="unknown-token"),
    ],
)
async def test_the_api_needs_a_valid_bearer_token(api: ApiClient, headers: dict[str, str]) -> None:
    for path in ("/api/conversations", "/api/channels", "/api/admin/webhook-logs"):
        error = await error_of(await api.get(path, headers=headers), 401)
        assert error["code"] == "unauthorized"


async def test_an_unknown_route_is_a_json_404(api: ApiClient, tokens: Tokens) -> None:
    error = await error_of(
        await api.get("/api/nothing-here", headers=bearer(tokens.acme_agent)), 404
    )
    assert error["code"] == "not_found"
    await error_of(await api.get("/nowhere"), 404)


async def test_a_wrong_method_is_a_json_405(api: ApiClient, tokens: Tokens) -> None:
    response = await api.delete("/api/channels", headers=bearer(tokens.acme_admin))
    error = await error_of(response, 405)
    assert error["code"] == "method_not_allowed"
    assert "GET" in response.headers["Allow"]


# --- channels -------------------------------------------------------------------------------


async def test_an_admin_creates_a_channel_and_its_token_never_comes_back(
    api: ApiClient, tokens: Tokens, db: Database
) -> None:
    response = await api.post("/api/channels", json=CHANNEL_BODY, headers=bearer(tokens.acme_admin))

    assert response.status == 201, await response.text()
    created = await response.json()
    assert "access_token" not in created
    assert "EAAG" not in await response.text()
    assert created["tenant"] == "acme"
    assert created["status"] == "connected"
    assert {k: created[k] for k in ("name", "phone_number_id", "waba_id")} == {
        k: CHANNEL_BODY[k] for k in ("name", "phone_number_id", "waba_id")
    }
    assert ISO_UTC.match(created["created_at"])
    stored = await db[CHANNELS].find_one({"_id": ObjectId(created["id"])})
    assert stored is not None
    # Encrypted at rest; the configured key reads it back.
    assert CHANNEL_BODY["access_token"] not in stored["access_token"]
    assert stored["access_token"].startswith("fernet:")
    assert cipher().decrypt(stored["access_token"]) == CHANNEL_BODY["access_token"]

    listed = await api.get("/api/channels", headers=bearer(tokens.acme_agent))
    assert "EAAG" not in await listed.text()
    page = await listed.json()
    assert [c["id"] for c in page["items"]] == [created["id"]]
    assert page["next_cursor"] is None
    assert (await get_json(api, "/api/channels", tokens.globex_admin))["items"] == []
    everyone = await get_json(api, "/api/channels", tokens.superadmin)
    assert [c["id"] for c in everyone["items"]] == [created["id"]]


async def test_a_duplicate_phone_number_id_conflicts(api: ApiClient, tokens: Tokens) -> None:
    first = await api.post("/api/channels", json=CHANNEL_BODY, headers=bearer(tokens.acme_admin))
    assert first.status == 201

    again = await api.post("/api/channels", json=CHANNEL_BODY, headers=bearer(tokens.globex_admin))

    error = await error_of(again, 409)
    assert error["code"] == "conflict"
    assert error["details"] == {"field": "phone_number_id"}


async def test_an_agent_cannot_create_a_channel(
    api: ApiClient, tokens: Tokens, db: Database
) -> None:
    response = await api.post("/api/channels", json=CHANNEL_BODY, headers=bearer(tokens.acme_agent))

    error = await error_of(response, 403)
    assert error["code"] == "forbidden"
    assert await db[CHANNELS].count_documents({}) == 0


async def test_only_a_superadmin_creates_a_channel_for_another_tenant(
    api: ApiClient, tokens: Tokens
) -> None:
    body = {**CHANNEL_BODY, "tenant": "globex"}

    refused = await api.post("/api/channels", json=body, headers=bearer(tokens.acme_admin))
    await error_of(refused, 403)
    created = await api.post("/api/channels", json=body, headers=bearer(tokens.superadmin))
    assert created.status == 201
    assert (await created.json())["tenant"] == "globex"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param({"phone_number_id": "12ab"}, "phone_number_id", id="bad-number"),
        pytest.param({"name": ""}, "name", id="empty-name"),
        pytest.param({"access_token": None}, "access_token", id="null-token"),
        pytest.param({"unexpected": 1}, "unexpected", id="extra-field"),
    ],
)
async def test_an_invalid_channel_body_is_422_naming_the_field(
    api: ApiClient, tokens: Tokens, change: dict[str, Any], field: str
) -> None:
    body = {**CHANNEL_BODY, **change}

    response = await api.post("/api/channels", json=body, headers=bearer(tokens.acme_admin))

    error = await error_of(response, 422)
    assert error["code"] == "validation_error"
    assert field in [d["field"] for d in error["details"]]
    assert "EAAG" not in orjson.dumps(error).decode()


async def test_a_missing_field_is_422(api: ApiClient, tokens: Tokens) -> None:
    body = {k: v for k, v in CHANNEL_BODY.items() if k != "waba_id"}

    response = await api.post("/api/channels", json=body, headers=bearer(tokens.acme_admin))

    error = await error_of(response, 422)
    assert [d["field"] for d in error["details"]] == ["waba_id"]


async def test_a_body_that_is_not_json_is_400(api: ApiClient, tokens: Tokens) -> None:
    response = await api.post(
        "/api/channels",
        data=b"name=Sales",
        headers={**bearer(tokens.acme_admin), "Content-Type": "application/json"},
    )

    error = await error_of(response, 400)
    assert error["code"] == "invalid_json"


# --- conversations --------------------------------------------------------------------------

CONVERSATION_KEYS = {
    "id",
    "channel_id",
    "contact",
    "status",
    "unread_count",
    "last_message_at",
    "last_message_preview",
}


async def test_the_conversation_list_has_the_agreed_shape(
    api: ApiClient, tokens: Tokens, processor: WebhookProcessor, channel: Document
) -> None:
    await text_from(processor, "4915550001", "first", 0, name="Ann")
    await text_from(processor, "4915550001", "second", 1, name="Ann")

    page = await get_json(api, "/api/conversations", tokens.acme_agent)

    assert set(page) == {"items", "next_cursor"}
    [item] = page["items"]
    assert set(item) >= CONVERSATION_KEYS
    assert item["channel_id"] == str(channel["_id"])
    assert item["contact"] == {
        "wa_id": "4915550001",
        "user_id": "US.4915550001",
        "username": None,
        "name": "Ann",
    }
    assert item["status"] == "open"
    assert item["unread_count"] == 2
    assert item["last_message_preview"] == "second"
    assert ISO_UTC.match(item["last_message_at"])
    assert item["last_message_at"].startswith("2023-11-14T22:13:21")
    assert page["next_cursor"] is None


async def test_conversations_page_newest_first_without_repeats(
    api: ApiClient, tokens: Tokens, processor: WebhookProcessor, channel: Document
) -> None:
    # Pairs share a timestamp, so the cursor must break ties by id.
    for i in range(7):
        await text_from(processor, f"49155500{i:02d}", f"hello {i}", i // 2)

    seen: list[dict[str, Any]] = []
    sizes = []
    path = "/api/conversations?limit=3"
    while True:
        page = await get_json(api, path, tokens.acme_agent)
        sizes.append(len(page["items"]))
        seen.extend(page["items"])
        if page["next_cursor"] is None:
            break
        path = f"/api/conversations?limit=3&cursor={page['next_cursor']}"

    assert sizes == [3, 3, 1]
    assert len({c["id"] for c in seen}) == 7
    times = [c["last_message_at"] for c in seen]
    assert times == sorted(times, reverse=True)
    assert seen[0]["last_message_preview"] == "hello 6"


async def test_conversations_filter_by_status_channel_and_wa_id(
    api: ApiClient, tokens: Tokens, processor: WebhookProcessor, channel: Document, db: Database
) -> None:
    second = await create_channel(db, tenant="acme", phone_number_id=ACME_SECOND_NUMBER)
    await text_from(processor, "4910000001", "a", 0)
    await text_from(processor, "4910000002", "b", 1)
    await text_from(processor, "4910000003", "c", 2, number=ACME_SECOND_NUMBER)
    await db[CONVERSATIONS].update_one({"wa_id": "4910000002"}, {"$set": {"status": "closed"}})

    async def wa_ids(query: str) -> list[str]:
        page = await get_json(api, f"/api/conversations?{query}", tokens.acme_agent)
        return [c["contact"]["wa_id"] for c in page["items"]]

    assert await wa_ids("status=open") == ["4910000003", "4910000001"]
    assert await wa_ids("status=closed") == ["4910000002"]
    assert await wa_ids(f"channel_id={second['_id']}") == ["4910000003"]
    assert await wa_ids(f"channel_id={channel['_id']}") == ["4910000002", "4910000001"]
    assert await wa_ids("wa_id=4910000001") == ["4910000001"]
    assert await wa_ids("wa_id=4910000001&status=closed") == []


async def test_conversations_are_confined_to_the_tenant(
    api: ApiClient, tokens: Tokens, processor: WebhookProcessor, channel: Document, db: Database
) -> None:
    await create_channel(db, tenant="globex", phone_number_id=GLOBEX_NUMBER)
    await text_from(processor, "4910000001", "acme", 0)
    await text_from(processor, "4910000002", "globex", 1, number=GLOBEX_NUMBER)

    acme = await get_json(api, "/api/conversations", tokens.acme_agent)
    globex = await get_json(api, "/api/conversations", tokens.globex_agent)
    everyone = await get_json(api, "/api/conversations", tokens.superadmin)

    assert [c["last_message_preview"] for c in acme["items"]] == ["acme"]
    assert [c["last_message_preview"] for c in globex["items"]] == ["globex"]
    assert [c["last_message_preview"] for c in everyone["items"]] == ["globex", "acme"]


async def test_one_conversation_by_id(
    api: ApiClient, tokens: Tokens, processor: WebhookProcessor, channel: Document, db: Database
) -> None:
    await text_from(processor, "4910000001", "hi", 0)
    [listed] = (await get_json(api, "/api/conversations", tokens.acme_agent))["items"]

    one = await get_json(api, f"/api/conversations/{listed['id']}", tokens.acme_agent)

    assert one == listed
    other = await api.get(f"/api/conversations/{listed['id']}", headers=bearer(tokens.globex_admin))
    assert (await error_of(other, 404))["code"] == "not_found"
    for bad in ("not-an-id", str(ObjectId())):
        response = await api.get(f"/api/conversations/{bad}", headers=bearer(tokens.acme_agent))
        await error_of(response, 404)
    superadmin = await get_json(api, f"/api/conversations/{listed['id']}", tokens.superadmin)
    assert superadmin["id"] == listed["id"]


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=201", "limit=ten", "cursor=%%%", "cursor=WzEsMl0"],
)
async def test_bad_paging_parameters_are_400(api: ApiClient, tokens: Tokens, query: str) -> None:
    response = await api.get(f"/api/conversations?{query}", headers=bearer(tokens.acme_agent))

    error = await error_of(response, 400)
    assert error["code"] in {"invalid_limit", "invalid_cursor"}


# --- messages -------------------------------------------------------------------------------


async def test_messages_page_oldest_first_and_the_cursor_walks_back(
    api: ApiClient, tokens: Tokens, processor: WebhookProcessor, channel: Document
) -> None:
    wamids = [await text_from(processor, "4910000001", f"m{i}", i) for i in range(5)]
    [conv] = (await get_json(api, "/api/conversations", tokens.acme_agent))["items"]

    pages: list[list[str]] = []
    path = f"/api/conversations/{conv['id']}/messages?limit=2"
    while True:
        page = await get_json(api, path, tokens.acme_agent)
        pages.append([m["wamid"] for m in page["items"]])
        if page["next_cursor"] is None:
            break
        path = f"/api/conversations/{conv['id']}/messages?limit=2&cursor={page['next_cursor']}"

    assert pages == [wamids[3:5], wamids[1:3], wamids[0:1]]


async def test_messages_carry_content_reply_statuses_and_reactions(
    api: ApiClient, tokens: Tokens, processor: WebhookProcessor, channel: Document, db: Database
) -> None:
    wa_id = "4910000001"
    question = await text_from(processor, wa_id, "Is it in stock?", 0)
    image = payloads.new_wamid()
    await deliver(
        processor,
        payloads.webhook(
            ACME_NUMBER,
            contacts=[payloads.contact(wa_id, "Ann")],
            messages=[
                payloads.media_message(
                    "image", wa_id, image, caption="this one", timestamp=T0 + 1, reply_to=question
                ),
                payloads.reaction_message(
                    wa_id, payloads.new_wamid(), question, "🙏", timestamp=T0 + 2
                ),
            ],
        ),
    )
    answer = payloads.new_wamid()
    outbound = {
        "wamid": answer,
        "direction": "outbound",
        "type": "text",
        "content": {"body": "Yes!"},
        "timestamp": at(3),
    }
    conversation_id = await store_message(
        db, channel, wa_id, outbound, preview="Yes!", inbound=False, status="pending"
    )
    error = payloads.meta_error(131026, "Message undeliverable", "Receiver is incapable")
    await deliver(
        processor,
        payloads.webhook(
            ACME_NUMBER,
            statuses=[
                payloads.status(answer, "sent", wa_id, timestamp=T0 + 4),
                payloads.status(answer, "failed", wa_id, timestamp=T0 + 5, errors=[error]),
            ],
        ),
    )

    page = await get_json(api, f"/api/conversations/{conversation_id}/messages", tokens.acme_agent)

    by_wamid = {m["wamid"]: m for m in page["items"]}
    assert [m["wamid"] for m in page["items"]] == [question, image, answer]
    first = by_wamid[question]
    assert first["content"] == {"body": "Is it in stock?"}
    assert (first["direction"], first["type"], first["reply_to"]) == ("inbound", "text", None)
    assert [(r["by"], r["emoji"]) for r in first["reactions"]] == [(wa_id, "🙏")]
    assert by_wamid[image]["reply_to"] == question
    assert by_wamid[image]["content"]["caption"] == "this one"
    sent = by_wamid[answer]
    assert (sent["direction"], sent["status"]) == ("outbound", "failed")
    assert [s["status"] for s in sent["statuses"]] == ["sent", "failed"]
    assert sent["statuses"][1]["errors"][0]["error_data"]["details"] == "Receiver is incapable"
    for item in page["items"]:
        assert ISO_UTC.match(item["timestamp"]), item["timestamp"]
        for entry in [*item["statuses"], *item["reactions"]]:
            assert ISO_UTC.match(entry["timestamp"]), entry
    assert by_wamid[question]["timestamp"].startswith("2023-11-14T22:13:20")


async def test_messages_of_another_tenants_conversation_are_404(
    api: ApiClient, tokens: Tokens, processor: WebhookProcessor, channel: Document
) -> None:
    await text_from(processor, "4910000001", "private", 0)
    [conv] = (await get_json(api, "/api/conversations", tokens.acme_agent))["items"]

    response = await api.get(
        f"/api/conversations/{conv['id']}/messages", headers=bearer(tokens.globex_agent)
    )

    await error_of(response, 404)
    assert "private" not in await response.text()


# --- webhook logs ---------------------------------------------------------------------------


@pytest.fixture
async def webhook_events(
    processor: WebhookProcessor, channel: Document, db: Database
) -> dict[str, bytes]:
    """One event of each kind: acme ok, acme + unknown number (failed), globex ok, garbage."""
    await create_channel(db, tenant="globex", phone_number_id=GLOBEX_NUMBER)
    bodies = {
        "acme": payloads.text_webhook(ACME_NUMBER, "4910000001", "Ann", "hi", timestamp=T0),
        "mixed": {
            "object": "whatsapp_business_account",
            "entry": [
                *payloads.text_webhook(ACME_NUMBER, "4910000002", "Bo", "x", timestamp=T0)["entry"],
                *payloads.text_webhook(UNKNOWN_NUMBER, "4910000003", "Cy", "y", timestamp=T0)[
                    "entry"
                ],
            ],
        },
        "globex": payloads.text_webhook(GLOBEX_NUMBER, "4910000004", "Di", "hey", timestamp=T0),
    }
    raw = {name: orjson.dumps(body) for name, body in bodies.items()}
    raw["garbage"] = b"\x00 not json"
    for body in raw.values():
        await processor.process(delivery_of(body))
    return raw


async def _logs(api: ApiClient, token: str, query: str = "") -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await get_json(api, f"/api/admin/webhook-logs{query}", token))[
        "items"
    ]
    return items


async def test_webhook_logs_are_scoped_to_the_admins_channels(
    api: ApiClient, tokens: Tokens, webhook_events: dict[str, bytes]
) -> None:
    sha = {name: delivery_of(body).sha256 for name, body in webhook_events.items()}

    acme = await _logs(api, tokens.acme_admin)
    globex = await _logs(api, tokens.globex_admin)
    everyone = await _logs(api, tokens.superadmin)

    assert {e["sha256"] for e in acme} == {sha["acme"], sha["mixed"]}
    assert {e["sha256"] for e in globex} == {sha["globex"]}
    assert {e["sha256"] for e in everyone} == set(sha.values())
    assert everyone[0]["sha256"] == sha["garbage"]  # newest first
    for event in everyone:
        assert "body" not in event
        assert ISO_UTC.match(event["received_at"])


async def test_webhook_logs_filter_by_status(
    api: ApiClient, tokens: Tokens, webhook_events: dict[str, bytes]
) -> None:
    sha = {name: delivery_of(body).sha256 for name, body in webhook_events.items()}

    failed = await _logs(api, tokens.superadmin, "?status=failed")
    acme_failed = await _logs(api, tokens.acme_admin, "?status=failed")
    processed = await _logs(api, tokens.superadmin, "?status=processed")

    assert {e["sha256"] for e in failed} == {sha["mixed"], sha["garbage"]}
    assert {e["status"] for e in failed} == {"failed"}
    assert [e["sha256"] for e in acme_failed] == [sha["mixed"]]
    assert acme_failed[0]["error"]["code"] == "unknown_channel"
    assert {e["sha256"] for e in processed} == {sha["acme"], sha["globex"]}
    bad = await api.get("/api/admin/webhook-logs?status=lost", headers=bearer(tokens.superadmin))
    assert (await error_of(bad, 400))["code"] == "invalid_status"


async def test_webhook_logs_page_with_a_cursor(
    api: ApiClient, tokens: Tokens, webhook_events: dict[str, bytes]
) -> None:
    seen: list[str] = []
    path = "/api/admin/webhook-logs?limit=3"
    while True:
        page = await get_json(api, path, tokens.superadmin)
        seen.extend(e["id"] for e in page["items"])
        if page["next_cursor"] is None:
            break
        path = f"/api/admin/webhook-logs?limit=3&cursor={page['next_cursor']}"

    assert len(seen) == len(set(seen)) == len(webhook_events)


async def test_agents_cannot_read_webhook_logs(
    api: ApiClient, tokens: Tokens, webhook_events: dict[str, bytes]
) -> None:
    [event, *_] = await _logs(api, tokens.superadmin)
    for path in ("/api/admin/webhook-logs", f"/api/admin/webhook-logs/{event['id']}"):
        response = await api.get(path, headers=bearer(tokens.acme_agent))
        assert (await error_of(response, 403))["code"] == "forbidden"


async def test_a_webhook_log_shows_its_raw_body(
    api: ApiClient, tokens: Tokens, webhook_events: dict[str, bytes]
) -> None:
    by_sha = {e["sha256"]: e for e in await _logs(api, tokens.superadmin)}
    acme = by_sha[delivery_of(webhook_events["acme"]).sha256]
    garbage = by_sha[delivery_of(webhook_events["garbage"]).sha256]

    detail = await get_json(api, f"/api/admin/webhook-logs/{acme['id']}", tokens.acme_admin)

    assert detail["body"] == webhook_events["acme"].decode()
    assert detail["status"] == "processed"
    assert detail["body_bytes"] == len(webhook_events["acme"])
    assert detail["attempts"] == 1
    shown = await get_json(api, f"/api/admin/webhook-logs/{garbage['id']}", tokens.superadmin)
    assert shown["body"].endswith(" not json")
    assert shown["error"]["code"] == "invalid_payload:invalid_json"
    hidden = await api.get(
        f"/api/admin/webhook-logs/{acme['id']}", headers=bearer(tokens.globex_admin)
    )
    await error_of(hidden, 404)
    missing = await api.get("/api/admin/webhook-logs/zzz", headers=bearer(tokens.superadmin))
    await error_of(missing, 404)


# --- operations endpoints -------------------------------------------------------------------


async def test_openapi_documents_every_api_route(api: ApiClient) -> None:
    response = await api.get("/api/openapi.json")

    assert response.status == 200
    doc = orjson.loads(await response.read())
    assert doc["openapi"] == "3.1.0"
    api_routes = set()
    for resource in api.app.router.resources():
        info = resource.get_info()
        path = str(info.get("formatter") or info.get("path"))
        # The document itself and the page that browses it are not operations.
        if path.startswith("/api/") and not path.startswith(("/api/openapi.json", "/api/docs")):
            api_routes |= {(r.method.lower(), path) for r in resource if r.method != "HEAD"}
    assert api_routes
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert api_routes <= documented, api_routes - documented
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for ref in re.findall(
                r'"\$ref":"#/components/schemas/([^"]+)"', orjson.dumps(op).decode()
            ):
                assert ref in doc["components"]["schemas"], (path, method, ref)


async def test_health_reports_the_store_and_the_broker(api: ApiClient) -> None:
    async def healthy() -> bool:
        response = await api.get("/api/health")
        return response.status == 200 and (await response.json())["status"] == "ok"

    await wait_until(healthy, "inbox-api to report ok", timeout=10)
    report = await (await api.get("/api/health")).json()

    assert report["service"] == "inbox-api"
    assert {"mongodb", "rabbitmq"} <= set(report["checks"])
    assert report["checks"]["mongodb"]["status"] == "ok"
    assert report["checks"]["rabbitmq"]["status"] == "ok"
    assert "guest" not in orjson.dumps(report).decode()


async def test_livez_and_metrics_need_no_token(api: ApiClient, tokens: Tokens) -> None:
    assert (await api.get("/livez")).status == 200
    await api.get("/api/conversations", headers=bearer(tokens.acme_agent))

    response = await api.get("/metrics")

    assert response.status == 200
    text = await response.text()
    assert "http_requests_total" in text
    assert 'route="/api/conversations"' in text
