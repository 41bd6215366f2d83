"""The ingest benchmark (``make bench``): webhook-ingest against its two ceilings.

(A) ingest  webhook-ingest receiving unique pre-signed webhooks on N keep-alive connections;
            afterwards the messages in a queue bound to the exchange must equal the 200s.
(B) raw     the broker ceiling: the same messages published straight to the same topology
            with aio-pika, N publishes in flight on one confirm channel.
(C) bare    the one-process HTTP ceiling: a bare aiohttp server (uvloop) answering 200.

The machine is small and noisy, so the report is the three cases side by side and the
ratios ingest/raw and ingest/bare of one run, never an absolute pass/fail. The server
process (and the raw publisher) and the load generator are pinned to different cores when
there are two. Every service started here is stopped, and every broker object of the run's
namespaces deleted, even on Ctrl-C or a failure. See tests/bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a script: `python tests/bench/run.py`
    sys.path.insert(0, str(REPO_ROOT))

import aio_pika  # noqa: E402

from inbox_common.broker.topology import Names, declare, topology  # noqa: E402
from tests.bench import bodies  # noqa: E402
from tests.bench.loadgen import CpuWatch, find_pid  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
WEBHOOK_PATH = "/webhooks/whatsapp"
CASES = ("ingest", "raw", "bare")
WRK_INSTALL = "apt-get update && apt-get install -y wrk   (as root; Debian/Ubuntu package wrk)"
TARGET_RAW_RATIO = 0.9
TARGET_P99_MS = 50.0
JSON_MARK = "BENCH_JSON "


class BenchError(RuntimeError):
    """A case could not be measured; the message says why."""


# -- processes -----------------------------------------------------------------------------


@dataclass
class Cores:
    server: int | None
    load: int | None

    def describe(self) -> str:
        if self.server is None:
            return "not pinned (--no-pin, or fewer than two usable cores)"
        return (
            f"server/raw publisher on core {self.server}, load generator on core {self.load} "
            f"(pinned with {pinning_tool()}; the broker is not pinned)"
        )


def pick_cores(pin: bool = True) -> Cores:
    usable = sorted(os.sched_getaffinity(0))
    if not pin or len(usable) < 2:
        return Cores(None, None)
    return Cores(server=usable[0], load=usable[1])


def pinned(cmd: Sequence[str], cpu: int | None) -> list[str]:
    """``cmd`` under ``taskset -c cpu`` when taskset exists (else see pin_in_child())."""
    if cpu is not None and shutil.which("taskset"):
        return ["taskset", "-c", str(cpu), *cmd]
    return list(cmd)


def pin_in_child(cpu: int | None) -> Callable[[], None] | None:
    """Without taskset: a pre-exec hook pinning the child with os.sched_setaffinity."""
    if cpu is None or shutil.which("taskset"):
        return None

    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    return pin


def pinning_tool() -> str:
    return "taskset" if shutil.which("taskset") else "os.sched_setaffinity"


def affinity_of(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Processes:
    """Every long-running child; stop_all() is called from a finally block."""

    running: list[Service] = field(default_factory=list)

    def start(
        self, name: str, cmd: Sequence[str], *, cpu: int | None, log: Path, env: dict[str, str]
    ) -> Service:

        with log.open("wb") as out:
            process = subprocess.Popen(
                pinned(cmd, cpu),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=REPO_ROOT,
                start_new_session=True,  # Ctrl-C reaches us only; we stop it in order
                preexec_fn=pin_in_child(cpu),
            )
        service = Service(name, process, log)
        self.running.append(service)
        return service

    def stop(self, service: Service) -> None:
        process = service.process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if service in self.running:
            self.running.remove(service)

    def stop_all(self) -> None:
        for service in list(reversed(self.running)):
            try:
                self.stop(service)
            except Exception as exc:  # keep stopping the others
                print(f"warning: could not stop {service.name}: {exc}", file=sys.stderr)


def wait_http(url: str, service: Service, *, want: int = 200, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise BenchError(
                f"{service.name} exited with {service.process.returncode}:\n{service.tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our URL
                if response.status == want:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise BenchError(f"{url} did not answer {want} within {timeout:g}s ({last}):\n{service.tail()}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def parse_json_line(output: str, what: str) -> dict[str, Any]:
    for line in output.splitlines():
        if line.startswith(JSON_MARK):
            parsed: dict[str, Any] = json.loads(line[len(JSON_MARK) :])
            return parsed
    raise BenchError(f"{what} printed no result line:\n{output[-3000:]}")


def run_child(
    cmd: Sequence[str],
    what: str,
    timeout: float,
    on_start: Callable[[int], Callable[[], None]] | None = None,
    cpu: int | None = None,
) -> dict[str, Any]:
    """Run ``cmd`` to its end and parse its result line; ``on_start(pid)`` returns a finisher.

    ``cpu``: pin ``cmd`` (already wrapped by pinned()) when taskset is missing.
    """
    with subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        preexec_fn=pin_in_child(cpu),
    ) as process:
        finish = on_start(process.pid) if on_start is not None else None
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except BaseException:  # a timeout or Ctrl-C: the child must not outlive us
            process.kill()
            process.wait()
            raise
        finally:
            if finish is not None:
                finish()
    if process.returncode != 0:
        raise BenchError(f"{what} exited with {process.returncode}:\n{stderr[-3000:]}")
    return parse_json_line(stdout, what)


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
    cmd = [
        sys.executable,
        "-m",
        "tests.bench.loadgen",
        url,
        str(path),
        f"--connections={args.connections}",
        f"--warmup={args.warmup}",
        f"--duration={args.duration}",
        *(f"--watch={name}={pid}" for name, pid in watch.items()),
    ]
    if cores.load is not None:
        cmd.append(f"--cpu={cores.load}")
    result = run_child(cmd, "the Python load generator", timeout=args.warmup + args.duration + 60)
    return Load(result, result["ok_total"], exact=True, runs=1)


# -- broker --------------------------------------------------------------------------------


def count_queue(names: Names) -> str:
    return f"{names.namespace}.bench.count"


async def declare_count_queue(url: str, names: Names, *, with_topology: bool) -> None:
    """The queue this benchmark counts in, bound like the service's own queue."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        if with_topology:
            await declare(channel, topology(names))
        exchange = await channel.get_exchange(names.webhooks_exchange, ensure=True)
        # Not durable: persistent messages then cost it no disk writes, so the extra queue
        # adds as little as possible to the broker's work (the same in cases A and B).
        queue = await channel.declare_queue(count_queue(names), durable=False)
        await queue.bind(exchange, "whatsapp.#")


