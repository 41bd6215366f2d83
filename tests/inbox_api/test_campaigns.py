"""Template campaigns end to end: the API, the fan-out in pages, the rate-aware senders, the
Cloud API sandbox (whose ledger is the truth of what "Meta" received) and the status
webhooks that fill the funnel."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from bson import ObjectId

from inbox_api.app import create_app
from inbox_api.settings import InboxApiSettings
from inbox_common.store.client import Database, Document
from inbox_common.store.schema import ALERTS, CHANNELS, MESSAGES
from inbox_testkit.agent import healthy, writes_in
from inbox_testkit.plugin import ApiClient
from inbox_testkit.polling import wait_until
from inbox_testkit.sandbox import Sandbox, run_sandbox, sandbox_number
from inbox_testkit.tenants import ACME_NUMBER, Tokens, bearer

pytestmark = pytest.mark.integration

TOKEN = f"EAAG-secret-{ACME_NUMBER}"
TEMPLATE = {
    "name": "order_update",
    "language": {"code": "en_US"},
    "components": [
        {"type": "body", "parameters": [{"type": "text", "text": "{{name}}"}]},
    ],
}


def numbers(count: int, start: int = 0) -> list[str]:
    return [f"6281{start + i:09d}" for i in range(count)]


@pytest.fixture
async def cloud(ingest_url: str) -> AsyncIterator[Sandbox]:
    async with run_sandbox(
        ingest_url, [sandbox_number(ACME_NUMBER, TOKEN)], sandbox_status_delays_ms="20,60,100"
    ) as sandbox:
        yield sandbox


async def started(settings: InboxApiSettings, cloud: Sandbox, **overrides: Any) -> ApiClient:
    wired = settings.model_copy(
        update={
            "whatsapp_api_base_url": cloud.url,
            "campaign_scheduler_seconds": 0.2,
            "campaign_page_size": 7,
            **overrides,
        }
    )
    client: ApiClient = TestClient(TestServer(create_app(wired)))
    await client.start_server()
    await healthy(client)
    return client


@pytest.fixture
async def app(
    settings: InboxApiSettings, cloud: Sandbox, channel: Document, db: Database
) -> AsyncIterator[ApiClient]:
    client = await started(settings, cloud)
    try:
        yield client
    finally:
        await client.close()


async def create(
    api: ApiClient, token: str, channel: Document, **body: Any
) -> tuple[int, dict[str, Any]]:
    payload = {"name": "October orders", "channel_id": str(channel["_id"]), "template": TEMPLATE}
    answer = await api.post("/api/campaigns", json={**payload, **body}, headers=bearer(token))
    return answer.status, await answer.json()


async def campaign_of(api: ApiClient, token: str, campaign_id: str) -> dict[str, Any]:
    answer = await api.get(f"/api/campaigns/{campaign_id}", headers=bearer(token))
    assert answer.status == 200, await answer.text()
    return dict(await answer.json())


async def until_campaign(
    api: ApiClient, token: str, campaign_id: str, what: str, check: Any, within: float = 20
) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    async def holds() -> bool:
        seen[:] = [await campaign_of(api, token, campaign_id)]
        return bool(check(seen[0]))

    try:
        await wait_until(holds, what, timeout=within)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the campaign: {seen[0] if seen else None}") from None
    return seen[0]


async def alert_of(db: Database, campaign_id: str) -> Document:
    """The campaign's ``campaign_paused`` alert (raised just after the pause is stored)."""
    found: list[Document] = []

    async def raised() -> bool:
        alert = await db[ALERTS].find_one({"kind": "campaign_paused", "subject": campaign_id})
        found[:] = [alert] if alert else []
        return bool(found)

    await wait_until(raised, f"the campaign_paused alert of {campaign_id}")
    return found[0]


async def sent_by_recipient(cloud: Sandbox) -> Counter[str]:
    return Counter(s["request"]["to"] for s in await cloud.sent(phone_number_id=ACME_NUMBER))


