"""P3 end to end: a steady offered rate through webhook-ingest, RabbitMQ, inbox-api and the
store, timed until each sampled message is visible through the REST API.

SecantusDB, webhook-ingest and inbox-api run as processes (not pinned: on a small machine
they share the cores with the broker and the store, as in a small deployment); the client
(``e2e_client.py``) is pinned to the load core. An admin token and a connected channel are
created in the store first. Afterwards every webhook the ingest accepted must reach the
ledger as ``processed``.

The offered rate is ``--rate``, else half of inbox-api's P2 rate on the one-body backlog in
this run, else 100/s. One-body, because that is what P3's traffic puts in the queue: at a
steady rate far below the ingest's ceiling the requests arrive one at a time, and the ingest
publishes a request that arrived alone as one body. The run shows it: a non-durable queue
bound like inbox-api's counts the AMQP messages, printed against the webhooks accepted.
The store's write concern (the services' ``create_client``: w=majority, journaled) is
printed with the result.

Target: p99 of POST start -> visible <= 250 ms.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pymongo

from inbox_common.broker.topology import Names
from inbox_common.store.client import create_client
from inbox_common.store.schema import WEBHOOK_EVENTS
from inbox_common.tokens import Role, create_token
from inbox_testkit.bench.cli import child_command
from inbox_testkit.bench.harness import (
    WEBHOOK_PATH,
    QueueWatch,
    cleanup_namespace,
    count_queue,
    declare_count_queue,
    number_queues,
    pinned,
    queue_counts,
    run_child,
    scrape_outcomes,
    settled,
    start_profile,
    start_secantus,
    stop_profile,
    wait_http,
)
from inbox_testkit.bench.open_loop import sampled_arguments
from inbox_testkit.bench.p1 import Context, broker_pid
from inbox_testkit.bench.stack import service_env, start_inbox_api, start_ingest
from inbox_testkit.bench.store_state import (
    DB_NAME,
    PHONE_NUMBER_ID,
    TENANT,
    prepare_store,
    write_concern,
)

TARGET_P99_MS = 250.0
DEFAULT_RATE = 100.0


async def admin_token(url: str) -> str:
    client = create_client(url, app_name="bench")
    try:
        return await create_token(client[DB_NAME], role=Role.ADMIN, tenant=TENANT, name="bench")
    finally:
        await client.close()


def ledger_processed(url: str) -> int:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url)
    try:
        return client[DB_NAME][WEBHOOK_EVENTS].count_documents({"status": "processed"})
    finally:
        client.close()


def offered_rate(ctx: Context) -> tuple[float, str]:
    if ctx.args.rate is not None:
        return float(ctx.args.rate), "--rate"
    consumed = ctx.results.get("consume_rate")
    if consumed:
        return round(0.5 * float(consumed), 1), (
            f"50% of inbox-api's P2 rate on the one-body backlog ({float(consumed):.1f}/s): "
            "steady traffic reaches the queue one body per message, as counted below"
        )
    return DEFAULT_RATE, f"default {DEFAULT_RATE:g}/s (P2 did not run; set --rate)"


def case_e2e(ctx: Context) -> dict[str, Any]:
    args = ctx.args
    names = Names(f"{ctx.run_id}-e")
    rate, rate_source = offered_rate(ctx)
    store = start_secantus(ctx.processes, ctx.workdir, "secantusdb")
    try:
        asyncio.run(prepare_store(store.url, DB_NAME, PHONE_NUMBER_ID))
        token = asyncio.run(admin_token(store.url))
        common = service_env(ctx, names)
        api, api_base = start_inbox_api(ctx, common, store.url, log="inbox-api-p3.log")
        ingest, ingest_base = start_ingest(ctx, common, log="ingest-p3.log")
        wait_http(api_base + "/api/health", api)
        wait_http(ingest_base + "/api/health", ingest)
        # Counts the AMQP messages the ingest publishes (bodies per message).
        asyncio.run(declare_count_queue(args.rabbitmq_url, names, with_topology=False))
        concern = asyncio.run(write_concern(store.url))
        watch = {
            "webhook-ingest": ingest.process.pid,
            "inbox-api": api.process.pid,
            "secantusdb": store.service.process.pid,
            **broker_pid(),
        }
        cmd = child_command(
            "e2e_client",
            f"--ingest={ingest_base}{WEBHOOK_PATH}",
            f"--api={api_base}",
            *sampled_arguments(
                PHONE_NUMBER_ID,
                rate=rate,
                duration=args.p3_duration,
                warmup=args.warmup,
                contacts=args.p3_contacts,
                tracked=args.p3_tracked,
                poll_interval_ms=args.poll_interval_ms,
            ),
            watch=watch,
            cpu=ctx.cores.load,
        )
        env = {**os.environ, "BENCH_WEBHOOK_SECRET": ctx.secret, "BENCH_API_TOKEN": token}
        profiles = [
            start_profile(args, ctx.run_id, api.process.pid, "e2e-inbox-api"),
            start_profile(args, ctx.run_id, ingest.process.pid, "e2e-ingest"),
        ]
        print(f"  offering {rate:g}/s ({rate_source}) for {args.p3_duration:g}s ...", flush=True)
        try:
            with QueueWatch(args.rabbitmq_url, [names.webhooks_queue]) as backlog:
                result = run_child(
                    pinned(cmd, ctx.cores.load),
                    "e2e_client",
                    timeout=args.warmup + args.p3_duration + 240,
                    cpu=ctx.cores.load,
                    env=env,
                )
            samples = backlog.samples[names.webhooks_queue]
            result["queue_ready_max"] = max(samples, default=0)
            result["queue_ready_by_s"] = samples
        finally:
            for profile in profiles:
                stop_profile(profile)
        outcomes: dict[str, float] = settled(lambda: scrape_outcomes(ingest_base))
        accepted = int(outcomes.get("accepted", 0))
        deadline = time.monotonic() + 30
        processed = ledger_processed(store.url)
        while processed < accepted and time.monotonic() < deadline:
            api.check_alive()
            time.sleep(0.25)
            processed = ledger_processed(store.url)
        amqp_messages = asyncio.run(queue_counts(args.rabbitmq_url, names))[count_queue(names)]
        api.check_alive()
        ingest.check_alive()
    finally:
        ctx.processes.stop_named("webhook-ingest", "inbox-api", "secantusdb")
        cleanup_namespace(args.rabbitmq_url, names, number_queues(names, PHONE_NUMBER_ID))
    return {
        "result": result,
        "rate_source": rate_source,
        "write_concern": concern,
        "amqp_messages": amqp_messages,
        "verification": {
            "ingest_accepted": accepted,
            "ledger_processed": processed,
            "ok": processed == accepted,
            "rule": "every webhook the ingest accepted is processed in the ledger",
        },
        "namespace": names.namespace,
    }
