"""The live group: a change made on one inbox-api replica, as an event on another replica's
WebSocket clients, against a bare fan-out server fed the same way.

``inbox``  SecantusDB and two inbox-api replicas, A and B, on the same store and the same
           AMQP namespace (not pinned, as in P3). ``--live-clients`` WebSocket clients connect
           to B (``live_client.py crowd``, pinned to the load core), each with an admin
           token in the ``Authorization`` header. Then one measuring client
           (``live_client.py measure``, the same core) connects to B too and sets the labels
           of ``--live-conversations`` conversations on A, ``--live-rate`` changes a second:
           A publishes each ``conversation.updated`` to the live exchange and B fans it out.
           Latency: the change request's start -> the event at the measuring client (and,
           for every event at every crowd client, against the wall clock).
``bare``   the baseline: ``fanout_server.py`` (aiohttp on uvloop, no broker, no store), the
           same crowd and the same measuring client; each change is an event frame of the
           same shape POSTed to it, which it writes to every socket at once.

B's resident set (``VmRSS``) is read idle before the clients, with them connected, and at the
end (the same for the bare server). Afterwards every client must have received every change
that was answered 200: the crowd counts each change's receivers, and a client that the server
closed or told to reload counts against it too.

Targets: change -> event p99 <= 100 ms; B's RSS <= 150 MiB with the clients connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inbox_common.broker.topology import Names
from inbox_common.store.client import create_client
from inbox_common.store.migrations import apply_migrations
from inbox_common.tokens import Role, create_token
from inbox_sandbox.payloads import new_wamid
from inbox_testkit.bench.cli import child_command
from inbox_testkit.bench.harness import (
    BENCH_DIR,
    STARTUP_SECONDS,
    BenchError,
    Service,
    cleanup_namespace,
    get_json,
    latency_ratios,
    log_tail,
    memory_of,
    metric_values,
    number_queues,
    pinned,
    run_child,
    spawn,
    start_profile,
    start_secantus,
    start_server,
    stop_profile,
    wait_http,
)
from inbox_testkit.bench.p1 import Context, broker_pid
from inbox_testkit.bench.stack import service_env, start_inbox_api
from inbox_testkit.bench.store_state import DB_NAME, PHONE_NUMBER_ID, TENANT
from inbox_testkit.store import create_channel, store_message

TARGET_LIVE_P99_MS = 100.0
TARGET_LIVE_RSS_MB = 150.0
SETTLE_SECONDS = 2.0


async def prepare(url: str, conversations: int) -> tuple[str, list[str]]:
    """The schema, a channel, ``conversations`` conversations (one inbound message each, as
    the webhook path writes them) and an admin token."""
    client = create_client(url, app_name="bench")
    try:
        db = client[DB_NAME]
        await apply_migrations(db)
        channel = await create_channel(db, tenant=TENANT, phone_number_id=PHONE_NUMBER_ID)
        ids = []
        for i in range(conversations):
            doc = {
                "wamid": new_wamid(),
                "timestamp": datetime.now(UTC),
                "type": "text",
                "direction": "inbound",
                "content": {"body": "Hello, where is my order?"},
            }
            wa_id = f"4478{i:08d}"
            conversation = await store_message(
                db, channel, wa_id, doc, preview="Hello", inbound=True, status="received"
            )
            ids.append(str(conversation))
        token = await create_token(db, role=Role.ADMIN, tenant=TENANT, name="bench live")
    finally:
        await client.close()
    return token, ids


def wait_live_bound(base: str, service: Service, timeout: float = STARTUP_SECONDS) -> None:
    """Until the replica receives the live exchange (its ``live_updates`` health check)."""
    deadline = time.monotonic() + timeout
    while True:
        service.check_alive()
        with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
            checks = get_json(base + "/api/health")["checks"]
            if checks.get("live_updates", {}).get("status") == "ok":
                return
        if time.monotonic() > deadline:
            raise BenchError(f"{service.name} did not bind to the live exchange:\n{service.tail()}")
        time.sleep(0.1)


def rss(pid: int) -> dict[str, float]:
    used = memory_of(pid)
    if used is None:
        raise BenchError(f"process {pid} is gone")
    return used


@dataclass
class Target:
    """What the clients talk to: the server fanning out, and where changes are made."""

    kind: str  # inbox or bare
    server: Service
    ws_url: str
    change_base: str
    conversations: list[str]
    watch: dict[str, int]


@contextlib.contextmanager
def crowd(ctx: Context, target: Target, token: str) -> Iterator[subprocess.Popen[bytes]]:
    """The crowd's process, once all its clients are ready; killed if anything fails."""
    ready = ctx.workdir / f"crowd-{target.kind}.ready"
    log = ctx.workdir / f"crowd-{target.kind}.log"
    cmd = child_command(
        "live_client",
        "crowd",
        f"--url={target.ws_url}",
        f"--clients={ctx.args.live_clients}",
        f"--ready={ready}",
        f"--out={crowd_out(ctx, target)}",
        cpu=ctx.cores.load,
    )
    process = spawn(cmd, cpu=ctx.cores.load, log=log, env={**os.environ, "BENCH_API_TOKEN": token})
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            target.server.check_alive()
            if process.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"the crowd did not get ready:\n{log_tail(log)}")
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def crowd_out(ctx: Context, target: Target) -> Path:
    return ctx.workdir / f"crowd-{target.kind}.json"