async def test_a_campaign_reaches_every_recipient_once_and_its_funnel_fills(
    app: ApiClient, cloud: Sandbox, tokens: Tokens, channel: Document
) -> None:
    good = numbers(30)
    rows = [{"wa_id": f"+{n[:4]} {n[4:]}", "variables": {"name": f"N{n[-3:]}"}} for n in good]
    rows += [
        {"wa_id": good[0], "variables": {"name": "again"}},  # a repeated recipient
        {"wa_id": "12", "variables": {"name": "short"}},  # not a phone number
        {"wa_id": good[1][:-1] + "9", "variables": {}},  # no value for {{name}}
    ]
    status, body = await create(app, tokens.acme_admin, channel, recipients=rows)
    assert status == 201, body
    report = body["report"]
    assert (report["accepted"], report["duplicates"], report["refused"]) == (30, 1, 2)
    assert [r["row"] for r in report["refused_rows"]] == [32, 33]
    assert "international format" in report["refused_rows"][0]["reason"]
    assert "{{name}}" in report["refused_rows"][1]["reason"]
    assert body["status"] == "running"
    assert body["recipients"] == 30

    done = await until_campaign(
        app,
        tokens.acme_admin,
        body["id"],
        "every recipient read and the campaign completed",
        lambda c: c["status"] == "completed" and c["funnel"]["counts"]["read"] == 30,
    )
    assert done["funnel"]["reached"] == {"sent": 30, "delivered": 30, "read": 30}
    assert (done["queued"], done["fanned_out"]) == (30, True)
    sent = await cloud.sent(phone_number_id=ACME_NUMBER)
    assert Counter(s["request"]["to"] for s in sent) == Counter(good)
    # Meta's template request, with this recipient's value filled in.
    first = next(s["request"] for s in sent if s["request"]["to"] == good[0])
    assert first["type"] == "template"
    assert first["template"]["name"] == "order_update"
    parameters = first["template"]["components"][0]["parameters"]
    assert parameters == [{"type": "text", "text": f"N{good[0][-3:]}"}]

    listed = await app.get(
        f"/api/campaigns/{body['id']}/recipients?status=read&limit=200",
        headers=bearer(tokens.acme_agent),
    )
    items = (await listed.json())["items"]
    assert sorted(i["wa_id"] for i in items) == sorted(good)
    assert {i["state"] for i in items} == {"read"}


async def test_a_csv_of_recipients_is_checked_row_by_row_and_the_draft_starts(
    app: ApiClient, cloud: Sandbox, tokens: Tokens, channel: Document
) -> None:
    status, draft = await create(app, tokens.acme_admin, channel, draft=True)
    assert (status, draft["status"], draft["report"]) == (201, "draft", None)
    good = numbers(12, start=500)
    lines = ["wa_id,name,ignored"] + [f"{n},Budi {i},x" for i, n in enumerate(good)]
    lines += ["not-a-number,Ani,x", f"{good[0]},Dup,x", f"{numbers(1, 900)[0]},,x"]
    answer = await app.post(
        f"/api/campaigns/{draft['id']}/recipients",
        data="\r\n".join(lines).encode(),
        headers={**bearer(tokens.acme_admin), "Content-Type": "text/csv"},
    )
    report = await answer.json()
    assert answer.status == 200, report
    assert (report["accepted"], report["duplicates"], report["refused"]) == (12, 1, 2)
    assert [r["row"] for r in report["refused_rows"]] == [14, 16]

    # Nothing is sent from a draft; starting it sends to each stored recipient once.
    assert await cloud.sent(phone_number_id=ACME_NUMBER) == []
    start = await app.post(f"/api/campaigns/{draft['id']}/start", headers=bearer(tokens.acme_admin))
    assert start.status == 200, await start.text()
    await until_campaign(
        app, tokens.acme_admin, draft["id"], "completed", lambda c: c["status"] == "completed"
    )
    assert await sent_by_recipient(cloud) == Counter(good)
    # A started campaign takes no more recipients.
    late = await app.post(
        f"/api/campaigns/{draft['id']}/recipients",
        json={"recipients": [{"wa_id": "15551234567", "variables": {"name": "x"}}]},
        headers=bearer(tokens.acme_admin),
    )
    assert late.status == 409
    assert "completed" in (await late.json())["error"]["message"]


