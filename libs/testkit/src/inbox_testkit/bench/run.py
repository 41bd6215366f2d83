"""The benchmarks (``make bench``): ingest, consume, end to end and memory, side by side.

P1 ingest    webhook-ingest against (a) a bare aiohttp server, (b) raw aio-pika publishing
             micro-batches of 64 with pipelined confirms (b') the same, one body per
             message, and (c) pywa's webhook on FastAPI + uvicorn; wrk on 50 connections,
             the server and the load generator pinned to different cores; CPU per request
             includes the broker's.
P2 consume   the same events queued as micro-batches and as one body per message, each
             backlog drained by inbox-api and by a minimal hand-written consumer (the
             ceiling) on the same store; insert_many as a reference.
P3 e2e       a steady offered rate (half of inbox-api's P2 rate on the one-body backlog) for
             60 s; latency from the POST until GET /api/conversations/{id}/messages lists it.
send         agents' texts through inbox-api to the whatsapp-sandbox at a steady rate: POST ->
             the sandbox has it, POST -> status "sent" through REST; the same texts POSTed
             straight to a sandbox as the baseline.
live         changes on one inbox-api replica, as events on another replica's 500 WebSocket
             clients; a bare aiohttp fan-out server fed the same way as the baseline; the
             replica's memory with the clients.
P5 memory    the peak resident set of every process started for the groups above.

The machine is small and noisy, so the report is ratios of cases measured in the same run,
never an absolute pass/fail; the targets are printed next to them (report.py). Every process
started here is stopped, every broker object of the run's namespaces deleted and the temp dir
removed, even on Ctrl-C or a failure. See libs/testkit/src/inbox_testkit/bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from inbox_common.store.token_cipher import TokenCipher
from inbox_ingest.service import MAX_BATCH_BODIES
from inbox_testkit.backends import REPO_ROOT
from inbox_testkit.bench import bodies
from inbox_testkit.bench.harness import RESULTS_DIR, Processes, pick_cores
from inbox_testkit.bench.live import case_live
from inbox_testkit.bench.p1 import RUNNERS as P1_RUNNERS
from inbox_testkit.bench.p1 import Context
from inbox_testkit.bench.p2 import case_consume
from inbox_testkit.bench.p3 import case_e2e
from inbox_testkit.bench.report import (
    CASES,
    GROUPS,
    LABELS,
    compute_ratios,
    errors,
    ok,
    rate,
    table,
    targets,
)
from inbox_testkit.bench.send import case_send

RUNNERS: dict[str, Callable[[Context], dict[str, Any]]] = {
    **P1_RUNNERS,
    "consume": case_consume,
    "e2e": case_e2e,
    "send": case_send,
    "live": case_live,
}
WRK_INSTALL = "scripts/bootstrap.sh --bench   (as root: Debian's wrk package; make bench does it)"
P1_DURATION = 10
P3_DURATION = 60


# -- report --------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    rabbitmq = "?"
    if shutil.which("rabbitmqctl"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(
                ["rabbitmqctl", "version"], capture_output=True, text=True, timeout=20, check=False
            )
            if done.returncode == 0 and done.stdout.strip():
                rabbitmq = done.stdout.strip().splitlines()[-1]
    wrk = "absent"
    if shutil.which("wrk"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=5)
            wrk = (done.stdout + done.stderr).strip().splitlines()[0]
    versions = {}
    packages = ("aiohttp", "aio-pika", "aiormq", "uvloop", "pymongo", "secantusdb")
    for package in (*packages, "pywa", "fastapi", "uvicorn", "httptools"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    memory = "?"
    with contextlib.suppress(OSError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory": memory,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "rabbitmq": rabbitmq,
        "wrk": wrk,
        "packages": versions,
    }


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the ingest, the consumer and the whole pipeline (make bench).",
    )
    parser.add_argument(
        "--only",
        default="p1,p2,p3,send,live",
        help="comma-separated groups or cases: p1 (= ingest,bare,raw,raw1,pywa), p2 (= "
        "consume), p3 (= e2e), send, live; P5 (memory) is measured during whatever runs "
        "(default: p1,p2,p3,send,live)",
    )
    parser.add_argument(
        "--duration",
        type=int,
        default=None,
        help=f"measured seconds of each P1 case and of P3 (default: {P1_DURATION} for P1, "
        f"{P3_DURATION} for P3)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="P1: interleaved rounds of its cases; each case reports its fastest round",
    )
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured seconds before")
    parser.add_argument("--connections", type=int, default=50, help="P1 concurrent connections")
    parser.add_argument(
        "--bodies", type=int, default=150_000, help="P1: unique pre-signed bodies to cycle through"
    )
    parser.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="P1: wrk when installed (auto), or the Python aiohttp load generator",
    )
    parser.add_argument("--contacts", type=int, default=300, help="P2: contacts in the backlog")
    parser.add_argument(
        "--per-contact", type=int, default=10, help="P2: events per contact (backlog = product)"
    )
    parser.add_argument(
        "--p2-timeout", type=float, default=240.0, help="P2: give up a drain after this"
    )
    parser.add_argument(
        "--p2-batch",
        type=int,
        default=MAX_BATCH_BODIES,
        help="P2: bodies per AMQP message of the micro-batched backlog (default: the "
        f"ingest's largest batch, {MAX_BATCH_BODIES})",
    )
    parser.add_argument(
        "--p2-rounds",
        type=int,
        default=2,
        help="P2: interleaved rounds of its four drains; each reports its fastest round",
    )
    parser.add_argument(
        "--p2-minimal-in-flight",
        type=int,
        default=1,
        help="P2: batches the minimal consumer writes at once (default 1: one at a time, as "
        "the ceiling is defined; more probes what overlapping writes buy)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="P3: webhooks offered a second (default: half of P2's measured rate)",
    )
    parser.add_argument(
        "--p3-duration", type=int, default=None, help="P3: measured seconds (overrides --duration)"
    )
    parser.add_argument("--p3-contacts", type=int, default=50, help="P3: conversations written")
    parser.add_argument(
        "--p3-tracked", type=int, default=10, help="P3: conversations whose messages are timed"
    )
    parser.add_argument(
        "--poll-interval-ms", type=float, default=10.0, help="P3: GET interval while waiting"
    )
    parser.add_argument("--send-rate", type=float, default=50.0, help="send: texts a second")
    parser.add_argument("--send-duration", type=int, default=30, help="send: measured seconds")
    parser.add_argument(
        "--send-contacts", type=int, default=5, help="send: conversations the texts go to"
    )
    parser.add_argument(
        "--send-tracked",
        type=int,
        default=1,
        help="send: conversations whose texts are polled until sent (each poller adds up to "
        "100 GETs a second, two store queries each, to the store the sends need)",
    )
    parser.add_argument(
        "--live-clients", type=int, default=500, help="live: WebSocket clients on replica B"
    )
    parser.add_argument("--live-rate", type=float, default=20.0, help="live: changes a second")
    parser.add_argument("--live-duration", type=int, default=20, help="live: measured seconds")
    parser.add_argument(
        "--live-conversations", type=int, default=10, help="live: conversations changed"
    )
    parser.add_argument(
        "--rabbitmq-url",
        default=os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/"),
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="let the OS place the processes (for comparison)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record each case's server-side process(es) with py-spy (py-spy or uvx on PATH)",
    )
    parser.add_argument(
        "--profile-native", action="store_true", help="with --profile: C frames too (slower)"
    )
    parser.add_argument(
        "--profile-format",
        choices=("flamegraph", "speedscope", "raw"),
        default="flamegraph",
        help="py-spy output: an SVG flame graph, speedscope JSON, or collapsed stacks",
    )
    args = parser.parse_args(argv)
    wanted: set[str] = set()
    for item in (c.strip().lower() for c in args.only.split(",") if c.strip()):
        if item in GROUPS:
            wanted.update(GROUPS[item])
        elif item in CASES:
            wanted.add(item)
        else:
            parser.error(
                f"--only: unknown {item!r}; use p1,p2,p3,send,live or of {','.join(CASES)}"
            )
    if not wanted:
        parser.error("--only selects no case")
    args.only = [c for c in CASES if c in wanted]
    args.p3_duration = args.p3_duration or args.duration or P3_DURATION
    args.duration = args.duration or P1_DURATION
    if args.rounds < 1:
        parser.error("--rounds >= 1")
    if args.duration < 1 or args.warmup < 0 or args.connections < 1 or args.bodies < 100:
        parser.error("--duration >= 1, --warmup >= 0, --connections >= 1, --bodies >= 100")
    if args.contacts < 1 or args.per_contact < 1 or not 1 <= args.p3_tracked <= args.p3_contacts:
        parser.error("--contacts, --per-contact >= 1; 1 <= --p3-tracked <= --p3-contacts")
    if args.p2_minimal_in_flight < 1 or args.p2_rounds < 1:
        parser.error("--p2-minimal-in-flight >= 1, --p2-rounds >= 1")
    if args.send_rate <= 0 or args.send_duration < 1 or args.live_rate <= 0:
        parser.error("--send-rate, --live-rate > 0; --send-duration >= 1")
    if not 0 <= args.send_tracked <= args.send_contacts or args.live_duration < 1:
        parser.error("0 <= --send-tracked <= --send-contacts; --live-duration >= 1")
    if args.live_clients < 1 or args.live_conversations < 1:
        parser.error("--live-clients, --live-conversations >= 1")
    if not 2 <= args.p2_batch <= MAX_BATCH_BODIES:
        parser.error(f"2 <= --p2-batch <= {MAX_BATCH_BODIES} (the ingest batches no more)")
    return args


def run_case(ctx: Context, name: str) -> dict[str, Any]:
    """One case; a failure is recorded in its result and the run goes on."""
    suffix = f" (round {ctx.round} of {ctx.args.rounds})" if name in GROUPS["p1"] else ""
    print(f"running {LABELS[name]}{suffix} ...", flush=True)
    ctx.processes.case = name
    try:
        return RUNNERS[name](ctx)
    except Exception as exc:
        print(f"  {name} failed: {exc}", file=sys.stderr)
        return {"error": str(exc)}


def best_round(results: list[dict[str, Any]]) -> dict[str, Any]:
    """A P1 case's report: its fastest round (noise only ever slows a case down), every
    round's numbers, and its check over all rounds."""
    failures = [r for r in results if "error" in r]
    if failures:
        return {"error": failures[0]["error"], "rounds": len(results)}
    fastest = max(results, key=rate)
    best = dict(fastest)
    best["rounds"] = [
        {
            "rate": round(rate(r), 1),
            "p50_ms": r["result"]["latency_ms"]["p50"],
            "p99_ms": r["result"]["latency_ms"]["p99"],
            "errors": errors(r),
            **({"check_ok": r["verification"]["ok"]} if "verification" in r else {}),
        }
        for r in results
    ]
    if "verification" in best:
        best["verification"] = {
            **best["verification"],
            "ok": all(r["verification"]["ok"] for r in results),
            "every_round": [r["verification"] for r in results],
        }
    return best


