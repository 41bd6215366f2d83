"""The retry-worker's health: degraded after failed passes in a row (and ok again after a good
one), degraded by a stale lock, down without its store or broker."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from bson import ObjectId
from prometheus_client import CollectorRegistry

from inbox_common.broker.connection import Broker
from inbox_common.broker.publisher import ConfirmedPublisher
from inbox_common.broker.topology import Names
from inbox_common.jobs import JobLock
from inbox_common.local.ports import free_port
from inbox_common.store.campaigns import Campaigns
from inbox_common.store.client import Database, create_client
from inbox_common.store.collections import JOB_LOCKS
from inbox_common.store.outbound import Outbound
from inbox_retry.app import create_app
from inbox_retry.metrics import RetryMetrics
from inbox_retry.service import RetryDecisions
from inbox_retry.settings import RetryJobSettings, RetryWorkerSettings
from inbox_retry.worker import JOB, RetryWorker
from inbox_testkit.polling import wait_until
from tests.retry_worker.conftest import publish_due, served

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def health_of(settings: RetryWorkerSettings) -> AsyncIterator[aiohttp.ClientSession]:
    async with (
        served(create_app(settings)) as url,
        aiohttp.ClientSession(base_url=url) as session,
    ):
        yield session


async def health(http: aiohttp.ClientSession) -> tuple[int, dict[str, Any]]:
    async with http.get("/api/health") as response:
        return response.status, await response.json()


def nowhere() -> str:
    """A URL nothing listens on."""
    return f"mongodb://127.0.0.1:{free_port()}/?directConnection=true"


async def test_degraded_after_failed_passes_in_a_row_and_ok_after_a_good_one(
    worker_settings: RetryWorkerSettings, job_settings: RetryJobSettings, db: Database,
    broker: Broker, publisher: ConfirmedPublisher, names: Names,
) -> None:  # fmt: skip
    # A worker whose decisions cannot reach their store: each pass parks its job and fails.
    away = create_client(nowhere(), app_name="t", timeout_ms=200)
    cut_off = Outbound(away["nowhere"])
    failing = RetryWorker(
        broker, publisher, names,
        JobLock(db, JOB, owner="failing:1:aa", stale_after=job_settings.stale_after),
        RetryDecisions(cut_off, Campaigns(away["nowhere"])), cut_off,
        RetryMetrics(CollectorRegistry()), pass_limit=10, failure_threshold=3,
    )  # fmt: skip
    assert await failing.lock.acquire() is not None
    await publish_due(publisher, names, {"message_id": str(ObjectId())})
    for _ in range(3):
        assert not (await failing.run_pass()).ok

    async with health_of(worker_settings) as http:

        async def connected() -> bool:
            return bool((await health(http))[1]["checks"]["rabbitmq"]["status"] == "ok")

        await wait_until(connected, "the service to connect to the broker")
        # Still held by the failing worker (it just recorded), so this one is on standby.
        status, body = await health(http)
        assert status == 200
        assert body["status"] == "degraded"
        check = body["checks"]["campaign_retry_job"]
        assert check["status"] == "degraded"
        assert "3 passes failed in a row" in check["detail"]
        assert "store unavailable" in check["detail"]
        assert body["checks"]["mongodb"]["status"] == "ok"

        await failing.close()  # released: this worker takes over; its pass drops the job

        async def healthy() -> bool:
            return bool((await health(http))[1]["status"] == "ok")

        await wait_until(healthy, "a good pass to make the health ok again")
        status, body = await health(http)
        assert body["checks"]["campaign_retry_job"]["detail"] == "this worker holds the lock"
    doc = await db[JOB_LOCKS].find_one({"_id": JOB})
    assert doc is not None
    assert doc["consecutiveFailures"] == 0
    await away.close()


async def test_down_without_the_broker_and_degraded_by_a_stale_lock(
    worker_settings: RetryWorkerSettings, db: Database
) -> None:
    await db[JOB_LOCKS].insert_one(
        {
            "_id": JOB,
            "lockedBy": "crashed:7:dead",
            "lockedAt": datetime.now(UTC) - timedelta(hours=1),
            "heartbeatAt": datetime.now(UTC) - timedelta(seconds=60),
            "consecutiveFailures": 0,
        }
    )
    settings = worker_settings.model_copy(
        update={"rabbitmq_url": f"amqp://guest:guest@127.0.0.1:{free_port()}/"}
    )
    async with health_of(settings) as http:
        status, body = await health(http)
        token = {"token": settings.jobs_api_token.get_secret_value()}
        async with http.get("/api/jobs/campaign-retry", params=token) as response:
            jobs = await response.json()
        async with http.post("/api/jobs/campaign-retry", params=token) as response:
            trigger = response.status, await response.json()
    assert status == 503
    assert body["status"] == "down"
    assert body["checks"]["rabbitmq"]["status"] == "down"
    # The status still answers, from the store; the trigger says why nothing can run.
    assert jobs["isStaleLock"] is True
    assert jobs["queues"] is None
    assert jobs["queuesError"] == "broker unavailable: not connected to RabbitMQ"
    assert trigger[0] == 503
    assert trigger[1]["error"]["code"] == "broker_unavailable"
    check = body["checks"]["campaign_retry_job"]
    assert check["status"] == "degraded"
    assert "crashed:7:dead" in check["detail"]
    assert "no heartbeat for 60s" in check["detail"]
    # Without a broker it can do nothing, so it does not take the lock either.
    doc = await db[JOB_LOCKS].find_one({"_id": JOB})
    assert doc is not None
    assert doc["lockedBy"] == "crashed:7:dead"


async def test_down_without_the_store(worker_settings: RetryWorkerSettings) -> None:
    settings = worker_settings.model_copy(
        update={"mongodb_url": nowhere(), "mongodb_timeout_ms": 300}
    )
    async with health_of(settings) as http:
        status, body = await health(http)
    assert status == 503
    assert body["status"] == "down"
    assert body["checks"]["mongodb"]["status"] == "down"
    assert body["checks"]["campaign_retry_job"]["status"] == "down"
