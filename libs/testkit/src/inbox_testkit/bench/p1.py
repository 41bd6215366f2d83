"""P1 ingest: webhook-ingest against its ceilings and a peer, one case after the other.

``ingest``  webhook-ingest (200 only after the broker's confirm) on N keep-alive connections;
            afterwards its ``webhook_requests_total{outcome="accepted"}`` must match the
            load generator's 200s (with micro-batching, AMQP messages are not webhooks, so
            the queue is not the check here).
``raw``     (b) the broker ceiling for our message shape: the same bodies published straight
            to the same topology with aio-pika, as micro-batches of 64 bodies
            (``batch_message``, the ingest's format and its largest batch), N messages in
            flight on one confirm channel; the messages in a queue bound to the exchange must
            equal the confirmed publishes.
``raw1``    (b') the same with one body per message: a reference line (the old ceiling).
``bare``    (a) the one-process HTTP ceiling: a bare aiohttp server (uvloop) answering 200.
``pywa``    (c) the peer: pywa's async webhook on FastAPI + uvicorn (httptools, uvloop),
            signature checking on; its message handler's count must match the 200s.

Same bodies, same connection count; the server-side process and the load generator are
pinned to different cores. Every case also watches the broker's CPU: it is part of what a
request costs in ``ingest`` and the raw cases, and in ``bare`` and ``pywa`` (which publish
nothing) it shows the broker's background load from the rest of the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import resource
import secrets
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inbox_common.broker.topology import Names
from inbox_ingest.service import MAX_BATCH_BODIES
from inbox_testkit.bench.cli import child_command
from inbox_testkit.bench.harness import (
    BENCH_DIR,
    WEBHOOK_PATH,
    BenchError,
    Cores,
    Processes,
    affinity_of,
    cleanup_namespace,
    count_queue,
    declare_count_queue,
    get_json,
    pinned,
    profiler,
    queue_counts,
    run_child,
    scrape_outcomes,
    settled,
    start_profile,
    start_server,
    stop_profile,
    wait_http,
)
from inbox_testkit.bench.loadgen import CpuWatch, find_pid
from inbox_testkit.bench.stack import service_env, start_ingest

CASES = ("ingest", "bare", "raw", "raw1", "pywa")
TARGET_BARE_RATIO = 0.5
TARGET_PEER_RATIO = 1.5
TARGET_P99_MS = 50.0


@dataclass
class Context:
    args: argparse.Namespace
    cores: Cores
    bodies_path: Path
    workdir: Path
    processes: Processes
    run_id: str
    secret: str
    # Filled by the cases: P2's measured rate sets P3's default offered rate.
    results: dict[str, Any] = field(default_factory=dict)
    round: int = 1  # P1 runs its cases in ``--rounds`` interleaved rounds

    def label(self, case: str) -> str:
        """``case``, with the round when P1 runs several (names of profile files)."""
        return case if self.args.rounds == 1 else f"{case}-r{self.round}"


# -- load generation -----------------------------------------------------------------------


@dataclass
class Load:
    """The measured window's numbers plus the whole run's count of 2xx (for the check)."""

    result: dict[str, Any]
    ok_total: int
    exact: bool  # False for wrk: up to `connections` responses per wrk run go unread at stop
    runs: int


def wrk_run(
    url: str, path: Path, first: int, connections: int, seconds: int, cpu: int | None
) -> dict[str, Any]:
    cmd = pinned(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(BENCH_DIR / "webhooks.lua"),
            url,
            "--",
            str(path),
            str(first),
        ],
        cpu,
    )
    return run_child(cmd, "wrk", timeout=seconds + 60, cpu=cpu)


def generate_load(
    args: argparse.Namespace, url: str, path: Path, cores: Cores, watch: dict[str, int]
) -> Load:
    """Warm-up then measured load on ``url``; ``watch``: processes whose CPU use to report."""
    if args.generator == "wrk":
        runs = []
        first = 0
        if args.warmup > 0:
            warm = wrk_run(url, path, 0, args.connections, args.warmup, cores.load)
            runs.append(warm)
            # Start the measured run past every body the warm-up may have sent.
            first = warm["requests"] + warm["socket_errors"]["timeout"] + args.connections
        meter = CpuWatch(watch)
        meter.start()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.monotonic()
        measured = wrk_run(url, path, first, args.connections, args.duration, cores.load)
        wall = time.monotonic() - began
        used = meter.stop()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        # wrk is the only child reaped meanwhile: the growth of the children's usage is its.
        spent = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
        used["wrk"] = {"run": round(spent / wall, 3)}
        measured["cpu_cores"] = used
        runs.append(measured)
        ok_total = sum(r["requests"] - r["bad_status"] for r in runs)
        return Load(measured, ok_total, exact=False, runs=len(runs))
    cmd = child_command(
        "loadgen",
        url,
        str(path),
        f"--connections={args.connections}",
        f"--warmup={args.warmup}",
        f"--duration={args.duration}",
        watch=watch,
        cpu=cores.load,
    )
    result = run_child(cmd, "the Python load generator", timeout=args.warmup + args.duration + 60)
    return Load(result, result["ok_total"], exact=True, runs=1)


def broker_pid() -> dict[str, int]:
    """The local RabbitMQ's pid, when the broker runs on this machine (for its CPU use)."""
    pid = find_pid("beam.smp")
    return {} if pid is None else {"rabbitmq": pid}


