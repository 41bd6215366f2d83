"""P2 consume: how fast inbox-api applies a backlog, against the store's raw write rate.

1. A SecantusDB server of its own; the schema's migrations; one connected channel.
2. ``--events`` unique text webhooks (``--contacts`` contacts, the rest of the events spread
   evenly over them) published to ``<ns>.webhooks`` as webhook-ingest publishes one body:
   persistent, ``message_id`` = sha256, headers sha256/request_id/received_at, confirmed.
3. inbox-api starts (pinned to the server core) and drains the queue; the ledger
   (``webhook_events``) is polled until it shows every event ``processed``. The rate is
   counted from the first processed event, so start-up is not in it.
4. Check: every event processed, none failed, one message per event, one contact and one
   conversation per contact, the queue empty.
5. Baseline, same server, same run: ``raw_insert.py`` (pinned to the same core) inserts as
   many message-sized documents with ``insert_many`` in batches of 1000.

Target: consume rate >= 0.35 x raw insert rate.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pymongo

from inbox_common.broker.topology import WEBHOOK_ROUTING_KEY, Names, declare, everything
from inbox_common.contracts.delivery import delivery_headers
from inbox_common.local.ports import free_port
from inbox_common.store.client import create_client
from inbox_common.store.migrations import apply_migrations
from inbox_common.store.schema import (
    CHANNELS,
    CONTACTS,
    CONVERSATIONS,
    MESSAGES,
    WEBHOOK_EVENTS,
)
from inbox_testkit.bench import bodies
from inbox_testkit.bench.harness import (
    BenchError,
    Service,
    cleanup_namespace,
    queue_counts,
    run_child,
    start_profile,
    start_secantus,
    stop_profile,
    venv_command,
)
from inbox_testkit.bench.loadgen import CpuWatch
from inbox_testkit.bench.p1 import Context, broker_pid

TARGET_RATIO = 0.35
PHONE_NUMBER_ID = "109876543210001"
TENANT = "bench"
DB_NAME = "inbox_bench"


async def prepare_store(url: str, db_name: str, phone_number_id: str) -> None:
    """The schema (as ``db-deploy`` applies it) and one connected channel."""
    client = create_client(url, app_name="bench")
    try:
        db = client[db_name]
        await apply_migrations(db)
        await db[CHANNELS].insert_one(
            {
                "phone_number_id": phone_number_id,
                "tenant": TENANT,
                "status": "connected",
                "name": "Bench channel",
                "waba_id": "WABA_BENCH",
                "display_phone_number": "15550001111",
                "created_at": datetime.now(UTC),
            }
        )
    finally:
        await client.close()


async def preload(url: str, names: Names, payloads: list[bytes]) -> float:
    """Publish ``payloads`` as webhook-ingest publishes one body; returns the seconds taken."""
    began = time.perf_counter()
    connection = await aio_pika.connect(url, client_properties={"connection_name": "bench-p2"})
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await declare(channel, everything(names))
        exchange = await channel.get_exchange(names.webhooks_exchange, ensure=False)

        async def publish(body: bytes) -> None:
            sha256 = hashlib.sha256(body).hexdigest()
            received_at = datetime.now(UTC)
            message = aio_pika.Message(
                body,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=sha256,
                headers=dict(delivery_headers(sha256, uuid.uuid4().hex, received_at)),
                content_type="application/json",
                timestamp=received_at,
            )
            await exchange.publish(message, WEBHOOK_ROUTING_KEY, mandatory=True)

        for start in range(0, len(payloads), 500):  # 500 confirms in flight at a time
            await asyncio.gather(*(publish(body) for body in payloads[start : start + 500]))
    return time.perf_counter() - began


def store_counts(url: str, db_name: str) -> dict[str, int]:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url)
    try:
        db = client[db_name]
        return {
            "ledger_processed": db[WEBHOOK_EVENTS].count_documents({"status": "processed"}),
            "ledger_failed": db[WEBHOOK_EVENTS].count_documents({"status": "failed"}),
            "ledger_total": db[WEBHOOK_EVENTS].count_documents({}),
            "messages": db[MESSAGES].count_documents({}),
            "contacts": db[CONTACTS].count_documents({}),
            "conversations": db[CONVERSATIONS].count_documents({}),
        }
    finally:
        client.close()


async def wait_processed(
    amqp_url: str, names: Names, store_url: str, total: int, service: Service, give_up_s: float
) -> dict[str, Any]:
    """Watch the drain; returns its timeline.

    Counting the ledger's processed entries scans them on SecantusDB (a quarter of a second
    for 10,000, taken from the consumer's store), so the watch is cheap until the end: the
    queue's ready count (a passive declare) until it is empty, then the entries still
    ``received`` (an index range, usually a few) until none is left, and only then the full
    count, which must reach ``total``. The drain starts when the ready count first drops and
    ends at the cheap check that preceded the full count reaching ``total``.
    """
    client = create_client(store_url, app_name="bench-watch")
    events = client[DB_NAME][WEBHOOK_EVENTS]
    connection = await aio_pika.connect(amqp_url)
    spawned = time.monotonic()
    started: float | None = None
    samples: list[tuple[float, int]] = []
    try:
        channel = await connection.channel()
        ready = total
        while ready > 0:
            service.check_alive()
            queue = await channel.declare_queue(names.webhooks_queue, passive=True)
            ready = queue.declaration_result.message_count or 0
            now = time.monotonic()
            samples.append((round(now - spawned, 2), total - ready))
            if started is None and ready < total:
                started = now
            if now - spawned > give_up_s:
                raise BenchError(f"{ready} of {total} events still queued after {give_up_s:g}s")
            await asyncio.sleep(0.1)
        while True:
            service.check_alive()
            pending = await events.count_documents({"status": "received"})
            ended = time.monotonic()
            if pending == 0:
                done = await events.count_documents({"status": "processed"})
                if done >= total:
                    break
                failed = await events.count_documents({"status": "failed"})
                if failed:
                    raise BenchError(f"inbox-api failed {failed} events:\n{service.tail()}")
            if ended - spawned > give_up_s:
                raise BenchError(
                    f"not every event processed after {give_up_s:g}s (raise --p2-timeout or "
                    f"lower --contacts/--per-contact):\n{service.tail()}"
                )
            await asyncio.sleep(0.1)
    finally:
        await connection.close()
        await client.close()
    assert started is not None
    elapsed = ended - started
    return {
        "from_spawn_s": round(ended - spawned, 3),
        "first_delivery_after_s": round(started - spawned, 3),
        "measured_events": total,
        "measured_s": round(elapsed, 3),
        "rate": total / elapsed if elapsed > 0 else 0.0,
        "delivered_progress": samples[:: max(1, len(samples) // 40)],
    }


def case_consume(ctx: Context) -> dict[str, Any]:
    args = ctx.args
    names = Names(f"{ctx.run_id}-c")
    total = args.contacts * args.per_contact
    payloads = bodies.conversation_bodies(PHONE_NUMBER_ID, args.contacts, args.per_contact)
    store = start_secantus(ctx.processes, ctx.workdir, "secantusdb")
    try:
        asyncio.run(prepare_store(store.url, DB_NAME, PHONE_NUMBER_ID))
        print(f"  publishing {total} events ...", flush=True)
        preload_s = asyncio.run(preload(args.rabbitmq_url, names, payloads))
        del payloads
        port = free_port()
        env = {
            **os.environ,
            "AMQP_NAMESPACE": names.namespace,
            "RABBITMQ_URL": args.rabbitmq_url,
            "MONGODB_URL": store.url,
            "MONGODB_DB": DB_NAME,
            "INBOX_API_PORT": str(port),
            "HTTP_HOST": "127.0.0.1",
            "LOG_LEVEL": "WARNING",
        }
        service = ctx.processes.start(
            "inbox-api",
            venv_command("inbox-api", "inbox_api"),
            cpu=ctx.cores.server,
            log=ctx.workdir / "inbox-api-p2.log",
            env=env,
        )
        watch = CpuWatch(
            {"inbox-api": service.process.pid, "secantusdb": store.service.process.pid}
            | broker_pid()
        )
        watch.start()
        profiles = [
            start_profile(args, ctx.run_id, service.process.pid, "consume-inbox-api"),
            start_profile(args, ctx.run_id, store.service.process.pid, "consume-secantusdb"),
        ]
        try:
            drain = asyncio.run(
                wait_processed(args.rabbitmq_url, names, store.url, total, service, args.p2_timeout)
            )
        finally:
            for profile in profiles:
                stop_profile(profile)
        drain["cpu_cores"] = watch.stop()
        service.check_alive()
        counts = store_counts(store.url, DB_NAME)
        queues = asyncio.run(queue_counts(args.rabbitmq_url, names))
        ctx.processes.stop_named("inbox-api")
        print("  raw insert_many baseline ...", flush=True)
        cmd = [
            sys.executable,
            "-m",
            "inbox_testkit.bench.raw_insert",
            store.url,
            DB_NAME,
            f"--count={total}",
            "--batch=1000",
            "--rounds=5",
        ]
        if ctx.cores.server is not None:
            cmd.append(f"--cpu={ctx.cores.server}")
        raw = run_child(cmd, "raw_insert", timeout=300)
    finally:
        ctx.processes.stop_named("inbox-api", "secantusdb")
        cleanup_namespace(args.rabbitmq_url, names)
    expected = {
        "ledger_processed": total,
        "ledger_failed": 0,
        "messages": total,
        "contacts": args.contacts,
        "conversations": args.contacts,
    }
    left = queues.get(names.webhooks_queue, -1)
    ok = all(counts[k] == v for k, v in expected.items()) and left == 0
    rate = float(drain["rate"])
    ctx.results["consume_rate"] = rate
    return {
        "events": total,
        "contacts": args.contacts,
        "preload_s": round(preload_s, 3),
        "consume": drain,
        "raw_insert": raw,
        "ratio": rate / float(raw["rate"]),
        "verification": {
            "counts": counts,
            "expected": expected,
            "queue_left": left,
            "ok": ok,
            "rule": "every event processed once: ledger, messages, contacts, conversations",
        },
        "namespace": names.namespace,
    }
