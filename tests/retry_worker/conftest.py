"""Fixtures of the retry-worker's tests: a worker over the test's broker, store and namespace
(holding the lock), due jobs handed to ``<ns>.retry.due`` as a delay tier hands them over,
outbound messages and campaigns written directly, and the service's settings."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aiohttp import web
from bson import ObjectId
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs
from structlog.typing import EventDict

from inbox_common.broker.connection import Broker
from inbox_common.broker.consumer import QUEUE_HEADER, TIER_HEADER
from inbox_common.broker.publisher import ConfirmedPublisher
from inbox_common.broker.topology import Names
from inbox_common.http import ServiceRunner
from inbox_common.local.ports import free_port
from inbox_common.store.client import Database, Document
from inbox_common.store.collections import CAMPAIGNS
from inbox_retry.settings import RetryJobSettings, RetryWorkerSettings
from inbox_retry.worker import PassResult, RetryWorker, build_worker
from inbox_testkit import services
from inbox_testkit.services import run_command as run_command
from inbox_testkit.services import settings_values
from inbox_testkit.store import store_outbound as store_outbound_of

TENANT = "acme"
JOBS_TOKEN = "jobs-token-7f3a9c"  # distinctive: the log tests look for it


@pytest.fixture
def job_settings(
    amqp_url: str, names: Names, mongo_url: str, mongo_db_name: str
) -> RetryJobSettings:
    return RetryJobSettings.model_validate(
        settings_values(amqp_url, names, mongo_url, mongo_db_name)
    )


@pytest.fixture
def worker_settings(
    amqp_url: str, names: Names, mongo_url: str, mongo_db_name: str
) -> RetryWorkerSettings:
    return RetryWorkerSettings.model_validate(
        settings_values(amqp_url, names, mongo_url, mongo_db_name)
        | {
            "jobs_api_token": JOBS_TOKEN,
            "retry_worker_interval_seconds": 0.2,
            "retry_worker_stale_seconds": 3,
        }
    )


def new_worker(
    settings: RetryJobSettings,
    db: Database,
    broker: Broker,
    publisher: ConfirmedPublisher,
    names: Names,
    *,
    registry: CollectorRegistry | None = None,
    interval: float = 1.0,
) -> RetryWorker:
    return build_worker(
        settings,
        db=db,
        broker=broker,
        publisher=publisher,
        names=names,
        registry=registry or CollectorRegistry(),
        interval=interval,
    )


@contextlib.asynccontextmanager
async def served(app: web.Application) -> AsyncIterator[str]:
    """``app`` served as ``inbox_common.service.serve`` serves it (the kit's runner, no access
    log) on a free port; yields its base URL."""
    runner = ServiceRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5)
    await runner.setup()
    port = free_port()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def worker(
    job_settings: RetryJobSettings,
    db: Database,
    broker: Broker,
    publisher: ConfirmedPublisher,
    names: Names,
) -> AsyncIterator[RetryWorker]:
    """A worker over the test's namespace (topology declared) and store, holding the lock."""
    retry = new_worker(job_settings, db, broker, publisher, names)
    assert await retry.lock.acquire() is not None
    yield retry
    await retry.close()


async def publish_due(
    publisher: ConfirmedPublisher,
    names: Names,
    body: bytes | dict[str, Any],
    *,
    source: str | None = "",
    message_id: str | None = None,
) -> None:
    """A due job as a delay tier hands it over: the consumer's headers (the source queue,
    ``""`` for the outbound queue and None for none; the tier) and the broker's
    dead-lettering ones, published straight to the due queue."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    headers: dict[str, Any] = {
        TIER_HEADER: "5s",
        "x-first-death-queue": names.retry_tier_queue("5s"),
        "x-first-death-reason": "expired",
        "x-first-death-exchange": names.retry_exchange,
        "trace": "kept",
    }
    if source is not None:
        headers[QUEUE_HEADER] = source or names.outbound_queue
    await publisher.publish(
        "",
        names.retry_due_queue,
        raw,
        message_id=message_id,
        headers=headers,
        content_type="application/json",
        timestamp=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


async def depth(channel: AbstractChannel, queue: str) -> int:
    """Messages ready in ``queue`` now (not a robust channel's cached count)."""
    declared = await (await channel.get_underlay_channel()).queue_declare(queue, passive=True)
    return int(declared.message_count or 0)


async def drain(channel: AbstractChannel, queue: str) -> list[AbstractIncomingMessage]:
    """Every message waiting in ``queue`` (acked)."""
    got = []
    source = await channel.get_queue(queue, ensure=False)
    while (message := await source.get(fail=False, timeout=5)) is not None:
        await message.ack()
        got.append(message)
    return got


async def store_outbound(
    db: Database, *, send_state: str, tenant: str = TENANT, **fields: Any
) -> Document:
    """An outbound message as inbox-api stores one, in ``send_state`` (acme's by default)."""
    return await store_outbound_of(db, tenant=tenant, send_state=send_state, **fields)


async def store_campaign(db: Database, status: str, *, tenant: str = TENANT) -> ObjectId:
    """A campaign as the campaigns service keeps one (the contract's fields)."""
    campaign_id = ObjectId()
    await db[CAMPAIGNS].insert_one(
        {"_id": campaign_id, "tenant": tenant, "channel_id": ObjectId(), "status": status}
    )
    return campaign_id


def process_env(settings: RetryJobSettings) -> dict[str, str]:
    return services.process_env(settings, mongodb_timeout_ms=3000)


def logs_with_context() -> AbstractContextManager[list[EventDict]]:
    """structlog's captured events with the context ids bound (as the services log them)."""
    return capture_logs(processors=[structlog.contextvars.merge_contextvars])


def outcomes(result: PassResult) -> dict[str, int]:
    return {k: v for k, v in result.outcomes.items() if v}