def server_breakdown(base: str) -> dict[str, float]:
    """Where a request's time went inside webhook-ingest (means over the whole run).

    ``handler_ms``: the POST's time in the middleware chain (http_request_duration_seconds);
    ``publish_confirm_ms``: publish until the broker's confirm (webhook_publish_seconds).
    The client's mean latency minus ``handler_ms`` is spent reading the request, waiting
    for the event loop and writing the response.
    """
    with urllib.request.urlopen(base + "/metrics", timeout=5) as response:  # noqa: S310
        text = response.read().decode()
    values: dict[str, float] = {}
    wanted = {
        "webhook_publish_seconds_sum ": "publish_sum",
        "webhook_publish_seconds_count ": "publish_count",
        'http_request_duration_seconds_sum{method="POST",route="/webhooks/whatsapp"} ': "h_sum",
        'http_request_duration_seconds_count{method="POST",route="/webhooks/whatsapp"} ': (
            "h_count"
        ),
    }
    for line in text.splitlines():
        for prefix, key in wanted.items():
            if line.startswith(prefix):
                values[key] = float(line[len(prefix) :])
    out: dict[str, float] = {}
    if values.get("publish_count"):
        out["publish_confirm_ms"] = round(values["publish_sum"] / values["publish_count"] * 1e3, 3)
    if values.get("h_count"):
        out["handler_ms"] = round(values["h_sum"] / values["h_count"] * 1e3, 3)
    return out


def count_rule(load: Load, connections: int) -> tuple[int, str]:
    """The slack of a server-side count against the client's 200s, and the rule's text."""
    slack = 0 if load.exact else connections * load.runs
    if slack:
        return slack, (
            f"the client's 200s <= server count <= 200s + {slack} (responses in flight when "
            "the load generator stopped; wrk does not wait for them)"
        )
    return 0, "server count == the client's 200s"


# -- cases ---------------------------------------------------------------------------------


def case_ingest(ctx: Context) -> dict[str, Any]:
    args = ctx.args
    names = Names(f"{ctx.run_id}-a")
    try:
        service, base = start_ingest(
            ctx, service_env(ctx, names), log="ingest.log", cpu=ctx.cores.server
        )
        wait_http(base + "/api/health", service)  # 200 once the topology is declared
        # Equal broker work with case raw: the same extra queue bound to the exchange.
        asyncio.run(declare_count_queue(args.rabbitmq_url, names, with_topology=False))
        affinity = affinity_of(service.process.pid)
        profile = start_profile(args, ctx.run_id, service.process.pid, ctx.label("ingest"))
        watch = {"webhook-ingest": service.process.pid, **broker_pid()}
        try:
            load = generate_load(args, base + WEBHOOK_PATH, ctx.bodies_path, ctx.cores, watch)
        finally:
            stop_profile(profile)
        outcomes: dict[str, float] = settled(lambda: scrape_outcomes(base))
        breakdown = server_breakdown(base)
        counts = asyncio.run(queue_counts(args.rabbitmq_url, names))
        service.check_alive()
    finally:
        ctx.processes.stop_named("webhook-ingest")
        cleanup_namespace(args.rabbitmq_url, names)
    accepted = int(outcomes.get("accepted", 0))
    slack, rule = count_rule(load, args.connections)
    verification = {
        "client_200s": load.ok_total,
        "server_accepted": accepted,
        "server_outcomes": outcomes,
        # Informational: with micro-batches one AMQP message carries several webhooks.
        "amqp_messages": counts[count_queue(names)],
        "unread_at_stop": accepted - load.ok_total,
        "ok": load.ok_total <= accepted <= load.ok_total + slack,
        "rule": rule.replace("server count", 'webhook_requests_total{outcome="accepted"}'),
    }
    return {
        "result": load.result,
        "verification": verification,
        "namespace": names.namespace,
        "affinity": affinity,
        "bodies_cycled": load.ok_total > args.bodies,
        "server_breakdown": breakdown,
    }


