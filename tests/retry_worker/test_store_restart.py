"""The retry-worker's and maintenance's health follow their store: down within seconds of
the store stopping, ok again once it is back, without a restart of the service."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from inbox_common.local.secantus import SecantusServer
from inbox_common.store.client import create_client
from inbox_common.store.migrations import apply_migrations
from inbox_maintenance.app import create_app as maintenance_app
from inbox_maintenance.settings import TASKS, MaintenanceSettings
from inbox_retry.app import create_app as retry_app
from inbox_retry.settings import RetryWorkerSettings
from inbox_testkit.polling import wait_until
from tests.retry_worker.conftest import served

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DB = "restarts"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SecantusServer]:
    server = SecantusServer(tmp_path)
    try:
        await server.start_and_wait(timeout=30)
        client = create_client(server.url, app_name="tests")
        try:
            await apply_migrations(client[DB])
        finally:
            await client.close()
        yield server
    finally:
        await server.stop_async(signal.SIGKILL)


async def test_health_goes_down_with_the_store_and_comes_back_with_it(
    store: SecantusServer, worker_settings: RetryWorkerSettings
) -> None:
    on_store = {"mongodb_url": store.url, "mongodb_db": DB, "mongodb_timeout_ms": 500}
    retry = worker_settings.model_copy(update=on_store)
    maintenance = MaintenanceSettings.model_validate(
        {
            **worker_settings.model_dump(include={"rabbitmq_url", "amqp_namespace"}),
            **on_store,
            "maintenance_schedule": ",".join(f"{task}=off" for task in TASKS),
        }
    )
    async with (
        served(retry_app(retry)) as retry_url,
        served(maintenance_app(maintenance)) as maintenance_url,
        aiohttp.ClientSession() as http,
    ):
        services = {"retry-worker": retry_url, "maintenance": maintenance_url}

        async def all_are(wanted: str) -> bool:
            for url in services.values():
                async with http.get(f"{url}/api/health") as response:
                    body = await response.json()
                if body["checks"]["mongodb"]["status"] != wanted:
                    return False
                if wanted == "down" and (response.status, body["status"]) != (503, "down"):
                    return False
            return True

        await wait_until(lambda: all_are("ok"), "both healthy on the store", timeout=20)
        await store.stop_async()
        await wait_until(lambda: all_are("down"), "both down without the store", timeout=15)
        await store.start_and_wait(timeout=30)
        await wait_until(lambda: all_are("ok"), "both ok with the store back", timeout=30)
