"""The retry-worker's and maintenance's health follow their store and their broker: down
within seconds of either stopping, ok again once it is back, without a restart of the
service."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from inbox_common.local.secantus import SecantusServer
from inbox_common.store.client import create_client
from inbox_common.store.migrations import apply_migrations
from inbox_maintenance.app import create_app as maintenance_app
from inbox_maintenance.settings import TASKS, MaintenanceSettings
from inbox_retry.app import create_app as retry_app
from inbox_retry.settings import RetryWorkerSettings
from inbox_testkit.faults.proxy import TcpProxy
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


@asynccontextmanager
async def both_services(
    settings: RetryWorkerSettings, **overrides: Any
) -> AsyncIterator[Callable[[str, str], Awaitable[bool]]]:
    """retry-worker and maintenance (its schedule off) on ``settings`` with ``overrides``;
    yields ``all_are(check, status)``: whether both report that health ``check`` at
    ``status`` (and, for ``down``, the whole health down with a 503)."""
    retry = settings.model_copy(update=overrides)
    maintenance = MaintenanceSettings.model_validate(
        {
            **retry.model_dump(
                include={"rabbitmq_url", "amqp_namespace", "mongodb_url", "mongodb_db"}
            ),
            "mongodb_timeout_ms": retry.mongodb_timeout_ms,
            "maintenance_schedule": ",".join(f"{task}=off" for task in TASKS),
        }
    )
    async with (
        served(retry_app(retry)) as retry_url,
        served(maintenance_app(maintenance)) as maintenance_url,
        aiohttp.ClientSession() as http,
    ):

        async def all_are(check: str, wanted: str) -> bool:
            for url in (retry_url, maintenance_url):
                async with http.get(f"{url}/api/health") as response:
                    body = await response.json()
                if body["checks"][check]["status"] != wanted:
                    return False
                if wanted == "down" and (response.status, body["status"]) != (503, "down"):
                    return False
            return True

        yield all_are


async def test_health_goes_down_with_the_store_and_comes_back_with_it(
    store: SecantusServer, worker_settings: RetryWorkerSettings
) -> None:
    on_store = {"mongodb_url": store.url, "mongodb_db": DB, "mongodb_timeout_ms": 500}
    async with both_services(worker_settings, **on_store) as all_are:
        await wait_until(lambda: all_are("mongodb", "ok"), "both healthy on the store", timeout=20)
        await store.stop_async()
        await wait_until(lambda: all_are("mongodb", "down"), "both down without it", timeout=15)
        await store.start_and_wait(timeout=30)
        await wait_until(lambda: all_are("mongodb", "ok"), "both ok with it back", timeout=30)


async def test_health_goes_down_with_the_broker_and_comes_back_with_it(
    worker_settings: RetryWorkerSettings,
) -> None:
    upstream = URL(worker_settings.rabbitmq_url)
    proxy = TcpProxy([(upstream.host or "127.0.0.1", upstream.port or 5672)], name="broker")
    await proxy.start()
    behind_proxy = str(upstream.with_host("127.0.0.1").with_port(proxy.port))
    try:
        async with both_services(worker_settings, rabbitmq_url=behind_proxy) as all_are:
            await wait_until(lambda: all_are("rabbitmq", "ok"), "both on the broker", timeout=20)
            # The broker stops: its connections reset, and nothing listens any more.
            proxy.refuse()
            proxy.cut()
            await wait_until(lambda: all_are("rabbitmq", "down"), "both down without it")
            proxy.heal()
            await wait_until(lambda: all_are("rabbitmq", "ok"), "both ok with it back", timeout=30)
    finally:
        await proxy.close()