async def test_pause_stops_the_sends_within_a_send_and_resume_finishes_them_once(
    settings: InboxApiSettings, cloud: Sandbox, tokens: Tokens, channel: Document, db: Database
) -> None:
    # 4 messages a second: the campaign takes ~10 s, long enough to pause it midway.
    await db[CHANNELS].update_one({"_id": channel["_id"]}, {"$set": {"messages_per_second": 4}})
    api = await started(settings, cloud)
    try:
        good = numbers(40, start=1000)
        rows = [{"wa_id": n, "variables": {"name": "x"}} for n in good]
        _, body = await create(api, tokens.acme_admin, channel, recipients=rows)
        campaign = body["id"]

        async def some_sent() -> bool:
            return len(await cloud.sent(phone_number_id=ACME_NUMBER)) >= 4

        await wait_until(some_sent, "the first sends", timeout=15)
        paused = await api.post(
            f"/api/campaigns/{campaign}/pause", headers=bearer(tokens.acme_admin)
        )
        assert paused.status == 200, await paused.text()
        assert (await paused.json())["paused"]["by"] == "token:admin@acme"
        # At most the calls already under way finish; then nothing more goes out.
        await asyncio.sleep(1.0)
        at_pause = len(await cloud.sent(phone_number_id=ACME_NUMBER))
        await asyncio.sleep(2.0)
        assert len(await cloud.sent(phone_number_id=ACME_NUMBER)) == at_pause
        assert at_pause < 40

        resumed = await api.post(
            f"/api/campaigns/{campaign}/resume", headers=bearer(tokens.acme_admin)
        )
        assert (await resumed.json())["status"] == "running"
        await until_campaign(
            api,
            tokens.acme_admin,
            campaign,
            "completed after the resume",
            lambda c: c["status"] == "completed",
            within=40,
        )
        assert await sent_by_recipient(cloud) == Counter(good)
    finally:
        await api.close()


async def test_cancel_ends_the_campaign_and_nothing_more_is_sent(
    settings: InboxApiSettings, cloud: Sandbox, tokens: Tokens, channel: Document, db: Database
) -> None:
    await db[CHANNELS].update_one({"_id": channel["_id"]}, {"$set": {"messages_per_second": 4}})
    api = await started(settings, cloud)
    try:
        rows = [{"wa_id": n, "variables": {"name": "x"}} for n in numbers(30, start=2000)]
        _, body = await create(api, tokens.acme_admin, channel, recipients=rows)

        async def some_sent() -> bool:
            return len(await cloud.sent(phone_number_id=ACME_NUMBER)) >= 2

        await wait_until(some_sent, "the first sends", timeout=15)
        answer = await api.post(
            f"/api/campaigns/{body['id']}/cancel", headers=bearer(tokens.acme_admin)
        )
        assert (await answer.json())["status"] == "cancelled"
        await asyncio.sleep(1.0)
        sent = len(await cloud.sent(phone_number_id=ACME_NUMBER))
        await asyncio.sleep(2.0)
        assert len(await cloud.sent(phone_number_id=ACME_NUMBER)) == sent

        final = await campaign_of(api, tokens.acme_admin, body["id"])
        counts = final["funnel"]["counts"]
        # Every recipient is either sent (Meta has it) or cancelled (or not queued yet).
        assert counts["cancelled"] + counts["not_queued"] == 30 - sent
        assert counts["queued"] == counts["sending"] == counts["retrying"] == 0
        again = await api.post(
            f"/api/campaigns/{body['id']}/resume", headers=bearer(tokens.acme_admin)
        )
        assert again.status == 409
    finally:
        await api.close()


async def test_a_restricted_account_pauses_the_campaign_with_an_alert(
    app: ApiClient, cloud: Sandbox, tokens: Tokens, channel: Document, db: Database
) -> None:
    # Two sends a second: the refusal's pause lands before the next call is due.
    await db[CHANNELS].update_one({"_id": channel["_id"]}, {"$set": {"messages_per_second": 2}})
    await cloud.fail_next(368)
    rows = [{"wa_id": n, "variables": {"name": "x"}} for n in numbers(5, start=3000)]
    _, body = await create(app, tokens.acme_admin, channel, recipients=rows)
    paused = await until_campaign(
        app, tokens.acme_admin, body["id"], "paused by Meta's 368", lambda c: c["paused"]
    )
    assert paused["status"] == "paused"
    assert (paused["paused"]["by"], paused["paused"]["signal"]) == ("auto", "368")
    alert = await alert_of(db, body["id"])
    assert (alert["status"], alert["severity"], alert["tenant"]) == ("open", "P2", "acme")
    # The channel is stopped too; no recipient got a message after the refusal.
    stored = await db[CHANNELS].find_one({"_id": channel["_id"]})
    assert stored is not None
    assert stored["status"] == "disconnected"
    assert await cloud.sent(phone_number_id=ACME_NUMBER) == []


