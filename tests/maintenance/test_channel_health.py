"""``channel_health`` against the real store and the whatsapp-sandbox (Meta's formats): the
token check through ``GET /{phone_number_id}``, and the silence of a number."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from inbox_common.alerts import AlertKind, Alerts, dedupe_key
from inbox_common.broker.topology import Names
from inbox_common.local.ports import free_port
from inbox_common.store.client import Database, Document
from inbox_common.store.collections import CHANNELS
from inbox_common.whatsapp.cloud_api import CloudApiClient
from inbox_maintenance.service import Maintenance
from inbox_maintenance.settings import MaintenanceTaskSettings
from inbox_sandbox.app import create_app as create_sandbox
from inbox_sandbox.settings import SandboxSettings
from inbox_testkit.sandbox import SECRET, sandbox_number
from inbox_testkit.store import create_channel
from inbox_testkit.tenants import ACME_NUMBER, ACME_SECOND_NUMBER, GLOBEX_NUMBER
from tests.maintenance.conftest import active, ledger_event, new_runner, outbound_message, run_ok

pytestmark = pytest.mark.integration

Client = TestClient[web.Request, web.Application]
# The sandbox knows acme's first number with the token the channel holds, acme's second
# number with another token, and globex's number not at all.
NUMBERS = ",".join(
    (
        sandbox_number(ACME_NUMBER, f"EAAG-secret-{ACME_NUMBER}"),
        sandbox_number(ACME_SECOND_NUMBER, "EAAG-a-newer-token"),
    )
)


@pytest.fixture
async def sandbox() -> AsyncIterator[Client]:
    settings = SandboxSettings.model_validate(
        {
            "whatsapp_webhook_secret": SECRET,
            "sandbox_webhook_url": f"http://127.0.0.1:{free_port()}/webhooks/whatsapp",
            "sandbox_numbers": NUMBERS,
            "log_format": "console",
        }
    )
    async with TestClient(TestServer(create_sandbox(settings))) as client:
        yield client


async def checker(
    settings: MaintenanceTaskSettings, db: Database, names: Names, base_url: str
) -> AsyncIterator[Maintenance]:
    async with CloudApiClient(base_url, read_attempts=1) as cloud_api:
        yield new_runner(settings, db, names, cloud_api=cloud_api)


@pytest.fixture
async def health(
    task_settings: MaintenanceTaskSettings, db: Database, names: Names, sandbox: Client
) -> AsyncIterator[Maintenance]:
    """Every task, with the Cloud API at the sandbox."""
    async for runner in checker(task_settings, db, names, str(sandbox.make_url("")).rstrip("/")):
        yield runner


async def channel_of(db: Database, tenant: str, number: str, *, age: timedelta) -> Document:
    channel = await create_channel(db, tenant=tenant, phone_number_id=number)
    created = datetime.now(UTC) - age
    await db[CHANNELS].update_one({"_id": channel["_id"]}, {"$set": {"created_at": created}})
    return {**channel, "created_at": created}


async def test_a_working_token_changes_nothing(health: Maintenance, db: Database) -> None:
    channel = await channel_of(db, "acme", ACME_NUMBER, age=timedelta(hours=1))

    outcome = await run_ok(health, "channel_health")

    stored = await db[CHANNELS].find_one({"_id": channel["_id"]})
    assert stored is not None
    assert stored["status"] == "connected"
    assert await db["alerts"].count_documents({}) == 0
    assert "1 connected channels: 0 disconnected" in outcome.summary


async def test_a_refused_token_190_disconnects_the_channel_with_the_reason_and_alerts(
    health: Maintenance, db: Database
) -> None:
    channel = await channel_of(db, "acme", ACME_SECOND_NUMBER, age=timedelta(hours=1))

    outcome = await run_ok(health, "channel_health")

    stored = await db[CHANNELS].find_one({"_id": channel["_id"]})
    assert stored is not None
    assert stored["status"] == "disconnected"
    assert stored["disconnected_code"] == 190
    assert "meta_190" in stored["disconnected_reason"]
    assert "reconnect the channel with a new token" in stored["disconnected_reason"]
    [alert] = await active(db, AlertKind.CHANNEL_DISCONNECTED)
    assert (alert["severity"], alert["tenant"]) == ("P2", "acme")
    assert alert["evidence"]["code"] == 190
    assert alert["evidence"]["phone_number_id"] == ACME_SECOND_NUMBER
    assert alert["dedupe_key"] == dedupe_key(
        AlertKind.CHANNEL_DISCONNECTED, "acme", str(channel["_id"])
    )
    assert "EAAG" not in str(alert)  # no token in an alert
    assert "1 disconnected (token refused)" in outcome.summary


async def test_a_number_meta_does_not_know_for_the_token_raises_check_failed(
    health: Maintenance, db: Database
) -> None:
    channel = await channel_of(db, "globex", GLOBEX_NUMBER, age=timedelta(hours=1))

    await run_ok(health, "channel_health")

    stored = await db[CHANNELS].find_one({"_id": channel["_id"]})
    assert stored is not None
    assert stored["status"] == "connected"  # not a reason to stop its sends
    [alert] = await active(db, AlertKind.CHANNEL_CHECK_FAILED)
    assert (alert["severity"], alert["tenant"]) == ("P2", "globex")
    assert alert["evidence"]["code"] == 100


async def test_meta_unreachable_keeps_the_channels_alerts_as_they_are(
    task_settings: MaintenanceTaskSettings, db: Database, names: Names
) -> None:
    channel = await channel_of(db, "globex", GLOBEX_NUMBER, age=timedelta(hours=1))
    await Alerts(db).raise_alert(
        AlertKind.CHANNEL_CHECK_FAILED, title="earlier", subject=str(channel["_id"]),
        tenant="globex",
    )  # fmt: skip
    nowhere = f"http://127.0.0.1:{free_port()}"

    async for runner in checker(task_settings, db, names, nowhere):
        outcome = await run_ok(runner, "channel_health")

    [alert] = await active(db, AlertKind.CHANNEL_CHECK_FAILED)
    assert alert["title"] == "earlier"
    assert "1 not checkable now" in outcome.summary
    stored = await db[CHANNELS].find_one({"_id": channel["_id"]})
    assert stored is not None
    assert stored["status"] == "connected"


async def test_a_quiet_number_raises_p3_and_a_webhook_clears_it(
    health: Maintenance, db: Database
) -> None:
    channel = await channel_of(db, "acme", ACME_NUMBER, age=timedelta(hours=30))
    await ledger_event(db, status="processed", age=timedelta(hours=25), numbers=[ACME_NUMBER])

    await run_ok(health, "channel_health")

    [alert] = await active(db, AlertKind.CHANNEL_QUIET)
    assert (alert["severity"], alert["tenant"]) == ("P3", "acme")
    assert alert["evidence"]["silent_hours"] >= 25
    assert "no webhook for 25" in alert["title"]

    await ledger_event(db, status="processed", age=timedelta(minutes=1), numbers=[ACME_NUMBER])
    await run_ok(health, "channel_health")

    assert await active(db, AlertKind.CHANNEL_QUIET) == []
    assert await db["alerts"].count_documents({"subject": str(channel["_id"])}) == 1


async def test_a_recent_webhook_or_a_young_channel_is_not_quiet(
    health: Maintenance, db: Database
) -> None:
    await channel_of(db, "acme", ACME_NUMBER, age=timedelta(days=10))
    await ledger_event(db, status="failed", age=timedelta(hours=2), numbers=[ACME_NUMBER])
    await channel_of(db, "globex", GLOBEX_NUMBER, age=timedelta(hours=2))

    await run_ok(health, "channel_health")

    assert await active(db, AlertKind.CHANNEL_QUIET) == []
    assert await active(db, AlertKind.CHANNEL_WEBHOOKS_MISSING) == []


async def test_sends_accepted_without_any_webhook_back_raise_webhooks_missing_p2(
    health: Maintenance, db: Database
) -> None:
    channel = await channel_of(db, "acme", ACME_NUMBER, age=timedelta(days=3))
    await outbound_message(
        db, tenant="acme", send_state="accepted", channel_id=channel["_id"],
        accepted_at=datetime.now(UTC) - timedelta(hours=1),
    )  # fmt: skip

    await run_ok(health, "channel_health")

    assert await active(db, AlertKind.CHANNEL_QUIET) == []
    [alert] = await active(db, AlertKind.CHANNEL_WEBHOOKS_MISSING)
    assert (alert["severity"], alert["tenant"]) == ("P2", "acme")
    assert "no webhook ever" in alert["title"]
    assert "Meta accepted messages sent from it" in alert["title"]