async def queue_counts(url: str, names: Names) -> dict[str, int]:
    counts: dict[str, int] = {}
    connection = await aio_pika.connect(url)
    async with connection:
        for name in (count_queue(names), names.webhooks_queue):
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(name, passive=True)
                counts[name] = queue.declaration_result.message_count or 0
            finally:
                with contextlib.suppress(Exception):
                    await channel.close()
    return counts


async def delete_namespace(url: str, names: Names) -> list[str]:
    """Delete every queue and exchange of ``names``; returns what could not be deleted."""
    failed: list[str] = []
    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        queues = (
            count_queue(names),
            names.webhooks_queue,
            names.dead_letter_queue(names.webhooks_queue),
        )
        for queue in queues:
            try:
                channel = await connection.channel()
                await channel.queue_delete(queue)
                await channel.close()
            except Exception as exc:
                failed.append(f"queue {queue}: {exc}")
        for exchange in (names.webhooks_exchange, names.dead_letter_exchange):
            try:
                channel = await connection.channel()
                await channel.exchange_delete(exchange)
                await channel.close()
            except Exception as exc:
                failed.append(f"exchange {exchange}: {exc}")
    return failed


def cleanup_namespace(url: str, names: Names) -> None:
    try:
        failed = asyncio.run(delete_namespace(url, names))
    except Exception as exc:
        failed = [str(exc)]
    for line in failed:
        print(f"warning: cleanup of {names.namespace}: {line}", file=sys.stderr)