def case_raw(ctx: Context, batch: int = MAX_BATCH_BODIES) -> dict[str, Any]:
    """(b), or with ``batch=1`` (b'): aio-pika publishing ``batch`` bodies per message."""
    args = ctx.args
    case = "raw" if batch > 1 else "raw1"
    names = Names(f"{ctx.run_id}-{case}")
    try:
        asyncio.run(declare_count_queue(args.rabbitmq_url, names, with_topology=True))
        cmd = child_command(
            "raw_publish",
            args.rabbitmq_url,
            names.webhooks_exchange,
            str(ctx.bodies_path),
            f"--concurrency={args.connections}",
            f"--batch={batch}",
            f"--warmup={args.warmup}",
            f"--duration={args.duration}",
            watch=broker_pid(),
            cpu=ctx.cores.server,
        )
        result = run_child(
            cmd,
            "raw_publish",
            timeout=args.warmup + args.duration + 90,
            on_start=profiler(args, ctx.run_id, ctx.label(case)),
        )
        counts = asyncio.run(queue_counts(args.rabbitmq_url, names))
    finally:
        cleanup_namespace(args.rabbitmq_url, names)
    counted = counts[count_queue(names)]
    return {
        "result": result,
        "verification": {
            "confirmed": result["ok_total"],
            "confirmed_bodies": result["bodies_total"],
            "count_queue_messages": counted,
            "service_queue_messages": counts[names.webhooks_queue],
            "ok": counted == result["ok_total"],
            "rule": "queue == confirmed publishes (AMQP messages)",
        },
        "namespace": names.namespace,
        "affinity": str(ctx.cores.server) if ctx.cores.server is not None else "all",
    }


def _http_server_case(
    ctx: Context,
    name: str,
    cmd: list[str],
    env: dict[str, str],
    case: str,
    after: Callable[[str], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Start a one-process HTTP server on ``--port``, load it, stop it."""
    args = ctx.args
    try:
        service, base = start_server(
            ctx.processes, name, cmd, log=ctx.workdir / f"{case}.log", cpu=ctx.cores.server, env=env
        )
        affinity = affinity_of(service.process.pid)
        watch = {name: service.process.pid, **broker_pid()}
        profile = start_profile(args, ctx.run_id, service.process.pid, ctx.label(case))
        try:
            load = generate_load(args, base + WEBHOOK_PATH, ctx.bodies_path, ctx.cores, watch)
        finally:
            stop_profile(profile)
        extra = after(base) if after is not None else {}
        service.check_alive()
    finally:
        ctx.processes.stop_named(name)
    out: dict[str, Any] = {"result": load.result, "affinity": affinity, **extra}
    if after is not None:
        slack, rule = count_rule(load, args.connections)
        handled = int(extra["handled"])
        out["verification"] = {
            "client_200s": load.ok_total,
            "handler_calls": handled,
            "unread_at_stop": handled - load.ok_total,
            "ok": load.ok_total <= handled <= load.ok_total + slack,
            "rule": rule.replace("server count", "pywa handler calls"),
        }
        out["bodies_cycled"] = load.ok_total > args.bodies
    return out


def case_bare(ctx: Context) -> dict[str, Any]:
    # Pinned by taskset (or the pre-exec fallback) like webhook-ingest, not by --cpu.
    cmd = [sys.executable, "-m", "inbox_testkit.bench.bare_server"]
    return _http_server_case(ctx, "bare server", cmd, dict(os.environ), "bare")


def case_pywa(ctx: Context) -> dict[str, Any]:
    if importlib.util.find_spec("pywa_async") is None:
        raise BenchError("pywa is not installed: run with `uv run --group bench` (make bench does)")
    env = {
        **os.environ,
        "WHATSAPP_WEBHOOK_SECRET": ctx.secret,
        "WHATSAPP_WEBHOOK_VERIFY_TOKEN": secrets.token_hex(8),
    }
    cmd = [sys.executable, "-m", "inbox_testkit.bench.pywa_peer"]

    def handled(base: str) -> dict[str, Any]:
        # pywa answers 200 first and runs the handler in a background task: let it finish.
        count = settled(lambda: get_json(base + "/bench/count")["handled"])
        return {"handled": count}

    return _http_server_case(ctx, "pywa peer", cmd, env, "pywa", after=handled)


def case_raw_one(ctx: Context) -> dict[str, Any]:
    return case_raw(ctx, batch=1)


RUNNERS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "ingest": case_ingest,
    "bare": case_bare,
    "raw": case_raw,
    "raw1": case_raw_one,
    "pywa": case_pywa,
}
