"""``alerts``, the evaluation, against the real store and real services: disconnected
channels, the webhook failure rate, and the services' health; each condition raises its
alert while it holds and resolves it once it cleared."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from inbox_api.app import create_app as create_inbox_api
from inbox_api.settings import InboxApiSettings
from inbox_common.alerts import AlertKind
from inbox_common.broker.topology import Names
from inbox_common.local.ports import free_port
from inbox_common.store.channels import Channels
from inbox_common.store.client import Database, Document
from inbox_ingest.app import create_app as create_ingest
from inbox_ingest.settings import IngestSettings
from inbox_maintenance.service import Maintenance
from inbox_maintenance.settings import MaintenanceTaskSettings
from inbox_testkit.polling import wait_until
from inbox_testkit.store import cipher, create_channel
from tests.maintenance.conftest import active, ledger_event, new_runner, run_ok

pytestmark = pytest.mark.integration

Client = TestClient[web.Request, web.Application]
NOW = timedelta(minutes=1)


async def disconnect(db: Database, channel: Document) -> None:
    await Channels(db).disconnect(channel["_id"], reason="meta_190: token refused", code=190)


# --- channels -------------------------------------------------------------------------------


async def test_one_disconnected_channel_is_a_p2_of_its_tenant(
    runner: Maintenance, db: Database
) -> None:
    channel = await create_channel(db, tenant="acme", phone_number_id="1001")
    await create_channel(db, tenant="acme", phone_number_id="1002")
    await disconnect(db, channel)

    await run_ok(runner, "alerts")

    [alert] = await active(db, AlertKind.CHANNEL_DISCONNECTED)
    assert (alert["severity"], alert["tenant"]) == ("P2", "acme")
    assert alert["evidence"]["reason"] == "meta_190: token refused"
    assert alert["evidence"]["code"] == 190
    assert await active(db, AlertKind.CHANNELS_DISCONNECTED) == []


async def test_many_disconnected_channels_add_a_platform_p1_and_reconnecting_resolves(
    runner: Maintenance, db: Database
) -> None:
    channels = [
        await create_channel(db, tenant=tenant, phone_number_id=f"200{i}")
        for i, tenant in enumerate(("acme", "acme", "globex"))
    ]
    for channel in channels:
        await disconnect(db, channel)

    await run_ok(runner, "alerts")

    [many] = await active(db, AlertKind.CHANNELS_DISCONNECTED)
    assert (many["severity"], many["tenant"]) == ("P1", None)
    assert many["evidence"]["disconnected"] == 3
    assert many["evidence"]["by_tenant"] == {"acme": 2, "globex": 1}
    assert len(await active(db, AlertKind.CHANNEL_DISCONNECTED)) == 3

    await Channels(db, cipher=cipher()).reconnect(channels[0]["_id"], "acme", "EAAG-new")
    await run_ok(runner, "alerts")

    assert await active(db, AlertKind.CHANNELS_DISCONNECTED) == []  # 2 < 3
    left = await active(db, AlertKind.CHANNEL_DISCONNECTED)
    assert {a["evidence"]["channel_id"] for a in left} == {
        str(channels[1]["_id"]),
        str(channels[2]["_id"]),
    }


# --- webhook failures -----------------------------------------------------------------------


async def failed_webhooks(db: Database, n: int, age: timedelta = NOW) -> None:
    for _ in range(n):
        await ledger_event(
            db, status="failed", age=age, error={"code": "unknown_channel", "message": "x"}
        )


async def test_failures_rising_sharply_are_a_p1_with_the_codes_and_the_latest(
    runner: Maintenance, db: Database
) -> None:
    await failed_webhooks(db, 20)
    for _ in range(5):
        await ledger_event(db, status="processed", age=NOW)

    await run_ok(runner, "alerts")

    [alert] = await active(db, AlertKind.WEBHOOK_FAILURES_RISING)
    assert (alert["severity"], alert["tenant"]) == ("P1", None)
    evidence = alert["evidence"]
    assert (evidence["failed"], evidence["received"]) == (20, 25)
    assert evidence["error_codes"] == {"unknown_channel": 20}
    assert evidence["latest_failed_id"]
    assert await active(db, AlertKind.WEBHOOK_FAILURES) == []


async def test_a_few_failures_are_a_light_p3_and_none_resolve_it(
    runner: Maintenance, db: Database
) -> None:
    await failed_webhooks(db, 19)  # below the minimum of a spike

    await run_ok(runner, "alerts")

    [alert] = await active(db, AlertKind.WEBHOOK_FAILURES)
    assert alert["severity"] == "P3"
    assert await active(db, AlertKind.WEBHOOK_FAILURES_RISING) == []

    await db["webhook_events"].delete_many({})
    await run_ok(runner, "alerts")
    assert await active(db, AlertKind.WEBHOOK_FAILURES) == []


async def test_as_many_failures_as_usual_are_no_sharp_rise(
    runner: Maintenance, db: Database
) -> None:
    # 16 windows before this one held 10 failures each: 25 now is under 3 times the usual.
    await failed_webhooks(db, 160, age=timedelta(hours=2))
    await failed_webhooks(db, 25)

    await run_ok(runner, "alerts")

    assert await active(db, AlertKind.WEBHOOK_FAILURES_RISING) == []
    [alert] = await active(db, AlertKind.WEBHOOK_FAILURES)
    assert alert["evidence"]["usual_failed_per_window"] == 10.0


# --- the services' health -------------------------------------------------------------------


@asynccontextmanager
async def served(app: web.Application) -> AsyncIterator[str]:
    """``app`` on a TestServer; its /api/health URL."""
    async with TestClient(TestServer(app)) as client:
        yield str(client.make_url("/api/health"))


def nowhere(scheme: str) -> str:
    return f"{scheme}://127.0.0.1:{free_port()}/"


@asynccontextmanager
async def evaluating(
    settings: MaintenanceTaskSettings, db: Database, names: Names, urls: list[str]
) -> AsyncIterator[Maintenance]:
    """Every task, the evaluation checking the health of ``urls``."""
    async with aiohttp.ClientSession() as http:
        yield new_runner(
            settings.model_copy(update={"maintenance_health_urls": ",".join(urls)}),
            db,
            names,
            http=http,
        )


async def test_the_services_health_down_unreachable_store_and_degraded_are_alerts(
    task_settings: MaintenanceTaskSettings,
    db: Database,
    names: Names,
    amqp_url: str,
    mongo_url: str,
    mongo_db_name: str,
) -> None:
    ingest_without_broker = create_ingest(
        IngestSettings.model_validate(
            {"rabbitmq_url": nowhere("amqp"), "amqp_namespace": names.namespace,
             "whatsapp_webhook_secret": "s", "whatsapp_webhook_verify_token": "v",
             "log_format": "console"}
        )
    )  # fmt: skip
    api: dict[str, Any] = {"amqp_namespace": names.namespace, "log_format": "console",
                           "mongodb_db": mongo_db_name, "mongodb_timeout_ms": 300}  # fmt: skip
    api_without_store = create_inbox_api(
        InboxApiSettings.model_validate(
            {
                **api,
                "rabbitmq_url": amqp_url,
                "mongodb_url": f"{nowhere('mongodb')}?directConnection=true",
            }
        )
    )
    api_without_broker = create_inbox_api(
        InboxApiSettings.model_validate({**api, "rabbitmq_url": nowhere("amqp"),
                                          "mongodb_url": mongo_url})
    )  # fmt: skip
    silent = f"http://127.0.0.1:{free_port()}/api/health"
    async with (
        served(ingest_without_broker) as down,
        served(api_without_store) as no_store,
        served(api_without_broker) as degraded,
    ):
        async with evaluating(
            task_settings, db, names, [down, no_store, degraded, silent]
        ) as runner:
            await run_ok(runner, "alerts")

        downs = {a["subject"]: a for a in await active(db, AlertKind.HEALTH_DOWN)}
        assert set(downs) == {down, silent}
        assert downs[down]["severity"] == "P0"
        assert downs[down]["evidence"]["failing_checks"]["rabbitmq"]["status"] == "down"
        assert "does not answer" in downs[silent]["title"]
        [store] = await active(db, AlertKind.STORE_UNREACHABLE)
        assert (store["severity"], store["subject"]) == ("P0", no_store)
        assert store["title"].startswith("inbox-api cannot reach MongoDB")
        [light] = await active(db, AlertKind.HEALTH_DEGRADED)
        assert (light["severity"], light["subject"]) == ("P3", degraded)

    # The same services, healthy now (the URL list is all the evaluation knows).
    ok_api = create_inbox_api(
        InboxApiSettings.model_validate({**api, "rabbitmq_url": amqp_url, "mongodb_url": mongo_url})
    )
    async with served(ok_api) as healthy:

        async def up() -> bool:
            async with aiohttp.ClientSession() as client, client.get(healthy) as response:
                return bool((await response.json())["status"] == "ok")

        await wait_until(up, "inbox-api to be healthy", timeout=15)
        async with evaluating(task_settings, db, names, [healthy]) as runner:
            await run_ok(runner, "alerts")

    for kind in (AlertKind.HEALTH_DOWN, AlertKind.STORE_UNREACHABLE, AlertKind.HEALTH_DEGRADED):
        assert await active(db, kind) == [], kind