def scrape_outcomes(base: str) -> dict[str, float]:
    """webhook_requests_total by outcome, from the service's /metrics."""
    with urllib.request.urlopen(base + "/metrics", timeout=5) as response:  # noqa: S310
        text = response.read().decode()
    outcomes: dict[str, float] = {}
    prefix = 'webhook_requests_total{outcome="'
    for line in text.splitlines():
        if line.startswith(prefix):
            label, _, value = line[len(prefix) :].partition('"} ')
            outcomes[label] = float(value)
    return outcomes


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


def settled_outcomes(base: str) -> dict[str, float]:
    """The outcome counters once they stop moving (requests in flight at the stop finish)."""
    previous = scrape_outcomes(base)
    for _ in range(50):
        time.sleep(0.3)
        current = scrape_outcomes(base)
        if current == previous:
            return current
        previous = current
    return previous


# -- cases ---------------------------------------------------------------------------------


@dataclass
class Context:
    args: argparse.Namespace
    cores: Cores
    bodies_path: Path
    workdir: Path
    processes: Processes
    run_id: str
    secret: str


def case_ingest(ctx: Context) -> dict[str, Any]:
    args = ctx.args
    names = Names(f"{ctx.run_id}-a")
    port = free_port()
    env = {
        **os.environ,
        "WHATSAPP_WEBHOOK_SECRET": ctx.secret,
        "WHATSAPP_WEBHOOK_VERIFY_TOKEN": secrets.token_hex(8),
        "AMQP_NAMESPACE": names.namespace,
        "WEBHOOK_INGEST_PORT": str(port),
        "HTTP_HOST": "127.0.0.1",
        "RABBITMQ_URL": args.rabbitmq_url,
        "LOG_LEVEL": "WARNING",
    }
    binary = Path(sys.executable).parent / "webhook-ingest"
    cmd = [str(binary)] if binary.exists() else [sys.executable, "-m", "inbox_ingest"]
    try:
        service = ctx.processes.start(
            "webhook-ingest", cmd, cpu=ctx.cores.server, log=ctx.workdir / "ingest.log", env=env
        )
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/api/health", service)  # 200 once the topology is declared
        asyncio.run(declare_count_queue(args.rabbitmq_url, names, with_topology=False))
        affinity = affinity_of(service.process.pid)
        profile = start_profile(ctx, service.process.pid, "ingest")
        watch = {"webhook-ingest": service.process.pid, **broker_pid()}
        try:
            load = generate_load(args, base + WEBHOOK_PATH, ctx.bodies_path, ctx.cores, watch)
        finally:
            stop_profile(profile)
        outcomes = settled_outcomes(base)
        breakdown = server_breakdown(base)
        counts = asyncio.run(queue_counts(args.rabbitmq_url, names))
        if service.process.poll() is not None:
            raise BenchError(f"webhook-ingest died during the run:\n{service.tail()}")
    finally:
        for running in list(ctx.processes.running):
            if running.name == "webhook-ingest":
                ctx.processes.stop(running)
        cleanup_namespace(args.rabbitmq_url, names)
    accepted = int(outcomes.get("accepted", 0))
    counted = counts[count_queue(names)]
    slack = 0 if load.exact else args.connections * load.runs
    verification = {
        "client_200s": load.ok_total,
        "server_accepted": accepted,
        "count_queue_messages": counted,
        "service_queue_messages": counts[names.webhooks_queue],
        "server_outcomes": outcomes,
        "unread_at_stop": counted - load.ok_total,
        "ok": counted == accepted and load.ok_total <= counted <= load.ok_total + slack,
        "rule": (
            "queue == server's accepted counter, and the client's 200s <= queue <= 200s + "
            f"{slack} (responses in flight when the load generator stopped; wrk does not "
            "wait for them)"
            if slack
            else "queue == server's accepted counter == the client's 200s"
        ),
    }
    return {
        "result": load.result,
        "verification": verification,
        "namespace": names.namespace,
        "affinity": affinity,
        "bodies_cycled": load.ok_total > args.bodies,
        "server_breakdown": breakdown,
    }


