"""The send group: agents' replies from the REST API to the Cloud API, against the Cloud
API's own round trip.

``send``  SecantusDB, webhook-ingest, the whatsapp-sandbox and inbox-api run as processes
          (not pinned, as in P3); the client (``send_client.py``) is pinned to the load core.
          The sandbox posts its webhooks to the ingest, signed with the ingest's secret, and
          knows the bench's number and token; inbox-api calls it as the Cloud API. The
          client creates the channel through REST and the customers write first, then
          offers a steady rate of texts to ``POST /api/conversations/{id}/messages``.
          Measured per message: POST start -> the sandbox accepted it (its ledger's
          ``accepted_at``), and, for a sample, POST start -> ``status`` ``sent`` listed
          through REST.
baseline  the same texts at the same rate POSTed straight to a second sandbox, configured
          the same (its webhooks, the same three statuses per message, go to
          ``bare_server.py``, which only answers 200): the Cloud API's own round trip.

The sandbox's limits are raised so that it refuses nothing (throughput 1000/s, the pair rate
one message a millisecond with bursts of 1000): a refusal would send the message through the
sender's retry tiers, which is not what this measures. Afterwards every message inbox-api
accepted must be in the sandbox's ledger exactly once.

Targets: POST -> sandbox p99 <= 100 ms; POST -> ``sent`` visible p99 <= 300 ms.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from typing import Any

import pymongo

from inbox_common.broker.topology import Names
from inbox_common.local.ports import free_port
from inbox_common.store.client import create_client
from inbox_common.store.migrations import apply_migrations
from inbox_testkit.bench.cli import child_command
from inbox_testkit.bench.harness import (
    BENCH_DIR,
    STARTUP_SECONDS,
    WEBHOOK_PATH,
    QueueWatch,
    Service,
    cleanup_namespace,
    latency_ratios,
    metric_values,
    number_queues,
    pinned,
    run_child,
    start_profile,
    start_secantus,
    start_server,
    stop_profile,
    venv_command,
    wait_http,
)
from inbox_testkit.bench.open_loop import sampled_arguments
from inbox_testkit.bench.p1 import Context, broker_pid
from inbox_testkit.bench.p3 import admin_token
from inbox_testkit.bench.stack import service_env, start_inbox_api, start_ingest
from inbox_testkit.bench.store_state import DB_NAME, write_concern

TARGET_SANDBOX_P99_MS = 100.0
TARGET_SENT_P99_MS = 300.0
PHONE_NUMBER_ID = "109876543210002"
GRAPH_VERSION = "v21.0"
# The sandbox's own delays of the sent, delivered and read statuses (its default).
STATUS_DELAYS_MS = "30,120,400"


async def prepare_schema(url: str) -> str:
    """The schema (as ``db-deploy`` applies it) and an admin token; no channel: the client
    creates it through REST."""
    client = create_client(url, app_name="bench")
    try:
        await apply_migrations(client[DB_NAME])
    finally:
        await client.close()
    return await admin_token(url)


def opcounters(url: str) -> dict[str, int]:
    """The store's operation counters (``serverStatus``), to count the operations per send."""
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url)
    try:
        counters = client.admin.command("serverStatus").get("opcounters", {})
        return {name: int(value) for name, value in counters.items()}
    except pymongo.errors.PyMongoError:
        return {}
    finally:
        client.close()


def per_message(before: dict[str, int], after: dict[str, int], messages: int) -> dict[str, float]:
    return {
        name: round((after[name] - before.get(name, 0)) / messages, 1)
        for name in after
        if messages and after[name] > before.get(name, 0)
    }


def sandbox_env(ctx: Context, port: int, webhook_url: str, token: str) -> dict[str, str]:
    return {
        **os.environ,
        "HTTP_HOST": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
        "WHATSAPP_SANDBOX_PORT": str(port),
        "SANDBOX_WEBHOOK_URL": webhook_url,
        "WHATSAPP_WEBHOOK_SECRET": ctx.secret,
        "SANDBOX_NUMBERS": f"{PHONE_NUMBER_ID}:{token}:100000000000009:+1 555 010 0001",
        "SANDBOX_THROUGHPUT": "1000",
        "SANDBOX_PAIR_INTERVAL_SECONDS": "0.001",
        "SANDBOX_PAIR_BURST": "1000",
        "SANDBOX_STATUS_DELAYS_MS": STATUS_DELAYS_MS,
    }