async def test_a_spam_limit_in_a_failed_status_pauses_the_campaign_too(
    app: ApiClient, cloud: Sandbox, tokens: Tokens, channel: Document, db: Database
) -> None:
    # Meta accepts the send, then says in a failed status webhook that the number hit its
    # spam rate limit (131048): the channel stops and the campaign pauses.
    await db[CHANNELS].update_one({"_id": channel["_id"]}, {"$set": {"messages_per_second": 1}})
    await cloud.fail_next(131048)
    rows = [{"wa_id": n, "variables": {"name": "x"}} for n in numbers(10, start=3500)]
    _, body = await create(app, tokens.acme_admin, channel, recipients=rows)
    paused = await until_campaign(
        app, tokens.acme_admin, body["id"], "paused by the status", lambda c: c["paused"]
    )
    assert (paused["status"], paused["paused"]["signal"]) == ("paused", "131048")
    assert paused["funnel"]["failed_by_code"][0]["code"] == 131048
    await alert_of(db, body["id"])
    assert len(await cloud.sent(phone_number_id=ACME_NUMBER)) < 10


async def test_a_paused_template_pauses_the_campaign_and_resume_sends_the_rest_once(
    app: ApiClient, cloud: Sandbox, tokens: Tokens, channel: Document, db: Database
) -> None:
    await db[CHANNELS].update_one({"_id": channel["_id"]}, {"$set": {"messages_per_second": 2}})
    await cloud.fail_next(132015)
    good = numbers(6, start=3700)
    rows = [{"wa_id": n, "variables": {"name": "x"}} for n in good]
    _, body = await create(app, tokens.acme_admin, channel, recipients=rows)
    paused = await until_campaign(
        app, tokens.acme_admin, body["id"], "paused by 132015", lambda c: c["paused"]
    )
    assert (paused["paused"]["by"], paused["paused"]["signal"]) == ("auto", "132015")
    # The waiting messages show as paused (their jobs were dropped, not lost).
    waiting = await until_campaign(
        app,
        tokens.acme_admin,
        body["id"],
        "the other five paused",
        lambda c: c["funnel"]["counts"]["paused"] == 5,
    )
    assert waiting["funnel"]["failed_by_code"][0]["code"] == 132015
    resumed = await app.post(
        f"/api/campaigns/{body['id']}/resume", headers=bearer(tokens.acme_admin)
    )
    assert resumed.status == 200
    await until_campaign(
        app, tokens.acme_admin, body["id"], "completed", lambda c: c["status"] == "completed"
    )
    sent = await sent_by_recipient(cloud)
    assert sorted(sent.values()) == [1] * 5
    assert len(set(good) - set(sent)) == 1


async def test_a_message_left_paused_in_a_running_campaign_is_queued_again(
    app: ApiClient, cloud: Sandbox, tokens: Tokens, channel: Document, db: Database
) -> None:
    # A sender's gate that read the campaign paused just before a resume marks its message
    # paused after the resume's sweep: the scheduler finds it and queues it again.
    await db[CHANNELS].update_one({"_id": channel["_id"]}, {"$set": {"messages_per_second": 1}})
    good = numbers(4, start=3800)
    rows = [{"wa_id": n, "variables": {"name": "x"}} for n in good]
    _, body = await create(app, tokens.acme_admin, channel, recipients=rows)
    campaign = ObjectId(body["id"])

    async def left_paused() -> bool:
        done = await db[MESSAGES].update_one(
            {"campaign_id": campaign, "send_state": "queued"}, {"$set": {"send_state": "paused"}}
        )
        return bool(done.modified_count)

    await wait_until(left_paused, "a queued message to mark paused")
    await until_campaign(
        app, tokens.acme_admin, body["id"], "completed", lambda c: c["status"] == "completed"
    )
    assert await sent_by_recipient(cloud) == Counter(good)