def case_raw(ctx: Context) -> dict[str, Any]:
    args = ctx.args
    names = Names(f"{ctx.run_id}-b")
    try:
        asyncio.run(declare_count_queue(args.rabbitmq_url, names, with_topology=True))
        cmd = [
            sys.executable,
            "-m",
            "tests.bench.raw_publish",
            args.rabbitmq_url,
            names.webhooks_exchange,
            str(ctx.bodies_path),
            f"--concurrency={args.connections}",
            f"--warmup={args.warmup}",
            f"--duration={args.duration}",
            *(f"--watch={name}={pid}" for name, pid in broker_pid().items()),
        ]
        if ctx.cores.server is not None:
            cmd.append(f"--cpu={ctx.cores.server}")

        def profile_raw(pid: int) -> Callable[[], None]:
            profile = start_profile(ctx, pid, "raw")
            return lambda: stop_profile(profile)

        result = run_child(
            cmd, "raw_publish", timeout=args.warmup + args.duration + 90, on_start=profile_raw
        )
        counts = asyncio.run(queue_counts(args.rabbitmq_url, names))
    finally:
        cleanup_namespace(args.rabbitmq_url, names)
    counted = counts[count_queue(names)]
    return {
        "result": result,
        "verification": {
            "confirmed": result["ok_total"],
            "count_queue_messages": counted,
            "service_queue_messages": counts[names.webhooks_queue],
            "ok": counted == result["ok_total"],
            "rule": "queue == confirmed publishes",
        },
        "namespace": names.namespace,
        "affinity": str(ctx.cores.server) if ctx.cores.server is not None else "all",
    }


def case_bare(ctx: Context) -> dict[str, Any]:
    args = ctx.args
    port = free_port()
    cmd = [sys.executable, "-m", "tests.bench.bare_server", f"--port={port}"]
    # Pinned by taskset (or the pre-exec fallback) like webhook-ingest, not by --cpu.
    try:
        service = ctx.processes.start(
            "bare-server",
            cmd,
            cpu=ctx.cores.server,
            log=ctx.workdir / "bare.log",
            env=dict(os.environ),
        )
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/livez", service)
        affinity = affinity_of(service.process.pid)
        watch = {"bare server": service.process.pid}
        profile = start_profile(ctx, service.process.pid, "bare")
        try:
            load = generate_load(args, base + WEBHOOK_PATH, ctx.bodies_path, ctx.cores, watch)
        finally:
            stop_profile(profile)
    finally:
        for running in list(ctx.processes.running):
            if running.name == "bare-server":
                ctx.processes.stop(running)
    return {"result": load.result, "affinity": affinity}


# -- profiling (optional) ------------------------------------------------------------------


@dataclass
class Profile:
    process: subprocess.Popen[bytes]
    output: Path


def start_profile(ctx: Context, pid: int, case: str) -> Profile | None:
    """``--profile``: py-spy record of the case's server-side process during the load."""
    if not ctx.args.profile:
        return None
    if shutil.which("py-spy"):
        py_spy = ["py-spy"]
    elif shutil.which("uvx"):
        py_spy = ["uvx", "py-spy"]
    else:
        print("warning: --profile needs py-spy (pip install --user py-spy) or uvx")
        return None
    fmt = ctx.args.profile_format
    suffix = {"flamegraph": "svg", "speedscope": "speedscope.json", "raw": "collapsed.txt"}[fmt]
    output = RESULTS_DIR / f"{ctx.run_id}-{case}.{suffix}"
    seconds = ctx.args.warmup + ctx.args.duration
    cmd = [*py_spy, "record", "-r", "100", "-d", str(seconds), "-f", fmt, "-o", str(output)]
    # --native shows uvloop's C frames but must pause the process for every sample.
    cmd += ["--native"] if ctx.args.profile_native else ["--nonblocking"]
    cmd += ["-p", str(pid)]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        pinned(cmd, ctx.cores.load),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=pin_in_child(ctx.cores.load),
    )
    return Profile(process, output)


def stop_profile(profile: Profile | None) -> None:
    if profile is None:
        return
    try:
        _, stderr = profile.process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        profile.process.terminate()
        profile.process.wait()
        stderr = b""
    if profile.output.exists():
        print(f"  profile: {profile.output.relative_to(REPO_ROOT)}")
    else:
        print(f"  profile failed: {stderr.decode(errors='replace')[-500:]}")


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
    for package in ("aiohttp", "aio-pika", "aiormq", "uvloop"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "rabbitmq": rabbitmq,
        "wrk": wrk,
        "packages": versions,
    }