def finish_crowd(ctx: Context, target: Target, process: subprocess.Popen[bytes]) -> Any:
    """Stop the crowd (it waits for the last frames first) and read its tally."""
    process.terminate()
    try:
        code = process.wait(timeout=40)
    except subprocess.TimeoutExpired:
        raise BenchError("the crowd did not stop within 40 s") from None
    if code != 0:
        log = ctx.workdir / f"crowd-{target.kind}.log"
        raise BenchError(f"the crowd exited with {code}:\n{log_tail(log)}")
    return json.loads(crowd_out(ctx, target).read_text())


def fan_out(ctx: Context, target: Target, token: str) -> dict[str, Any]:
    """Idle memory, the crowd, the measured changes, and what every client received."""
    args = ctx.args
    pid = target.server.process.pid
    idle = rss(pid)["rss_mb"]
    with crowd(ctx, target, token) as process:
        time.sleep(SETTLE_SECONDS)
        connected = rss(pid)["rss_mb"]
        cmd = child_command(
            "live_client",
            "measure",
            f"--target={target.kind}",
            f"--change-base={target.change_base}",
            f"--ws-url={target.ws_url}",
            f"--rate={args.live_rate}",
            f"--duration={args.live_duration}",
            f"--warmup={args.warmup}",
            *(f"--conversation={c}" for c in target.conversations),
            watch={**target.watch, "crowd": process.pid},
            cpu=ctx.cores.load,
        )
        print(
            f"  {target.kind}: {args.live_clients} clients + 1, {args.live_rate:g} changes/s "
            f"for {args.live_duration:g}s ...",
            flush=True,
        )
        measured = run_child(
            pinned(cmd, ctx.cores.load),
            "live_client measure",
            timeout=args.warmup + args.live_duration + 120,
            cpu=ctx.cores.load,
            env={**os.environ, "BENCH_API_TOKEN": token},
        )
        end = rss(pid)
        tally = finish_crowd(ctx, target, process)
    clients = int(tally["clients"])
    received = {int(n): count for n, count in tally["received"].items()}
    drops = sum(clients - received.get(n, 0) for n in measured["changes_ok"])
    duplicates = int(tally["duplicates"])
    return {
        "measure": {k: v for k, v in measured.items() if k != "changes_ok"},
        "crowd": {k: v for k, v in tally.items() if k != "received"},
        "changes": len(measured["changes_ok"]),
        "drops": drops + int(measured["missed"]),
        "duplicates": duplicates,
        "rss_mb": {
            "idle": idle,
            "connected": connected,
            "end": end["rss_mb"],
            "peak": end["peak_rss_mb"],
        },
    }


