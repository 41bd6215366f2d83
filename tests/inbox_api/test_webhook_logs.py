"""The webhook logs' filters, their counts by reason, and the replays (one event, or a filter)
through the real app: its consumer applies what a replay publishes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiohttp import ClientResponse

from inbox_api.consumer.service import Outcome, WebhookProcessor
from inbox_api.webhook_logs import WebhookLogService
from inbox_common.broker.connection import Broker
from inbox_common.broker.publisher import ConfirmedPublisher
from inbox_common.broker.topology import Names
from inbox_common.contracts.delivery import WebhookDelivery
from inbox_common.http import ApiError
from inbox_common.store.client import Database, Document
from inbox_common.store.ledger import Ledger
from inbox_common.store.schema import WEBHOOK_EVENTS
from inbox_sandbox import payloads
from inbox_testkit.plugin import ApiClient
from inbox_testkit.polling import wait_until
from inbox_testkit.store import create_channel, ledger_entry, snapshot
from inbox_testkit.tenants import ACME_NUMBER, GLOBEX_NUMBER, UNKNOWN_NUMBER, Tokens, bearer
from inbox_testkit.webhooks import delivery_of

pytestmark = pytest.mark.integration

LOGS = "/api/admin/webhook-logs"
# Numbers that have no channel when their webhooks arrive (so those fail unknown_channel);
# a test then gives them to a tenant directly in the store, as if created without a replay.
LATE_ACME = "106540352249001"
LATE_GLOBEX = "209870000009001"


async def json_of(response: ClientResponse, status: int = 200) -> Any:
    assert response.status == status, await response.text()
    return await response.json()


async def error_of(response: ClientResponse, status: int) -> dict[str, Any]:
    body = await json_of(response, status)
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    return error


async def arrive(
    processor: WebhookProcessor, body: dict[str, Any] | bytes, *, age: timedelta = timedelta(0)
) -> WebhookDelivery:
    """A body that reached the consumer ``age`` ago (its ledger entry says so)."""
    delivery = delivery_of(body)
    delivery = delivery.model_copy(update={"received_at": datetime.now(UTC) - age})
    assert await processor.process(delivery) in (Outcome.PROCESSED, Outcome.FAILED)
    return delivery


def text(number: str, wa_id: str) -> dict[str, Any]:
    return payloads.text_webhook(number, wa_id, "Ann", f"hello from {wa_id}")


async def event_id(db: Database, delivery: WebhookDelivery) -> str:
    return str((await ledger_entry(db, delivery.sha256))["_id"])


async def processed(db: Database, delivery: WebhookDelivery) -> bool:
    status: str = (await ledger_entry(db, delivery.sha256))["status"]
    return status == "processed"


# --- the listing's filters and counts ---------------------------------------------------------


@pytest.fixture
async def ledger_of_both(
    processor: WebhookProcessor, channel: Document, db: Database
) -> dict[str, WebhookDelivery]:
    """acme: one processed now, two unknown_channel (3 h and 10 min ago); globex: one
    processed; nobody's: an invalid body (1 day ago) and an unknown number's."""
    await create_channel(db, tenant="globex", phone_number_id=GLOBEX_NUMBER)
    events = {
        "acme_ok": await arrive(processor, text(ACME_NUMBER, "4910000001")),
        "acme_late_old": await arrive(
            processor, text(LATE_ACME, "4910000002"), age=timedelta(hours=3)
        ),
        "acme_late_new": await arrive(
            processor, text(LATE_ACME, "4910000003"), age=timedelta(minutes=10)
        ),
        "globex_ok": await arrive(processor, text(GLOBEX_NUMBER, "4930000001")),
        "garbage": await arrive(processor, b"{not json", age=timedelta(days=1)),
        "unknown": await arrive(processor, text(UNKNOWN_NUMBER, "4990000001")),
    }
    await create_channel(db, tenant="acme", phone_number_id=LATE_ACME, name="Late")
    return events


async def listing(api: ApiClient, token: str, query: str = "") -> Any:
    return await json_of(await api.get(f"{LOGS}{query}", headers=bearer(token)))


def shas(page: Any) -> set[str]:
    return {item["sha256"] for item in page["items"]}


async def test_the_listing_filters_by_since_number_and_reason_and_counts_the_reasons(
    api: ApiClient, tokens: Tokens, ledger_of_both: dict[str, WebhookDelivery]
) -> None:
    sha = {name: d.sha256 for name, d in ledger_of_both.items()}

    everything = await listing(api, tokens.superadmin)
    recent = await listing(api, tokens.superadmin, "?since=2h")
    since_iso = (datetime.now(UTC) - timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    since_moment = await listing(api, tokens.superadmin, f"?since={since_iso}")
    late = await listing(api, tokens.superadmin, f"?phone_number_id={LATE_ACME}")
    unknown = await listing(api, tokens.superadmin, "?reason=unknown_channel")
    invalid_recent = await listing(
        api, tokens.superadmin, "?reason=invalid_payload:invalid_json&since=2h"
    )

    assert shas(everything) == set(sha.values())
    assert everything["reasons"] == {"unknown_channel": 3, "invalid_payload:invalid_json": 1}
    assert shas(recent) == set(sha.values()) - {sha["acme_late_old"], sha["garbage"]}
    assert recent["reasons"] == {"unknown_channel": 2}
    assert shas(since_moment) == set(sha.values()) - {sha["garbage"]}
    assert shas(late) == {sha["acme_late_old"], sha["acme_late_new"]}
    assert late["reasons"] == {"unknown_channel": 2}
    assert shas(unknown) == {sha["acme_late_old"], sha["acme_late_new"], sha["unknown"]}
    assert (shas(invalid_recent), invalid_recent["reasons"]) == (set(), {})


async def test_the_counts_cover_the_whole_filter_not_the_page(
    api: ApiClient, tokens: Tokens, ledger_of_both: dict[str, WebhookDelivery]
) -> None:
    first = await listing(api, tokens.superadmin, "?status=failed&limit=1")
    rest = await listing(
        api, tokens.superadmin, f"?status=failed&limit=1&cursor={first['next_cursor']}"
    )
    processed_only = await listing(api, tokens.superadmin, "?status=processed")

    assert len(first["items"]) == 1
    assert (
        first["reasons"]
        == rest["reasons"]
        == {
            "unknown_channel": 3,
            "invalid_payload:invalid_json": 1,
        }
    )
    assert processed_only["reasons"] == {}


async def test_an_admin_filters_and_counts_only_their_own_numbers(
    api: ApiClient, tokens: Tokens, ledger_of_both: dict[str, WebhookDelivery]
) -> None:
    sha = {name: d.sha256 for name, d in ledger_of_both.items()}

    acme = await listing(api, tokens.acme_admin)
    acme_failed = await listing(api, tokens.acme_admin, "?reason=unknown_channel")
    acme_asks_globex = await listing(api, tokens.acme_admin, f"?phone_number_id={GLOBEX_NUMBER}")
    acme_asks_unknown = await listing(api, tokens.acme_admin, f"?phone_number_id={UNKNOWN_NUMBER}")
    globex = await listing(api, tokens.globex_admin)

    assert shas(acme) == {sha["acme_ok"], sha["acme_late_old"], sha["acme_late_new"]}
    assert acme["reasons"] == {"unknown_channel": 2}
    assert shas(acme_failed) == {sha["acme_late_old"], sha["acme_late_new"]}
    for nothing in (acme_asks_globex, acme_asks_unknown):
        assert nothing == {"items": [], "next_cursor": None, "reasons": {}}
    assert shas(globex) == {sha["globex_ok"]}
    assert globex["reasons"] == {}


@pytest.mark.parametrize(
    ("query", "field", "form"),
    [
        ("since=yesterday", "since", "ISO 8601"),
        ("since=0m", "since", "duration back from now (30m, 2h, 7d)"),
        ("since=2w", "since", "duration back from now (30m, 2h, 7d)"),
        ("since=99999999d", "since", "ISO 8601"),
        ("since=2026-12-01T09:00:00 01:00", "since", "write + as %2B"),
        ("phone_number_id=abc", "phone_number_id", "1 to 32 digits"),
        ("phone_number_id=", "phone_number_id", "1 to 32 digits"),
        ("reason=Unknown Channel", "reason", "an error code: unknown_channel"),
        ("reason=a:b:c", "reason", "one :"),
        ("status=lost", "status", "one of received, processed, failed"),
    ],
)
async def test_a_wrong_filter_is_a_400_naming_it_and_its_form(
    api: ApiClient, tokens: Tokens, query: str, field: str, form: str
) -> None:
    error = await error_of(
        await api.get(LOGS, params=dict([query.split("=", 1)]), headers=bearer(tokens.superadmin)),
        400,
    )

    assert error["code"] == f"invalid_{field}"
    assert error["details"] == {"field": field}
    assert error["message"].startswith(f"{field} must be ")
    assert form in error["message"]


# --- the replay of one event ----------------------------------------------------------------


async def test_a_failed_event_replayed_is_applied_once_its_channel_exists(
    api: ApiClient, tokens: Tokens, processor: WebhookProcessor, db: Database
) -> None:
    body = text(LATE_ACME, "4910000009")
    delivery = await arrive(processor, body)
    assert not await processed(db, delivery)
    await create_channel(db, tenant="acme", phone_number_id=LATE_ACME)
    ident = await event_id(db, delivery)

    answer = await json_of(
        await api.post(f"{LOGS}/{ident}/replay", headers=bearer(tokens.acme_admin)), 202
    )

    assert answer == {"replayed": 1, "matched": 1}

    async def applied() -> bool:
        return await processed(db, delivery)

    await wait_until(applied, "the consumer to apply the replayed event", timeout=15)
    entry = await ledger_entry(db, delivery.sha256)
    assert (entry["attempts"], entry["error"]) == (2, None)
    texts = [m["content"] for m in (await snapshot(db))["messages"]]
    assert texts == [{"body": "hello from 4910000009"}]


async def test_replaying_a_processed_event_changes_nothing_but_its_attempts(
    api: ApiClient, tokens: Tokens, processor: WebhookProcessor, db: Database, channel: Document
) -> None:
    delivery = await arrive(processor, text(ACME_NUMBER, "4910000010"))
    ident = await event_id(db, delivery)
    inbox_before = await snapshot(db)
    entry_before = await ledger_entry(db, delivery.sha256)

    for _ in range(2):
        await json_of(
            await api.post(f"{LOGS}/{ident}/replay", headers=bearer(tokens.superadmin)), 202
        )

    async def both_counted() -> bool:
        attempts: int = (await ledger_entry(db, delivery.sha256))["attempts"]
        return attempts == 3

    await wait_until(both_counted, "the consumer to count both replays", timeout=15)
    assert await snapshot(db) == inbox_before
    entry_after = await ledger_entry(db, delivery.sha256)
    changed = {k for k in entry_before if entry_before[k] != entry_after[k]}
    assert changed == {"attempts", "last_attempt_at"}
    assert entry_after["status"] == "processed"


async def test_an_event_of_another_tenant_or_of_nobody_is_not_found_and_agents_may_not(
    api: ApiClient,
    tokens: Tokens,
    ledger_of_both: dict[str, WebhookDelivery],
    db: Database,
) -> None:
    globex = await event_id(db, ledger_of_both["globex_ok"])
    garbage = await event_id(db, ledger_of_both["garbage"])
    before = await db[WEBHOOK_EVENTS].find({}, {"attempts": 1}).sort("_id", 1).to_list()

    for ident in (globex, garbage, "65f000000000000000000000", "zzz"):
        response = await api.post(f"{LOGS}/{ident}/replay", headers=bearer(tokens.acme_admin))
        assert (await error_of(response, 404))["code"] == "not_found"
    for path in (f"{LOGS}/{globex}/replay", f"{LOGS}/replay"):
        response = await api.post(path, json={}, headers=bearer(tokens.acme_agent))
        assert (await error_of(response, 403))["code"] == "forbidden"

    assert await db[WEBHOOK_EVENTS].find({}, {"attempts": 1}).sort("_id", 1).to_list() == before


async def test_a_replay_the_broker_does_not_take_is_a_503_that_says_to_try_again(
    db: Database, channel: Document, processor: WebhookProcessor, amqp_url: str, names: Names
) -> None:
    delivery = await arrive(processor, text(ACME_NUMBER, "4910000011"))
    entry = await ledger_entry(db, delivery.sha256)
    broker = Broker(amqp_url, name="tests")
    never_connected = ConfirmedPublisher(broker, timeout=1)

    try:
        with pytest.raises(ApiError) as raised:
            await WebhookLogService(Ledger(db)).replay_one(
                entry["_id"], numbers=None, publisher=never_connected, names=names
            )
    finally:
        # Closed here: a connection object collected after the loop stopped warns.
        await broker.close()

    assert (raised.value.status, raised.value.code) == (503, "broker_unavailable")
    assert "try again" in raised.value.message


# --- the replay by filter -------------------------------------------------------------------


async def test_a_replay_by_filter_takes_the_oldest_of_the_admins_own_events_up_to_the_limit(
    api: ApiClient, tokens: Tokens, processor: WebhookProcessor, db: Database
) -> None:
    acme = [
        await arrive(processor, text(LATE_ACME, f"49100001{n:02}"), age=timedelta(minutes=30 - n))
        for n in range(3)
    ]
    globex = await arrive(processor, text(LATE_GLOBEX, "4930000009"), age=timedelta(hours=1))
    await create_channel(db, tenant="acme", phone_number_id=LATE_ACME)
    await create_channel(db, tenant="globex", phone_number_id=LATE_GLOBEX)

    answer = await json_of(
        await api.post(
            f"{LOGS}/replay",
            json={"reason": "unknown_channel", "since": "2h", "limit": 2},
            headers=bearer(tokens.acme_admin),
        ),
        202,
    )

    assert answer == {"replayed": 2, "matched": 3}

    async def oldest_two_applied() -> bool:
        return all([await processed(db, d) for d in acme[:2]])

    await wait_until(oldest_two_applied, "the consumer to apply the two replayed", timeout=15)
    # Exactly two were published (the answer), and they were these two: the newest of acme's
    # and globex's (older than all of acme's) were not.
    assert not await processed(db, acme[2])
    assert (await ledger_entry(db, globex.sha256))["attempts"] == 1


async def test_a_replay_by_filter_refuses_processed_events_and_wrong_filters(
    api: ApiClient, tokens: Tokens
) -> None:
    cases = [
        ({"status": "processed"}, 400, "invalid_status", "failed or received"),
        ({"since": "last week"}, 400, "invalid_since", "duration back from now"),
        ({"phone_number_id": "+1 555"}, 400, "invalid_phone_number_id", "1 to 32 digits"),
        ({"reason": "UNKNOWN"}, 400, "invalid_reason", "unknown_channel"),
        ({"limit": 1001}, 422, "validation_error", "limit"),
        ({"everything": True}, 422, "validation_error", "everything"),
    ]
    for body, status, code, says in cases:
        response = await api.post(
            f"{LOGS}/replay", data=orjson.dumps(body), headers=bearer(tokens.superadmin)
        )
        error = await error_of(response, status)
        assert (error["code"], says in error["message"]) == (code, True), (body, error)
