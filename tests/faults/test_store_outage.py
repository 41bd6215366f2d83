"""Fault 3 (with 7): the store stops, or crashes, and comes back mid-stream, under two
consumers.

Each test runs its own SecantusDB (the MongoDB-wire server of these machines) on a fixed
port and data directory, and two inbox-api replicas over it, while signed webhooks stream
in through webhook-ingest.

- Stop: the store is stopped (SIGTERM) and restarted on the same port and data, twice.
  While it is down, inbox-api's health says so and the consumers hold their messages
  unacked (a failed write is never acked); when it is back the backlog drains, and the
  total-queue check finds nothing lost or doubled.
- A long outage: the store stays down many times longer than the consumers' retry budget,
  with the queue's delivery limit and the consumers' backoff configured small, while a
  backlog of signed webhooks arrives. The consumers park what they hold (a new message at
  the queue's tail, so the outage never counts toward the delivery limit) and pause; their
  health says so; nothing is dead-lettered; when the store returns they resume by
  themselves and apply every event once.
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
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inbox_common.broker.topology import Names
from inbox_common.local.secantus import SecantusServer
from inbox_testkit import backends
from inbox_testkit.faults.checker import Report, Sender, queue_depth, text_items
from inbox_testkit.faults.scenario import FaultRun, fault_run
from inbox_testkit.faults.stack import MONGODB_SOCKET_TIMEOUT_MS, StackConfig, prepare_store

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.timeout(240)]

DB_NAME = "faults_store"
DURABLE = "&journal=true"
CRASHES = 4
LONG_OUTAGE = 20.0  # seconds: a hundred times the consumers' retry budget
# How long the check waits on a store that stopped changing before it counts what is missing:
# a request the restarted store accepted and never answers holds its consumer for the socket
# timeout, and the retry may meet it once more, before the consumer's usual pause.
SETTLE = 2 * MONGODB_SOCKET_TIMEOUT_MS / 1000 + 12


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SecantusServer]:
    server = SecantusServer(tmp_path)
    try:
        await server.start_and_wait(timeout=30)
        await prepare_store(server.url, DB_NAME)
        yield server
    finally:
        await server.stop_async(signal.SIGKILL)


def _config(amqp_url: str, namespace: backends.AmqpNamespace, url: str, **env: str) -> StackConfig:
    namespace.track_topology()
    return StackConfig(
        namespace=namespace.name,
        mongo_db=DB_NAME,
        mongodb_url=url,
        rabbitmq_url=amqp_url,
        env=env,
    )


async def _health(run: FaultRun) -> tuple[int, object]:
    try:
        return await run.replicas[0].get("/api/health")
    except Exception as exc:  # any answer or none: it is only reported
        return 0, repr(exc)


async def test_store_stop_and_restart_loses_and_doubles_nothing(
    amqp_url: str,
    amqp_namespace: backends.AmqpNamespace,
    store: SecantusServer,
    fault_report: Report,
) -> None:
    config = _config(amqp_url, amqp_namespace, store.url)
    async with fault_run(config, "store-restart") as run:
        await run.start(replicas=2)

        async def stop_twice(sender: Sender) -> None:
            await sender.wait_started(100)
            for down_for in (4.0, 3.0):
                await store.stop_async(signal.SIGTERM)
                await asyncio.sleep(down_for - 1.0)
                status, body = await _health(run)
                run.log.append(f"store stopped; inbox-api health while down: {status} {body}")
                assert status == 503, f"inbox-api health while the store is down: {status} {body}"
                await asyncio.sleep(1.0)
                await store.start_and_wait(timeout=30)
                run.log.append("store restarted")
                await asyncio.sleep(1.5)

        # About 7 s of stream.
        await run.send(
            text_items(400, label="store-restart"), rate=60.0, concurrency=32, during=stop_twice
        )
        verdict = await run.check(timeout=90, settle=SETTLE)
        verdict.notes["received_twice"] = await run.db["webhook_events"].count_documents(
            {"attempts": {"$gt": 1}}
        )
        await run.wait_consuming(timeout=30)
        fault_report(verdict)
        run.assert_clean(verdict, store.tail())


async def test_a_long_store_outage_pauses_the_consumers_and_dead_letters_nothing(
    amqp_url: str,
    amqp_namespace: backends.AmqpNamespace,
    store: SecantusServer,
    fault_report: Report,
) -> None:
    # The retry budget is two quick tries (about 0.2 s) and a message may be delivered twice:
    # the old requeue-and-retry would dead-letter the whole backlog within a second or two.
    config = _config(
        amqp_url,
        amqp_namespace,
        store.url,
        AMQP_DELIVERY_LIMIT="2",
        CONSUMER_RETRY_ATTEMPTS="2",
        CONSUMER_PAUSE_MAX_SECONDS="0.5",
    )
    names = Names(amqp_namespace.name)
    health: list[tuple[int, object]] = []
    dead_during: list[int] = []
    async with fault_run(config, "store-long-outage") as run:
        await run.start(replicas=2)

        async def long_outage(sender: Sender) -> None:
            await sender.wait_started(50)
            await store.stop_async(signal.SIGTERM)
            run.log.append("store stopped")
            await asyncio.sleep(LONG_OUTAGE / 2)
            health.append(await _health(run))
            await asyncio.sleep(LONG_OUTAGE / 2)
            async with queue_depth(amqp_url, names.dead_letter_queue(names.webhooks_queue)) as d:
                dead_during.append(await d())
            await store.start_and_wait(timeout=30)
            run.log.append(f"store restarted after {LONG_OUTAGE:g}s")

        await run.send(
            text_items(400, label="long-outage"), rate=25.0, concurrency=32, during=long_outage
        )
        verdict = await run.check(timeout=90, settle=SETTLE)
        async with queue_depth(amqp_url, names.dead_letter_queue(names.webhooks_queue)) as dead:
            dead_after = await dead()
        attempts = await run.db["webhook_events"].count_documents({"attempts": {"$gt": 1}})
        verdict.notes["dead_lettered"] = dead_after
        verdict.notes["outage_s"] = LONG_OUTAGE
        verdict.notes["received_twice"] = attempts
        await run.wait_consuming(timeout=20)
        fault_report(verdict)
        context = f"health during the outage: {health}\n{store.tail()}"
        run.assert_clean(verdict, context)
        [(status, report)] = health
        checks = report.get("checks", {}) if isinstance(report, dict) else {}
        assert status == 503, context
        assert checks.get("webhook_consumer", {}).get("status") == "degraded", context
        assert "paused" in checks["webhook_consumer"].get("detail", ""), context
        assert (dead_during, dead_after) == ([0], 0), context


@pytest.mark.parametrize("url_options", ["", DURABLE], ids=["default-write-concern", "journaled"])
async def test_store_crash_loses_nothing(
    amqp_url: str,
    amqp_namespace: backends.AmqpNamespace,
    store: SecantusServer,
    fault_report: Report,
    url_options: str,
) -> None:
    label = "journaled" if url_options else "default"
    config = _config(amqp_url, amqp_namespace, store.url + url_options)
    async with fault_run(config, f"store-crash[{label}]") as run:
        await run.start(replicas=2)

        async def crash_while_writing(sender: Sender) -> None:
            """kill -9 the store at random moments while the consumers write, several times."""
            rng = random.Random(3)
            await sender.wait_started(100)
            for _round in range(CRASHES):
                await asyncio.sleep(rng.uniform(0.3, 0.8))
                stored = await run.db["messages"].count_documents({})
                await store.stop_async(signal.SIGKILL)
                run.log.append(f"store killed -9 with {stored} messages stored")
                await asyncio.sleep(1.0)
                await store.start_and_wait(timeout=30)

        # A steady stream: the store is always busy when it dies.
        await run.send(
            text_items(800, label=f"store-crash-{label}"),
            rate=100.0,
            concurrency=32,
            during=crash_while_writing,
        )
        verdict = await run.check(timeout=90, settle=SETTLE)
        verdict.notes["received_twice"] = await run.db["webhook_events"].count_documents(
            {"attempts": {"$gt": 1}}
        )
        await run.wait_consuming(timeout=30)
        fault_report(verdict)
        run.assert_clean(verdict, store.tail())