def rate(case: dict[str, Any]) -> float:
    result = case["result"]
    return float(result["requests"]) / float(result["duration_s"] or 1)


def errors(case: dict[str, Any]) -> int:
    result = case["result"]
    return int(result["bad_status"]) + sum(int(v) for v in result["socket_errors"].values())


LABELS = {
    "ingest": "A ingest (webhook-ingest)",
    "raw": "B raw publish (broker ceiling)",
    "bare": "C bare aiohttp (HTTP ceiling)",
}


def table(report: dict[str, Any]) -> str:
    cases: dict[str, Any] = report["cases"]
    generator = report["load_generator"]
    rows = [("case", "rate/s", "p50 ms", "p99 ms", "errors", "notes")]
    for name in CASES:
        case = cases.get(name)
        if case is None:
            continue
        if "error" in case:
            rows.append((LABELS[name], "-", "-", "-", "-", "FAILED: " + case["error"][:60]))
            continue
        latency = case["result"]["latency_ms"]
        if name == "raw":
            note = f"{report['args']['connections']} publishes in flight, 1 channel"
        else:
            note = f"{report['args']['connections']} conns, {generator}"
        if case.get("bodies_cycled"):
            note += "; bodies reused"
        if "verification" in case:
            check = case["verification"]
            note += f"; queue={check['count_queue_messages']} " + (
                "OK" if check["ok"] else "MISMATCH"
            )
        rows.append(
            (
                LABELS[name],
                f"{rate(case):,.0f}",
                f"{latency['p50']:.2f}",
                f"{latency['p99']:.2f}",
                str(errors(case)),
                note,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        cells = [
            cell.ljust(widths[j]) if j in (0, 5) else cell.rjust(widths[j])
            for j, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    ratios: dict[str, Any] = report["ratios"]
    if "ingest/raw" in ratios:
        value = ratios["ingest/raw"]
        mark = "meets" if value >= TARGET_RAW_RATIO else "below"
        lines.append(f"ingest/raw  = {value:.2f}   (target >= {TARGET_RAW_RATIO}: {mark})")
    if "ingest/bare" in ratios:
        lines.append(f"ingest/bare = {ratios['ingest/bare']:.2f}")
    ingest = cases.get("ingest")
    if ingest is not None and "result" in ingest:
        p99 = ingest["result"]["latency_ms"]["p99"]
        mark = "meets" if p99 <= TARGET_P99_MS else "above"
        lines.append(f"ingest p99  = {p99:.1f} ms (target <= {TARGET_P99_MS:g} ms: {mark})")
    lines.append(
        "CPU in the measured window, in cores: run = on a CPU, wait = runnable but queued "
        "behind other work"
    )
    for name in CASES:
        case = cases.get(name)
        if case is not None and "result" in case:
            used = case["result"].get("cpu_cores", {})
            shown = ", ".join(
                f"{who} run {value['run']:.2f}"
                + (f" wait {value['wait']:.2f}" if "wait" in value else "")
                for who, value in used.items()
            )
            lines.append(f"  {name:<7} {shown or '-'}")
    if ingest is not None and ingest.get("server_breakdown"):
        parts = ingest["server_breakdown"]
        client = ingest["result"]["latency_ms"]["mean"]
        lines.append(
            f"ingest mean latency {client:.1f} ms: handler {parts.get('handler_ms', 0):.1f} ms "
            f"(of which publish->confirm {parts.get('publish_confirm_ms', 0):.1f} ms), "
            "the rest reading/queueing/writing"
        )
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark webhook-ingest against the broker and HTTP ceilings.",
    )
    parser.add_argument("--duration", type=int, default=10, help="measured seconds per case")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured seconds before")
    parser.add_argument("--connections", type=int, default=50, help="concurrent connections")
    parser.add_argument(
        "--only",
        default=",".join(CASES),
        help="comma-separated cases to run, of: ingest,raw,bare (default: all)",
    )
    parser.add_argument(
        "--bodies", type=int, default=60_000, help="unique pre-signed bodies to cycle through"
    )
    parser.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="wrk when installed (auto), or the Python aiohttp load generator",
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
        help="record each case's server-side process with py-spy (py-spy or uvx on PATH)",
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
    only = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = sorted(set(only) - set(CASES))
    if unknown or not only:
        parser.error(f"--only takes a comma-separated subset of {','.join(CASES)}")
    args.only = [c for c in CASES if c in only]
    if args.duration < 1 or args.warmup < 0 or args.connections < 1 or args.bodies < 100:
        parser.error("--duration >= 1, --warmup >= 0, --connections >= 1, --bodies >= 100")
    return args


def choose_generator(wanted: str) -> str:
    has_wrk = shutil.which("wrk") is not None
    if wanted == "wrk" and not has_wrk:
        raise SystemExit(f"wrk is not installed; install it with:\n  {WRK_INSTALL}")
    if wanted == "python" or not has_wrk:
        if not has_wrk:
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
    args.generator = choose_generator(args.loadgen)
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    run_id = f"bench-{stamp}-{secrets.token_hex(3)}"
    cores = pick_cores(pin=not args.no_pin)
    generator_label = "wrk" if args.generator == "wrk" else "python-aiohttp (fallback)"
    print(
        f"bench {run_id}: cases {','.join(args.only)}; {args.warmup}s warm-up + "
        f"{args.duration}s each; {args.connections} connections; load: {generator_label}"
    )
    print(f"cores: {cores.describe()}")
    report: dict[str, Any] = {
        "run_id": run_id,
        "started_at": started.isoformat(),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "args": {
            "duration": args.duration,
            "warmup": args.warmup,
            "connections": args.connections,
            "bodies": args.bodies,
            "only": args.only,
        },
        "machine": machine_info(),
        "cores": {"server": cores.server, "load": cores.load, "described": cores.describe()},
        "load_generator": generator_label,
        "cases": {},
        "ratios": {},
        "targets": {"ingest/raw": f">= {TARGET_RAW_RATIO}", "ingest p99 ms": f"<= {TARGET_P99_MS}"},
    }
    processes = Processes()
    failed = False
    with terminate_as_interrupt(), tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        secret = secrets.token_hex(16)
        pairs = bodies.make(args.bodies, secret.encode())
        sizes = sorted(len(body) for _, body in pairs)
        report["bodies"] = {
            "count": len(pairs),
            "bytes_min": sizes[0],
            "bytes_median": sizes[len(sizes) // 2],
            "bytes_max": sizes[-1],
        }
        bodies_path = workdir / "bodies.tsv"
        bodies.write(bodies_path, pairs)
        del pairs
        ctx = Context(args, cores, bodies_path, workdir, processes, run_id, secret)
        runners = {"ingest": case_ingest, "raw": case_raw, "bare": case_bare}
        try:
            for name in args.only:
                print(f"running {LABELS[name]} ...", flush=True)
                try:
                    report["cases"][name] = runners[name](ctx)
                except Exception as exc:  # record it and go on with the other cases
                    failed = True
                    print(f"  {name} failed: {exc}", file=sys.stderr)
                    report["cases"][name] = {"error": str(exc)}
        finally:
            processes.stop_all()
    cases = report["cases"]

    def ok(name: str) -> bool:
        return name in cases and "result" in cases[name]

    if ok("ingest") and ok("raw"):
        report["ratios"]["ingest/raw"] = rate(cases["ingest"]) / rate(cases["raw"])
    if ok("ingest") and ok("bare"):
        report["ratios"]["ingest/bare"] = rate(cases["ingest"]) / rate(cases["bare"])
    for name in ("ingest", "raw"):
        if ok(name) and not cases[name]["verification"]["ok"]:
            failed = True
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"{stamp}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(table(report))
    for name in ("ingest", "raw"):
        if ok(name):
            print(f"{name} check: {json.dumps(cases[name]['verification'])}")
    print(f"cores: {cores.describe()}")
    seen = {
        name: cases[name]["affinity"] for name in CASES if ok(name) and "affinity" in cases[name]
    }
    if seen:
        print(
            "  server-side processes' Cpus_allowed_list: "
            + ", ".join(f"{k} {v}" for k, v in seen.items())
        )
    print(f"results: {out.relative_to(REPO_ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; services stopped and the run's broker objects deleted")
        sys.exit(130)