async def test_a_campaign_to_people_without_a_conversation_sends_no_live_updates(
    app: ApiClient, cloud: Sandbox, tokens: Tokens, channel: Document
) -> None:
    live = await app.ws_connect("/api/ws", headers=bearer(tokens.acme_agent))
    assert orjson.loads((await live.receive(timeout=10)).data)["type"] == "ready"
    rows = [{"wa_id": n, "variables": {"name": "x"}} for n in numbers(3, start=3900)]
    _, body = await create(app, tokens.acme_admin, channel, recipients=rows)
    await until_campaign(
        app, tokens.acme_admin, body["id"], "read", lambda c: c["funnel"]["counts"]["read"] == 3
    )
    # A customer who writes is in a conversation: that one is announced.
    await cloud.inbound(ACME_NUMBER, "6281999999999", "Hi")
    heard = orjson.loads((await live.receive(timeout=10)).data)["event"]
    # The first thing heard is the customer's message (or its conversation), no template.
    assert heard["type"] in ("message.created", "conversation.updated"), heard
    if heard["type"] == "message.created":
        assert heard["data"]["content"] == {"body": "Hi"}, heard
    await live.close()


async def test_a_scheduled_campaign_starts_when_its_time_comes(
    app: ApiClient, cloud: Sandbox, tokens: Tokens, channel: Document
) -> None:
    rows = [{"wa_id": n, "variables": {"name": "x"}} for n in numbers(3, start=4000)]
    at = datetime.now(UTC) + timedelta(seconds=2)
    _, body = await create(
        app, tokens.acme_admin, channel, recipients=rows, schedule_at=at.isoformat()
    )
    assert body["status"] == "scheduled"
    assert await cloud.sent(phone_number_id=ACME_NUMBER) == []
    done = await until_campaign(
        app, tokens.acme_admin, body["id"], "completed", lambda c: c["status"] == "completed"
    )
    assert datetime.fromisoformat(done["started_at"]) >= at
    assert len(await cloud.sent(phone_number_id=ACME_NUMBER)) == 3


async def test_an_audience_by_label_links_each_message_to_its_conversation(
    app: ApiClient, cloud: Sandbox, tokens: Tokens, channel: Document
) -> None:
    customer = numbers(1, start=5000)[0]
    conversation = await writes_in(app, cloud, tokens.acme_agent, ACME_NUMBER, customer, "Hi")
    await writes_in(app, cloud, tokens.acme_agent, ACME_NUMBER, numbers(1, 5001)[0], "Hello")
    labelled = await app.put(
        f"/api/conversations/{conversation}/labels",
        json={"labels": ["vip"]},
        headers=bearer(tokens.acme_agent),
    )
    assert labelled.status == 200
    template = {**TEMPLATE, "components": []}
    _, body = await create(
        app, tokens.acme_admin, channel, template=template, audience={"label": "vip"}
    )
    assert body["report"]["accepted"] == 1, body
    await until_campaign(
        app, tokens.acme_admin, body["id"], "completed", lambda c: c["status"] == "completed"
    )
    assert await sent_by_recipient(cloud) == Counter([customer])
    listed = await app.get(
        f"/api/campaigns/{body['id']}/recipients", headers=bearer(tokens.acme_admin)
    )
    assert (await listed.json())["items"][0]["conversation_id"] == conversation


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"recipients": [], "audience": {"label": "x"}}, 422, "validation_error"),
        ({}, 422, "validation_error"),
        ({"channel_id": "0" * 24, "recipients": []}, 422, "unknown_channel"),
        ({"template": {"name": "Bad Name", "language": {"code": "en"}}}, 422, "validation_error"),
    ],
)
async def test_a_wrong_campaign_is_refused_saying_what_is_wrong(
    app: ApiClient,
    tokens: Tokens,
    channel: Document,
    body: dict[str, Any],
    status: int,
    code: str,
) -> None:
    got, answer = await create(app, tokens.acme_admin, channel, **body)
    assert (got, answer["error"]["code"]) == (status, code), answer


async def test_agents_read_campaigns_and_another_tenant_sees_none(
    app: ApiClient, tokens: Tokens, channel: Document
) -> None:
    status, _ = await create(app, tokens.acme_agent, channel, draft=True)
    assert status == 403
    _, draft = await create(app, tokens.acme_admin, channel, draft=True)
    assert (
        await app.get(f"/api/campaigns/{draft['id']}", headers=bearer(tokens.acme_agent))
    ).status == 200
    other = await app.get(f"/api/campaigns/{draft['id']}", headers=bearer(tokens.globex_admin))
    assert other.status == 404
    listed = await app.get("/api/campaigns", headers=bearer(tokens.globex_admin))
    assert (await listed.json())["items"] == []
    empty = await app.post(f"/api/campaigns/{draft['id']}/start", headers=bearer(tokens.acme_admin))
    assert (empty.status, (await empty.json())["error"]["code"]) == (409, "no_recipients")
