"""The benchmarks (``make bench``): ingest, consume, end to end and memory, side by side.

P1 ingest    webhook-ingest against (a) a bare aiohttp server, (b) raw aio-pika publishing
             with pipelined confirms and (c) pywa's webhook on FastAPI + uvicorn; wrk on
             50 connections, the server and the load generator pinned to different cores.
P2 consume   a backlog of events in the queue, drained by inbox-api into the store, against
             the store's raw insert_many rate in the same run.
P3 e2e       a steady offered rate (half of P2's) for 60 s; latency from the POST until the
             message is listed by GET /api/conversations/{id}/messages.
P5 memory    the peak resident set of every process started for P1-P3.

The machine is small and noisy, so the report is ratios of cases measured in the same run,
never an absolute pass/fail; the targets are printed next to them. Every process started
here is stopped, every broker object of the run's namespaces deleted and the temp dir
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

from inbox_testkit.backends import REPO_ROOT
from inbox_testkit.bench import bodies
from inbox_testkit.bench.harness import RESULTS_DIR, Processes, pick_cores
from inbox_testkit.bench.p1 import (
    RUNNERS as P1_RUNNERS,
)
from inbox_testkit.bench.p1 import (
    TARGET_P99_MS,
    TARGET_PEER_RATIO,
    TARGET_RAW_RATIO,
    Context,
)
from inbox_testkit.bench.p2 import TARGET_RATIO as TARGET_CONSUME_RATIO
from inbox_testkit.bench.p2 import case_consume
from inbox_testkit.bench.p3 import TARGET_P99_MS as TARGET_E2E_P99_MS
from inbox_testkit.bench.p3 import case_e2e

CASES = ("ingest", "bare", "raw", "pywa", "consume", "e2e")
GROUPS = {"p1": ("ingest", "bare", "raw", "pywa"), "p2": ("consume",), "p3": ("e2e",), "p5": ()}
RUNNERS: dict[str, Callable[[Context], dict[str, Any]]] = {
    **P1_RUNNERS,
    "consume": case_consume,
    "e2e": case_e2e,
}
SERVICES = ("webhook-ingest", "inbox-api")
TARGET_RSS_MB = 100.0
WRK_INSTALL = "apt-get update && apt-get install -y wrk   (as root; Debian/Ubuntu package wrk)"
P1_DURATION = 10
P3_DURATION = 60

LABELS = {
    "ingest": "P1 ingest (webhook-ingest)",
    "bare": "(a) bare aiohttp, HTTP ceiling",
    "raw": "(b) raw aio-pika, broker ceiling",
    "pywa": "(c) pywa + FastAPI + uvicorn",
    "consume": "P2 consume (inbox-api)",
    "e2e": "P3 end to end",
}


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


def ok(cases: dict[str, Any], name: str) -> bool:
    return name in cases and "error" not in cases[name]


def rate(case: dict[str, Any]) -> float:
    result = case["result"]
    return float(result["requests"]) / float(result["duration_s"] or 1)


def errors(case: dict[str, Any]) -> int:
    result = case["result"]
    return int(result["bad_status"]) + sum(int(v) for v in result["socket_errors"].values())


def render(rows: list[tuple[str, ...]], left: tuple[int, ...] = (0,)) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        cells = [
            cell.ljust(widths[j]) if j in left or j == len(row) - 1 else cell.rjust(widths[j])
            for j, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def mark(good: bool, yes: str = "meets", no: str = "MISSES") -> str:
    return yes if good else no


def p1_table(report: dict[str, Any]) -> list[str]:
    cases: dict[str, Any] = report["cases"]
    if not any(name in cases for name in GROUPS["p1"]):
        return []
    generator = report["load_generator"]
    connections = report["args"]["connections"]
    rows: list[tuple[str, ...]] = [
        ("case", "req/s", "p50 ms", "p99 ms", "errors", "req/CPU-s", "check / notes")
    ]
    for name in GROUPS["p1"]:
        case = cases.get(name)
        if case is None:
            continue
        if "error" in case:
            rows.append((LABELS[name], "-", "-", "-", "-", "-", "FAILED: " + case["error"][:70]))
            continue
        latency = case["result"]["latency_ms"]
        if name == "raw":
            note = f"{connections} publishes in flight, 1 channel"
        else:
            note = f"{connections} conns, {generator}"
        check = case.get("verification")
        if check is not None:
            if name == "ingest":
                note += f"; accepted={check['server_accepted']} vs 200s={check['client_200s']}"
            elif name == "raw":
                note += f"; queue={check['count_queue_messages']} vs confirmed"
            elif name == "pywa":
                note += f"; handler={check['handler_calls']} vs 200s={check['client_200s']}"
            note += " " + mark(check["ok"], "OK", "MISMATCH")
        if case.get("bodies_cycled"):
            note += "; bodies reused"
        if len(case.get("rounds", [])) > 1:
            note += "; rounds " + "/".join(f"{r['rate']:,.0f}" for r in case["rounds"])
        rows.append(
            (
                LABELS[name],
                f"{rate(case):,.0f}",
                f"{latency['p50']:.2f}",
                f"{latency['p99']:.2f}",
                str(errors(case)),
                efficiency(case),
                note,
            )
        )
    lines = ["P1 ingest", *render(rows)]
    ratios: dict[str, Any] = report["ratios"]
    if "ingest/raw" in ratios:
        value = ratios["ingest/raw"]
        lines.append(
            f"ingest/raw  = {value:.2f}   (target >= {TARGET_RAW_RATIO}: "
            f"{mark(value >= TARGET_RAW_RATIO)})"
        )
    if "ingest/pywa" in ratios:
        value = ratios["ingest/pywa"]
        lines.append(
            f"ingest/pywa = {value:.2f}   (target >= {TARGET_PEER_RATIO}: "
            f"{mark(value >= TARGET_PEER_RATIO)})"
        )
    if "ingest/bare" in ratios:
        lines.append(f"ingest/bare = {ratios['ingest/bare']:.2f}   (the HTTP ceiling; no target)")
    per_cpu = [
        f"{key.removesuffix(' per CPU-s')} = {value:.2f}"
        for key, value in ratios.items()
        if key.endswith(" per CPU-s")
    ]
    if per_cpu:
        lines.append(
            "per CPU-second of the server process: " + ", ".join(per_cpu) + " (less sensitive "
            "to neighbours than req/s)"
        )
    if ok(cases, "ingest"):
        p99 = cases["ingest"]["result"]["latency_ms"]["p99"]
        lines.append(
            f"ingest p99  = {p99:.1f} ms (target <= {TARGET_P99_MS:g} ms: "
            f"{mark(p99 <= TARGET_P99_MS)})"
        )
    lines.append(
        "CPU in the measured window, in cores: run = on a CPU, wait = runnable but queued "
        "behind other work; req/CPU-s = req/s over the server-side process's run"
    )
    for name in GROUPS["p1"]:
        if ok(cases, name):
            lines.append(f"  {name:<7} {cpu_text(cases[name]['result'].get('cpu_cores', {}))}")
    ingest = cases.get("ingest")
    if ingest is not None and ingest.get("server_breakdown"):
        parts = ingest["server_breakdown"]
        client = ingest["result"]["latency_ms"]["mean"]
        lines.append(
            f"ingest mean latency {client:.1f} ms: handler {parts.get('handler_ms', 0):.1f} ms "
            f"(of which publish->confirm {parts.get('publish_confirm_ms', 0):.1f} ms), "
            "the rest reading/queueing/writing"
        )
    return lines


def efficiency(case: dict[str, Any]) -> str:
    """Requests per CPU-second of the server-side process: steadier than req/s when the
    machine is shared, since a neighbour takes CPU time away but does not make it dearer."""
    used = case["result"].get("cpu_cores", {})
    server = next(
        (v["run"] for k, v in used.items() if k not in ("wrk", "rabbitmq", "load generator")),
        0.0,
    )
    return f"{rate(case) / server:,.0f}" if server else "-"


def cpu_text(used: dict[str, dict[str, float]]) -> str:
    return (
        ", ".join(
            f"{who} run {value['run']:.2f}"
            + (f" wait {value['wait']:.2f}" if "wait" in value else "")
            for who, value in used.items()
        )
        or "-"
    )


def p2_table(report: dict[str, Any]) -> list[str]:
    case = report["cases"].get("consume")
    if case is None:
        return []
    if "error" in case:
        return ["P2 consume", f"FAILED: {case['error'][:300]}"]
    consume = case["consume"]
    raw = case["raw_insert"]
    check = case["verification"]
    rows: list[tuple[str, ...]] = [
        ("case", "events/s", "events", "seconds", "notes"),
        (
            LABELS["consume"],
            f"{consume['rate']:,.0f}",
            str(consume["measured_events"]),
            f"{consume['measured_s']:.2f}",
            f"fully applied (ledger + contact + conversation + message); "
            f"{case['contacts']} contacts; check {mark(check['ok'], 'OK', 'MISMATCH')}",
        ),
        (
            "raw insert_many (store ceiling)",
            f"{raw['rate']:,.0f}",
            str(raw["documents"]),
            f"{raw['documents'] / raw['rate']:.2f}",
            f"batches of {raw['batch']}, median of {raw['rounds']} rounds {raw['rates']}",
        ),
    ]
    if "upsert_rate" in raw:
        rows.append(
            (
                "bulk upserts (reference)",
                f"{raw['upsert_rate']:,.0f}",
                str(raw["upserts"]),
                f"{raw['upserts'] / raw['upsert_rate']:.2f}",
                "UpdateOne by unique wamid, unordered bulk_write of 1000: the consumer's kind "
                "of write",
            )
        )
    ratio = float(case["ratio"])
    return [
        "P2 consume",
        *render(rows),
        f"consume/raw insert = {ratio:.3f} (target >= {TARGET_CONSUME_RATIO}: "
        f"{mark(ratio >= TARGET_CONSUME_RATIO)})",
        f"  backlog of {case['events']} published in {case['preload_s']:.1f}s; the queue began "
        f"to drain {consume['first_delivery_after_s']:.1f}s after inbox-api was spawned",
        f"  CPU while draining: {cpu_text(consume.get('cpu_cores', {}))}",
    ]


def p3_table(report: dict[str, Any]) -> list[str]:
    case = report["cases"].get("e2e")
    if case is None:
        return []
    if "error" in case:
        return ["P3 end to end", f"FAILED: {case['error'][:300]}"]
    result = case["result"]
    post = result["post_latency_ms"]
    visible = result["visible_latency_ms"]
    check = case["verification"]
    span = max(1.0, float(result["duration_s"]))
    rows: list[tuple[str, ...]] = [
        ("measure", "count", "p50 ms", "p90 ms", "p99 ms", "max ms", "notes"),
        (
            "POST -> 200 (ingest)",
            str(post["count"]),
            f"{post['p50']:.1f}",
            f"{post['p90']:.1f}",
            f"{post['p99']:.1f}",
            f"{post['max']:.1f}",
            f"offered {result['offered_rate']:g}/s ({case['rate_source']}), sent "
            f"{result['sent_rate']:.1f}/s, non-200 {result['bad_status'] + result['errors']}",
        ),
        (
            "POST -> visible via GET",
            str(visible["count"]),
            f"{visible['p50']:.1f}",
            f"{visible['p90']:.1f}",
            f"{visible['p99']:.1f}",
            f"{visible['max']:.1f}",
            f"{result['tracked']} of {result['contacts']} conversations timed, each polled every "
            f"{result['poll_interval_ms']:g} ms while waiting ({result['gets'] / span:.0f} GET/s, "
            f"GET p50 {result['get_latency_ms']['p50']:.1f} ms); not visible after the "
            f"drain {result['sampled_unseen']} (counted at the time waited)",
        ),
    ]
    p99 = float(visible["p99"])
    bound = ">= " if result["sampled_unseen"] else ""
    return [
        f"P3 end to end ({result['duration_s']:.0f}s)",
        *render(rows),
        f"visible p99 {bound}{p99:.1f} ms (target <= {TARGET_E2E_P99_MS:g} ms: "
        f"{mark(p99 <= TARGET_E2E_P99_MS)}); check: accepted {check['ingest_accepted']}, "
        f"processed {check['ledger_processed']} {mark(check['ok'], 'OK', 'MISMATCH')}",
        f"  backlog: queue ready (not yet delivered to inbox-api) peaked at "
        f"{result.get('queue_ready_max', '?')} AMQP messages; visible p50 per 10 s of sending "
        "(ms): " + " ".join(f"{v:g}" for v in result.get("visible_p50_ms_by_10s", [])),
        f"  CPU: {cpu_text(result.get('cpu_cores', {}))}",
    ]


def p5_table(report: dict[str, Any]) -> list[str]:
    memory: list[dict[str, Any]] = report["memory"]
    if not memory:
        return []
    cases = [c for c in CASES if any(m["case"] == c for m in memory)]
    processes = list(dict.fromkeys(m["process"] for m in memory))
    rows: list[tuple[str, ...]] = [("process", *cases, "peak MiB", "target")]
    for process in processes:
        cells = []
        for case in cases:
            peaks = [
                m["peak_rss_mb"] for m in memory if m["case"] == case and m["process"] == process
            ]
            cells.append(f"{max(peaks):.1f}" if peaks else "-")
        peak = max(m["peak_rss_mb"] for m in memory if m["process"] == process)
        target = (
            f"<= {TARGET_RSS_MB:g}: {mark(peak <= TARGET_RSS_MB)}"
            if process in SERVICES
            else "(not ours)"
        )
        rows.append((process, *cells, f"{peak:.1f}", target))
    return ["P5 memory: peak RSS (VmHWM) per process and case, MiB", *render(rows)]


def table(report: dict[str, Any]) -> str:
    parts = [p1_table(report), p2_table(report), p3_table(report), p5_table(report)]
    return "\n\n".join("\n".join(p) for p in parts if p)


def compute_ratios(report: dict[str, Any]) -> None:
    cases = report["cases"]
    ratios = report["ratios"]
    for peer in ("raw", "bare", "pywa"):
        if ok(cases, "ingest") and ok(cases, peer):
            ratios[f"ingest/{peer}"] = rate(cases["ingest"]) / rate(cases[peer])
    for peer in ("bare", "pywa"):
        if ok(cases, "ingest") and ok(cases, peer):
            ingest, other = efficiency(cases["ingest"]), efficiency(cases[peer])
            if ingest != "-" and other != "-":
                ratios[f"ingest/{peer} per CPU-s"] = float(ingest.replace(",", "")) / float(
                    other.replace(",", "")
                )
    if ok(cases, "consume"):
        ratios["consume/raw_insert"] = cases["consume"]["ratio"]
    services: dict[str, float] = {}
    for entry in report["memory"]:
        name = entry["process"]
        services[name] = max(services.get(name, 0.0), entry["peak_rss_mb"])
    report["peak_rss_mb"] = services


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the ingest, the consumer and the whole pipeline (make bench).",
    )
    parser.add_argument(
        "--only",
        default="p1,p2,p3",
        help="comma-separated groups or cases: p1 (= ingest,bare,raw,pywa), p2 (= consume), "
        "p3 (= e2e); P5 (memory) is measured during whatever runs (default: p1,p2,p3)",
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
        "--p2-timeout", type=float, default=240.0, help="P2: give up draining after this"
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
            parser.error(f"--only: unknown {item!r}; use p1,p2,p3 or of {','.join(CASES)}")
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
    args.generator = choose_generator(args.loadgen, needed=any(c in args.only for c in CASES[:4]))
    started = datetime.now(UTC)
    began = time.monotonic()
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    run_id = f"bench-{stamp}-{secrets.token_hex(3)}"
    cores = pick_cores(pin=not args.no_pin)
    generator_label = "wrk" if args.generator == "wrk" else "python-aiohttp (fallback)"
    print(
        f"bench {run_id}: cases {','.join(args.only)}; P1 {args.warmup}s warm-up + "
        f"{args.duration}s each on {args.connections} connections ({generator_label}); "
        f"P2 backlog {args.contacts * args.per_contact}; P3 {args.p3_duration}s"
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
            "rate": args.rate,
        },
        "machine": machine_info(),
        "cores": {"server": cores.server, "load": cores.load, "described": cores.describe()},
        "load_generator": generator_label,
        "cases": {},
        "ratios": {},
        "targets": {
            "ingest/raw": f">= {TARGET_RAW_RATIO}",
            "ingest/pywa": f">= {TARGET_PEER_RATIO}",
            "ingest p99 ms": f"<= {TARGET_P99_MS}",
            "consume/raw_insert": f">= {TARGET_CONSUME_RATIO}",
            "e2e visible p99 ms": f"<= {TARGET_E2E_P99_MS}",
            "peak rss mb (each service)": f"<= {TARGET_RSS_MB}",
        },
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
