"""Fault 3 (with 7): the store stops, or crashes, and comes back mid-stream, under two
consumers.

Each test runs its own SecantusDB (the MongoDB-wire server of these machines) on a fixed
port and data directory, and two inbox-api replicas over it, while signed webhooks stream
in through webhook-ingest.

- Stop: the store is stopped (SIGTERM) and restarted on the same port and data, twice.
  While it is down, inbox-api's health says so and the consumers hold their messages
  unacked (a failed write is never acked); when it is back the backlog drains, and the
  total-queue check finds nothing lost or doubled.
- Crash: the store is killed -9 while the consumers write at full speed. A consumer acks a
  message once the store acknowledged its writes, so that acknowledgement must mean
  durable: the services' client asks for ``w=majority`` and a journaled write unless the
  URL says otherwise (with ``w: 1`` and no journal, the writes of the last moment before
  a crash vanished although their messages were acked). Run with the client's default
  and with ``journal=true`` spelled out in the URL; both must lose nothing.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from inbox_common.broker.topology import Names
from inbox_common.store.client import Database, create_client
from tests import infra
from tests.faults.checker import Sender, Verdict, check, queue_depth, text_items, wait_quiet
from tests.faults.conftest import Report
from tests.faults.stack import (
    Service,
    Stack,
    StackConfig,
    StoreProcess,
    prepare_store,
    running_stack,
)

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.timeout(180)]

DB_NAME = "faults_store"
DURABLE = "&journal=true"
CRASHES = 4

Outage = Callable[[StoreProcess, Stack, Sender, Database], Awaitable[list[str]]]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StoreProcess]:
    process = StoreProcess(tmp_path)
    try:
        await process.start()
        await prepare_store(process.url, DB_NAME)
        yield process
    finally:
        await process.stop(signal.SIGKILL)


async def _health_of(api: Service) -> tuple[int, object]:
    try:
        return await api.get("/api/health")
    except Exception as exc:  # any answer or none: it is only reported
        return 0, repr(exc)


async def _run(
    fault: str,
    *,
    amqp_url: str,
    namespace: str,
    store: StoreProcess,
    url_options: str,
    items_count: int,
    rate: float | None,
    outage: Outage,
) -> tuple[Verdict, str]:
    config = StackConfig(
        namespace=namespace,
        mongo_db=DB_NAME,
        mongodb_url=store.url + url_options,
        rabbitmq_url=amqp_url,
    )
    items = text_items(items_count, label=fault)
    client = create_client(store.url, app_name="faults-check", timeout_ms=10_000)
    db = client[DB_NAME]
    try:
        async with running_stack(config) as stack:
            ingest = stack.ingest()
            replicas = [stack.api(name="inbox-api-a"), stack.api(name="inbox-api-b")]
            await stack.start()
            for replica in replicas:
                await replica.wait_consuming()
            sender = Sender(ingest.base, rate=rate, concurrency=32)
            sending = asyncio.create_task(sender.run(items))
            try:
                log = await outage(store, stack, sender, db)
            finally:
                await sending
            async with queue_depth(amqp_url, Names(namespace).webhooks_queue) as depth:
                await wait_quiet(db, items, sender, depth, timeout=45)
            verdict = await check(db, fault, items, sender)
            verdict.notes["received_twice"] = await db["webhook_events"].count_documents(
                {"attempts": {"$gt": 1}}
            )
            for replica in replicas:
                await replica.wait_consuming(timeout=10)
            context = f"{'; '.join(log)}\n{sender.summary()}\n{stack.tails()}\n{store.tail()}"
            return verdict, context
    finally:
        await client.close()


async def _stop_twice(store: StoreProcess, stack: Stack, sender: Sender, _: Database) -> list[str]:
    log: list[str] = []
    api = stack.services[1]
    await sender.wait_started(100)
    for down_for in (4.0, 3.0):
        await store.stop(signal.SIGTERM)
        await asyncio.sleep(down_for - 1.0)
        status, body = await _health_of(api)
        log.append(f"store stopped; inbox-api health while down: {status} {body}")
        assert status == 503, f"inbox-api health while the store is down: {status} {body}"
        await asyncio.sleep(1.0)
        await store.start()
        log.append("store restarted")
        await asyncio.sleep(1.5)
    return log


async def test_store_stop_and_restart_loses_and_doubles_nothing(
    amqp_url: str, amqp_namespace: infra.AmqpNamespace, store: StoreProcess, fault_report: Report
) -> None:
    amqp_namespace.track_topology()
    verdict, context = await _run(
        "store-restart",
        amqp_url=amqp_url,
        namespace=amqp_namespace.name,
        store=store,
        url_options="",
        items_count=400,
        rate=60.0,  # about 7 s of stream
        outage=_stop_twice,
    )
    fault_report(verdict)
    assert verdict.clean, f"{verdict.explain()}\n{context}"


async def _crash_while_writing(
    store: StoreProcess, _: Stack, sender: Sender, db: Database
) -> list[str]:
    """kill -9 the store at random moments while the consumers write, several times."""
    log: list[str] = []
    rng = random.Random(3)
    await sender.wait_started(100)
    for _round in range(CRASHES):
        await asyncio.sleep(rng.uniform(0.3, 0.8))
        stored = await db["messages"].count_documents({})
        await store.stop(signal.SIGKILL)
        log.append(f"store killed -9 with {stored} messages stored")
        await asyncio.sleep(1.0)
        await store.start()
    return log


@pytest.mark.parametrize("url_options", ["", DURABLE], ids=["default-write-concern", "journaled"])
async def test_store_crash_loses_nothing(
    amqp_url: str,
    amqp_namespace: infra.AmqpNamespace,
    store: StoreProcess,
    fault_report: Report,
    url_options: str,
) -> None:
    amqp_namespace.track_topology()
    label = "journaled" if url_options else "default"
    verdict, context = await _run(
        f"store-crash[{label}]",
        amqp_url=amqp_url,
        namespace=amqp_namespace.name,
        store=store,
        url_options=url_options,
        items_count=800,
        rate=100.0,  # a steady stream: the store is always busy when it dies
        outage=_crash_while_writing,
    )
    fault_report(verdict)
    assert verdict.clean, f"{verdict.explain()}\n{context}"
