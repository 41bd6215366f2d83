"""The jobs API served as production serves it: the token (401 in the kit's error shape,
compared in constant time, never in a log line or a metric), the status fields, and the
trigger (202, or 409 while another worker holds the lock)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aio_pika.abc import AbstractChannel

from inbox_common.broker.consumer import QUEUE_HEADER, TIER_HEADER
from inbox_common.broker.publisher import ConfirmedPublisher
from inbox_common.broker.topology import RETRY_TIERS, Names
from inbox_common.jobs import JobLock
from inbox_common.store.client import Database
from inbox_common.store.collections import JOB_LOCKS
from inbox_retry.app import create_app
from inbox_retry.settings import RetryWorkerSettings
from inbox_retry.worker import JOB
from inbox_testkit.polling import wait_until
from tests.retry_worker.conftest import (
    JOBS_TOKEN,
    depth,
    logs_with_context,
    publish_due,
    served,
    store_outbound,
)

pytestmark = pytest.mark.integration

PATH = "/api/jobs/campaign-retry"


@contextlib.asynccontextmanager
async def retry_worker(settings: RetryWorkerSettings) -> AsyncIterator[aiohttp.ClientSession]:
    """The service on a free port, and a session whose relative URLs reach it."""
    async with (
        served(create_app(settings)) as url,
        aiohttp.ClientSession(base_url=url) as session,
    ):
        yield session


async def ran_a_pass(db: Database) -> bool:
    doc = await db[JOB_LOCKS].find_one({"_id": JOB})
    return doc is not None and doc.get("lastRunAt") is not None


async def broker_connected(http: aiohttp.ClientSession) -> None:
    async def connected() -> bool:
        async with http.get("/api/health") as response:
            return bool((await response.json())["checks"]["rabbitmq"]["status"] == "ok")

    await wait_until(connected, "the service to connect to the broker")


async def answer(response: aiohttp.ClientResponse) -> tuple[int, Any]:
    return response.status, await response.json()


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"token": ""},
        {"token": "not-the-token"},
        {"token": JOBS_TOKEN + "x"},
        {"token": JOBS_TOKEN[:-1]},
        {"token": "jöbs-tökén"},  # not ASCII: compared as bytes, never a 500
        {"Token": JOBS_TOKEN},
    ],
)
async def test_a_missing_or_wrong_token_is_401_in_the_kits_error_shape(
    query: dict[str, str], worker_settings: RetryWorkerSettings, db: Database
) -> None:
    async with retry_worker(worker_settings) as http:
        for method in ("GET", "POST"):
            status, body = await answer(await http.request(method, PATH, params=query))
            assert status == 401, (method, query)
            assert body["error"]["code"] == "unauthorized"
            assert "JOBS_API_TOKEN" in body["error"]["message"]
            assert "not-the-token" not in body["error"]["message"]


async def test_the_status_shows_the_lock_the_tiers_and_the_next_due_retry(
    worker_settings: RetryWorkerSettings, db: Database, publisher: ConfirmedPublisher,
    names: Names, amqp_channel: AbstractChannel,
) -> None:  # fmt: skip
    now = datetime.now(UTC).replace(microsecond=0)
    await store_outbound(db, send_state="retrying", retry_due_at=now + timedelta(seconds=60))
    await store_outbound(db, send_state="retrying", retry_due_at=now + timedelta(seconds=30))
    await store_outbound(db, send_state="retrying")  # written before retry_due_at existed
    # Not waiting in a tier: never the next due retry.
    await store_outbound(db, send_state="sending", retry_due_at=now + timedelta(seconds=5))
    await store_outbound(db, send_state="accepted", retry_due_at=now + timedelta(seconds=1))
    for n in range(2):
        await publisher.publish(
            names.retry_exchange, "2m", b'{"kind": "read"}', message_id=f"waiting-{n}",
            headers={TIER_HEADER: "2m", QUEUE_HEADER: names.outbound_queue},
        )  # fmt: skip

    async with retry_worker(worker_settings) as http:
        await wait_until(lambda: ran_a_pass(db), "the worker's first pass")
        status, body = await answer(await http.get(PATH, params={"token": JOBS_TOKEN}))

    assert status == 200
    assert body["job"] == JOB
    assert body["lockedBy"] == body["worker"]["id"]
    assert body["worker"]["holdsLock"] is True
    assert body["isStaleLock"] is False
    assert body["consecutiveFailures"] == 0
    assert body["lastError"] is None
    assert body["staleAfterSeconds"] == 3
    for field in ("lockedAt", "heartbeatAt", "lastRunAt", "lastSuccessAt", "checkedAt"):
        assert datetime.fromisoformat(body[field]).tzinfo is not None, field
    assert body["lastPass"]["error"] is None
    expected = {names.retry_tier_queue(tier) for tier, _ in RETRY_TIERS}
    assert set(body["queues"]) == expected | {names.retry_due_queue}
    assert body["queues"][names.retry_tier_queue("2m")] == 2
    assert body["queues"][names.retry_due_queue] == 0
    assert body["queuesError"] is None
    assert datetime.fromisoformat(body["nextDueAt"]) == now + timedelta(seconds=30)


async def test_post_runs_a_pass_now(
    worker_settings: RetryWorkerSettings, db: Database, publisher: ConfirmedPublisher,
    names: Names, amqp_channel: AbstractChannel,
) -> None:  # fmt: skip
    # A long interval: only the trigger can explain a pass within it.
    settings = worker_settings.model_copy(
        update={"retry_worker_interval_seconds": 10.0, "retry_worker_stale_seconds": 30.0}
    )
    async with retry_worker(settings) as http:
        await wait_until(lambda: ran_a_pass(db), "the worker's first pass")
        await publish_due(publisher, names, {"kind": "read"}, message_id="now-please")
        await asyncio.sleep(0.3)
        assert await depth(amqp_channel, names.retry_due_queue) == 1  # nothing ran it yet
        status, body = await answer(await http.post(PATH, params={"token": JOBS_TOKEN}))
        assert status == 202
        assert body["status"] == "accepted"

        async def requeued() -> bool:
            return await depth(amqp_channel, names.outbound_queue) == 1

        await wait_until(requeued, "the triggered pass to requeue the job", timeout=3)


async def test_post_is_409_while_another_worker_holds_the_lock(
    worker_settings: RetryWorkerSettings, db: Database
) -> None:
    other = JobLock(db, JOB, owner="other-host:42:beef", stale_after=timedelta(seconds=3))
    assert await other.acquire() is not None

    async def keep_renewing() -> None:
        while True:
            await other.renew()
            await asyncio.sleep(0.3)

    renewing = asyncio.create_task(keep_renewing())
    try:
        async with retry_worker(worker_settings) as http:
            await broker_connected(http)
            status, body = await answer(await http.post(PATH, params={"token": JOBS_TOKEN}))
            assert status == 409
            assert body["error"]["code"] == "lock_held"
            assert body["error"]["details"]["lockedBy"] == "other-host:42:beef"
            assert "other-host:42:beef" in body["error"]["message"]
            status, body = await answer(await http.get(PATH, params={"token": JOBS_TOKEN}))
            assert status == 200
            assert body["lockedBy"] == "other-host:42:beef"
            assert body["worker"]["holdsLock"] is False
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing


async def test_the_token_never_reaches_a_log_line_or_a_metric(
    worker_settings: RetryWorkerSettings, db: Database, publisher: ConfirmedPublisher,
    names: Names, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    wrong = "WRONG-" + JOBS_TOKEN
    doc = await store_outbound(db, send_state="accepted")
    with logs_with_context() as logs:
        async with retry_worker(worker_settings) as http:
            await wait_until(lambda: ran_a_pass(db), "the worker's first pass")
            await publish_due(publisher, names, {"message_id": str(doc["_id"])})
            await publish_due(publisher, names, b"not json")
            for method, path, token in [
                ("GET", PATH, JOBS_TOKEN),
                ("POST", PATH, JOBS_TOKEN),
                ("GET", PATH, wrong),
                ("POST", PATH, wrong),
                ("GET", "/api/jobs/nonexistent", JOBS_TOKEN),
                ("DELETE", PATH, JOBS_TOKEN),
            ]:
                async with http.request(method, path, params={"token": token}) as response:
                    await response.read()

            async def dropped() -> bool:
                return any(e["event"] == "retry.dead_lettered" for e in logs)

            await wait_until(dropped, "the pass over the two jobs")
            metrics = await (await http.get("/metrics")).text()

    lines = [repr(event) for event in logs]
    assert any("retry.dropped" in line for line in lines)  # the pass did log
    assert any("http_requests_total" in line for line in metrics.splitlines())
    for text in [*lines, caplog.text, *(repr(r.__dict__) for r in caplog.records), metrics]:
        assert JOBS_TOKEN not in text
    assert f'route="{PATH}"' in metrics