def choose_generator(wanted: str, needed: bool) -> str:
    has_wrk = shutil.which("wrk") is not None
    if wanted == "wrk" and not has_wrk:
        raise SystemExit(f"wrk is not installed; install it with:\n  {WRK_INSTALL}")
    if wanted == "python" or not has_wrk:
        if not has_wrk and needed:
            print(f"wrk not found; install it with:\n  {WRK_INSTALL}")
            print("falling back to the Python aiohttp load generator (it saturates sooner).")
        return "python"
    return "wrk"


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # inbox-api needs a key for channel tokens; the bench's channels are its own.
    os.environ.setdefault("CHANNEL_TOKEN_KEYS", TokenCipher.new_key())
    args.generator = choose_generator(
        args.loadgen, needed=any(c in args.only for c in GROUPS["p1"])
    )
    started = datetime.now(UTC)
    began = time.monotonic()
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    run_id = f"bench-{stamp}-{secrets.token_hex(3)}"
    cores = pick_cores(pin=not args.no_pin)
    generator_label = "wrk" if args.generator == "wrk" else "python-aiohttp (fallback)"
    print(
        f"bench {run_id}: cases {','.join(args.only)}; P1 {args.warmup}s warm-up + "
        f"{args.duration}s each on {args.connections} connections ({generator_label}); "
        f"P2 backlog {args.contacts * args.per_contact}; P3 {args.p3_duration}s; send "
        f"{args.send_rate:g}/s for {args.send_duration}s; live {args.live_clients} clients, "
        f"{args.live_rate:g} changes/s for {args.live_duration}s"
    )
    print(f"cores: {cores.describe()}")
    report: dict[str, Any] = {
        "run_id": run_id,
        "started_at": started.isoformat(),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "args": {
            "duration": args.duration,
            "p3_duration": args.p3_duration,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "connections": args.connections,
            "bodies": args.bodies,
            "only": args.only,
            "events": args.contacts * args.per_contact,
            "contacts": args.contacts,
            "p2_batch": args.p2_batch,
            "p2_rounds": args.p2_rounds,
            "p2_minimal_in_flight": args.p2_minimal_in_flight,
            "rate": args.rate,
            "send_rate": args.send_rate,
            "send_duration": args.send_duration,
            "send_contacts": args.send_contacts,
            "send_tracked": args.send_tracked,
            "live_clients": args.live_clients,
            "live_rate": args.live_rate,
            "live_duration": args.live_duration,
            "live_conversations": args.live_conversations,
        },
        "machine": machine_info(),
        "cores": {"server": cores.server, "load": cores.load, "described": cores.describe()},
        "load_generator": generator_label,
        "cases": {},
        "ratios": {},
        "targets": targets(),
        "memory": [],
    }
    processes = Processes()
    with terminate_as_interrupt(), tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        secret = secrets.token_hex(16)
        bodies_path = workdir / "bodies.tsv"
        if any(c in args.only for c in GROUPS["p1"]):
            pairs = bodies.make(args.bodies, secret.encode())
            sizes = sorted(len(body) for _, body in pairs)
            report["bodies"] = {
                "count": len(pairs),
                "bytes_min": sizes[0],
                "bytes_median": sizes[len(sizes) // 2],
                "bytes_max": sizes[-1],
            }
            bodies.write(bodies_path, pairs)
            del pairs
        ctx = Context(args, cores, bodies_path, workdir, processes, run_id, secret)
        p1 = [name for name in args.only if name in GROUPS["p1"]]
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in p1}
        try:
            # P1's cases in interleaved rounds, so that a burst of noise from the rest of
            # the machine does not land on one case only.
            for ctx.round in range(1, (args.rounds if p1 else 0) + 1):
                for name in p1:
                    rounds[name].append(run_case(ctx, name))
            for name, results in rounds.items():
                report["cases"][name] = best_round(results)
            for name in args.only:
                if name not in rounds:
                    report["cases"][name] = run_case(ctx, name)
        finally:
            processes.stop_all()
            report["memory"] = processes.memory
    cases = report["cases"]
    compute_ratios(report)
    failed = any("error" in case for case in cases.values())
    for name in CASES:
        if ok(cases, name) and "verification" in cases[name]:
            failed |= not cases[name]["verification"]["ok"]
    report["wall_s"] = round(time.monotonic() - began, 1)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"{stamp}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(table(report))
    print()
    for name in CASES:
        if ok(cases, name) and "verification" in cases[name]:
            check = {k: v for k, v in cases[name]["verification"].items() if k != "every_round"}
            print(f"{name} check: {json.dumps(check)}")
    print(f"cores: {cores.describe()}")
    print(f"wall time {report['wall_s']:.0f}s; results: {out.relative_to(REPO_ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; processes stopped and the run's broker objects deleted")
        sys.exit(130)