def start_sandbox(ctx: Context, name: str, webhook_url: str, token: str) -> tuple[Service, str]:
    port = free_port()
    service = ctx.processes.start(
        name,
        venv_command("whatsapp-sandbox", "inbox_sandbox"),
        cpu=None,
        log=ctx.workdir / f"{name}.log",
        env=sandbox_env(ctx, port, webhook_url, token),
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/livez", service)
    return service, base


def client_command(ctx: Context, mode: str, watch: dict[str, int], *urls: str) -> list[str]:
    args = ctx.args
    cmd = child_command(
        "send_client",
        f"--mode={mode}",
        *urls,
        *sampled_arguments(
            PHONE_NUMBER_ID,
            rate=args.send_rate,
            duration=args.send_duration,
            warmup=args.warmup,
            contacts=args.send_contacts,
            tracked=args.send_tracked,
            poll_interval_ms=args.poll_interval_ms,
        ),
        watch=watch,
        cpu=ctx.cores.load,
    )
    return pinned(cmd, ctx.cores.load)


def run_client(ctx: Context, cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    args = ctx.args
    return run_child(
        cmd,
        "send_client",
        # Setup, the in-flight POSTs (30 s at most), the drain (60 s) and the settling (10 s).
        timeout=args.warmup + args.send_duration + 240,
        cpu=ctx.cores.load,
        env=env,
    )


def baseline(ctx: Context, token: str) -> dict[str, Any]:
    """The Cloud API's own round trip: the texts POSTed straight to a sandbox whose webhooks
    go to a server that only answers 200."""
    try:
        sink, sink_base = start_server(
            ctx.processes,
            "webhook sink",
            [sys.executable, str(BENCH_DIR / "bare_server.py")],
            log=ctx.workdir / "sink-send.log",
        )
        sandbox, base = start_sandbox(
            ctx, "whatsapp-sandbox (baseline)", f"{sink_base}{WEBHOOK_PATH}", token
        )
        watch = {"whatsapp-sandbox": sandbox.process.pid, "webhook sink": sink.process.pid}
        cmd = client_command(
            ctx,
            "direct",
            watch,
            f"--graph={base}/{GRAPH_VERSION}/{PHONE_NUMBER_ID}/messages",
            f"--sandbox={base}",
        )
        print(f"  baseline: {ctx.args.send_rate:g}/s straight to the sandbox ...", flush=True)
        result = run_client(ctx, cmd, {**os.environ, "BENCH_GRAPH_TOKEN": token})
        result["sandbox_breakdown"] = handler_means(base, "POST", "/messages")
        sandbox.check_alive()
        return result
    finally:
        ctx.processes.stop_named("whatsapp-sandbox (baseline)", "webhook sink")


def handler_means(base: str, method: str, route_part: str) -> dict[str, float]:
    """The mean time (ms) and count of ``base``'s requests of ``method`` on a route whose
    template contains ``route_part`` (its http_request_duration_seconds)."""
    sums = metric_values(base, "http_request_duration_seconds_sum")
    counts = metric_values(base, "http_request_duration_seconds_count")
    for labels, total in sums.items():
        if f'method="{method}"' in labels and route_part in labels:
            count = counts.get(labels, 0.0)
            return {"mean_ms": round(total / count * 1e3, 2) if count else 0.0, "count": count}
    return {}


def sender_means(base: str, names: Names) -> dict[str, float]:
    """The sender's mean time from a job's delivery to its ack (consumer_handle_seconds of
    the queues under ``<ns>.outbound``), and the jobs it settled."""
    prefix = f'queue="{names.outbound_exchange}.'
    sums = metric_values(base, "consumer_handle_seconds_sum")
    counts = metric_values(base, "consumer_handle_seconds_count")
    total = sum(value for labels, value in sums.items() if prefix in labels)
    count = sum(value for labels, value in counts.items() if prefix in labels)
    return {"mean_ms": round(total / count * 1e3, 2) if count else 0.0, "count": count}


def case_send(ctx: Context) -> dict[str, Any]:
    args = ctx.args
    names = Names(f"{ctx.run_id}-s")
    graph_token = f"EAAG-bench-{secrets.token_hex(8)}"
    base_result = baseline(ctx, graph_token)
    store = start_secantus(ctx.processes, ctx.workdir, "secantusdb")
    try:
        api_token = asyncio.run(prepare_schema(store.url))
        common = service_env(ctx, names)
        ingest, ingest_base = start_ingest(ctx, common, log="ingest-send.log")
        wait_http(ingest_base + "/api/health", ingest, timeout=STARTUP_SECONDS)
        sandbox, sandbox_base = start_sandbox(
            ctx, "whatsapp-sandbox", f"{ingest_base}{WEBHOOK_PATH}", graph_token
        )
        api, api_base = start_inbox_api(
            ctx,
            common,
            store.url,
            log="inbox-api-send.log",
            extra={"WHATSAPP_API_BASE_URL": sandbox_base},
        )
        wait_http(api_base + "/api/health", api, timeout=STARTUP_SECONDS)
        concern = asyncio.run(write_concern(store.url))
        watch = {
            "inbox-api": api.process.pid,
            "whatsapp-sandbox": sandbox.process.pid,
            "webhook-ingest": ingest.process.pid,
            "secantusdb": store.service.process.pid,
            **broker_pid(),
        }
        cmd = client_command(ctx, "inbox", watch, f"--api={api_base}", f"--sandbox={sandbox_base}")
        env = {**os.environ, "BENCH_API_TOKEN": api_token, "BENCH_GRAPH_TOKEN": graph_token}
        profile = start_profile(args, ctx.run_id, api.process.pid, "send-inbox-api")
        print(
            f"  offering {args.send_rate:g}/s to POST /api/conversations/{{id}}/messages for "
            f"{args.send_duration:g}s ...",
            flush=True,
        )
        counted = opcounters(store.url)
        queues = {"webhooks": names.webhooks_queue, "sends": names.number_queue(PHONE_NUMBER_ID)}
        try:
            with QueueWatch(args.rabbitmq_url, list(queues.values())) as backlog:
                result = run_client(ctx, cmd, env)
        finally:
            stop_profile(profile)
        # What waited in the broker, once a second: the status webhooks for inbox-api's
        # consumer, and the jobs for the number's sender.
        result["queue_ready_by_s"] = {name: backlog.samples[q] for name, q in queues.items()}
        result["store_ops_per_message"] = per_message(
            counted, opcounters(store.url), result["check"]["posted"]
        )
        result["api_breakdown"] = {
            "post_handler": handler_means(api_base, "POST", "/api/conversations/{id}/messages"),
            "sender_job": sender_means(api_base, names),
        }
        result["sandbox_breakdown"] = handler_means(sandbox_base, "POST", "/messages")
        for service in (api, ingest, sandbox):
            service.check_alive()
    finally:
        ctx.processes.stop_named("inbox-api", "whatsapp-sandbox", "webhook-ingest", "secantusdb")
        cleanup_namespace(args.rabbitmq_url, names, number_queues(names, PHONE_NUMBER_ID))
    check = result["check"]
    # A POST that failed (a timeout under load) is reported, not held against the check: its
    # message may still go out, once, as its body shows.
    ok = (
        check["answered"] > 0
        and check["in_ledger_once"] == check["answered"]
        and check["duplicated"] == 0
        and check["unknown_in_ledger"] == 0
        and check["ledger_dropped"] == 0
    )
    return {
        "result": result,
        "baseline": base_result,
        "ratios": send_ratios(result, base_result),
        "status_delays_ms": STATUS_DELAYS_MS,
        "write_concern": concern,
        "verification": {
            **check,
            "baseline_in_ledger_once": base_result["check"]["in_ledger_once"],
            "baseline_answered": base_result["check"]["answered"],
            "ok": ok,
            "rule": "every message inbox-api accepted (202) is in the sandbox's ledger exactly "
            "once (by biz_opaque_callback_data); no text went out twice, not even of a POST "
            "that failed or timed out (by its body); nothing unknown went out",
        },
        "namespace": names.namespace,
    }


def send_ratios(result: dict[str, Any], base: dict[str, Any]) -> dict[str, float]:
    """inbox-api's POST -> sandbox over the sandbox's own round trip (POST -> answer)."""
    return latency_ratios(result["reached_sandbox_ms"], base["post_latency_ms"])