def run_inbox(ctx: Context) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two replicas; returns the fan-out's numbers and the replicas' live metrics."""
    args = ctx.args
    names = Names(f"{ctx.run_id}-l")
    store = start_secantus(ctx.processes, ctx.workdir, "secantusdb")
    try:
        token, conversations = asyncio.run(prepare(store.url, args.live_conversations))
        env = service_env(ctx, names)
        replicas = {
            name: start_inbox_api(
                ctx, env, store.url, name=f"inbox-api {name}", log=f"inbox-api-{name}-live.log"
            )
            for name in ("A", "B")
        }
        for service, base in replicas.values():
            wait_http(f"{base}/api/health", service, timeout=STARTUP_SECONDS)
            wait_live_bound(base, service)
        (a, a_base), (b, b_base) = replicas["A"], replicas["B"]
        time.sleep(SETTLE_SECONDS)  # idle: started, connected, nothing asked yet
        target = Target(
            "inbox",
            b,
            f"{b_base.replace('http://', 'ws://', 1)}/api/ws",
            a_base,
            conversations,
            {
                "inbox-api A": a.process.pid,
                "inbox-api B": b.process.pid,
                "secantusdb": store.service.process.pid,
                **broker_pid(),
            },
        )
        profile = start_profile(args, ctx.run_id, b.process.pid, "live-inbox-api-b")
        try:
            result = fan_out(ctx, target, token)
        finally:
            stop_profile(profile)
        metrics = {
            "A published": metric_values(a_base, "live_events_published_total"),
            "A dropped": metric_values(a_base, "live_events_dropped_total"),
            "B received": metric_values(b_base, "live_events_received_total"),
            "B delivered": metric_values(b_base, "live_events_delivered_total"),
            "B closed": metric_values(b_base, "live_sessions_closed_total"),
        }
        a.check_alive()
        b.check_alive()
    finally:
        ctx.processes.stop_named("inbox-api A", "inbox-api B", "secantusdb")
        cleanup_namespace(args.rabbitmq_url, names, number_queues(names, PHONE_NUMBER_ID))
    return result, metrics


def run_bare(ctx: Context) -> dict[str, Any]:
    try:
        server, base = start_server(
            ctx.processes,
            "bare fan-out",
            [sys.executable, str(BENCH_DIR / "fanout_server.py")],
            log=ctx.workdir / "fanout-live.log",
        )
        time.sleep(SETTLE_SECONDS)
        target = Target(
            "bare",
            server,
            f"{base.replace('http://', 'ws://', 1)}/ws",
            base,
            [],
            {"bare fan-out": server.process.pid, **broker_pid()},
        )
        result = fan_out(ctx, target, "bench")
        server.check_alive()
    finally:
        ctx.processes.stop_named("bare fan-out")
    return result


def case_live(ctx: Context) -> dict[str, Any]:
    inbox, metrics = run_inbox(ctx)
    bare = run_bare(ctx)
    ours, theirs = inbox["measure"]["latency_ms"], bare["measure"]["latency_ms"]
    crowd = inbox["crowd"]
    closed = sum(int(n) for n in crowd["closed_by_server"].values())
    ok = (
        inbox["changes"] > 0
        and inbox["drops"] == 0
        and inbox["duplicates"] == 0
        and crowd["reloads"] == 0
        and closed == 0
        and inbox["measure"]["failed"] == 0
    )
    return {
        "inbox": inbox,
        "bare": bare,
        "server_metrics": metrics,
        "ratios": latency_ratios(ours, theirs),
        "verification": {
            "changes": inbox["changes"],
            "clients": crowd["clients"] + 1,
            "drops": inbox["drops"],
            "duplicates": inbox["duplicates"],
            "reloads": crowd["reloads"],
            "closed": closed,
            "failed_changes": inbox["measure"]["failed"],
            "bare_drops": bare["drops"],
            "ok": ok,
            "rule": "every change answered 200 reached every client of B (the crowd and the "
            "measuring client) once; no client closed by B or told to reload",
        },
    }
