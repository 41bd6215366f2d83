"""What every benchmark case shares: pinning, child processes, their peak memory, the
broker's per-run namespaces, a SecantusDB server per case, and py-spy.

Everything started through :class:`Processes` is stopped by ``stop_all()`` (run.py calls it
in a ``finally`` block, so also on Ctrl-C and SIGTERM), and each process's peak resident set
(``VmHWM``) is read just before it is stopped: that is case P5.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika

from inbox_common.broker.topology import Names, declare, everything
from inbox_common.local.ports import free_port
from inbox_common.local.processes import wait_http as local_wait_http
from inbox_common.local.secantus import SecantusServer
from inbox_testkit.backends import REPO_ROOT
from inbox_testkit.bench.cli import JSON_MARK

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
WEBHOOK_PATH = "/webhooks/whatsapp"
# How long a service of the send and live groups may take to answer its health check: it
# connects to the broker and the store first, which takes a while on a busy machine.
STARTUP_SECONDS = 90.0


class BenchError(RuntimeError):
    """A case could not be measured; the message says why."""


# -- cores ---------------------------------------------------------------------------------


@dataclass
class Cores:
    server: int | None
    load: int | None

    def describe(self) -> str:
        if self.server is None:
            return "not pinned (--no-pin, or fewer than two usable cores)"
        return (
            f"server-side process on core {self.server}, load generator on core {self.load} "
            f"(pinned with {pinning_tool()}; the broker and SecantusDB are not pinned)"
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
    return proc_status(pid).get("Cpus_allowed_list", "?")


def proc_status(pid: int) -> dict[str, str]:
    """``/proc/<pid>/status`` as a dict (empty when the process is gone)."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def memory_of(pid: int) -> dict[str, float] | None:
    """Peak (VmHWM) and current (VmRSS) resident set of ``pid``, in MiB."""
    status = proc_status(pid)
    if "VmHWM" not in status:
        return None

    def mib(key: str) -> float:
        return round(int(status.get(key, "0 kB").split()[0]) / 1024, 1)

    return {"peak_rss_mb": mib("VmHWM"), "rss_mb": mib("VmRSS")}


def venv_command(script: str, module: str) -> list[str]:
    """A workspace console script of this interpreter's venv, else ``python -m module``."""
    binary = Path(sys.executable).parent / script
    return [str(binary)] if binary.exists() else [sys.executable, "-m", module]


# -- processes -----------------------------------------------------------------------------


def spawn(
    cmd: Sequence[str], *, cpu: int | None, log: Path, env: dict[str, str], cwd: Path = REPO_ROOT
) -> subprocess.Popen[bytes]:
    """``cmd`` pinned to ``cpu``, in its own session (Ctrl-C reaches us only; we stop it in
    order), its output to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            pinned(cmd, cpu),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=pin_in_child(cpu),
        )


def log_tail(log: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of ``log`` ("" when it cannot be read)."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    case: str

    def tail(self, lines: int = 30) -> str:
        return log_tail(self.log, lines)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")


@dataclass
class Processes:
    """Every long-running child; stop_all() is called from a finally block.

    ``memory`` collects, per case, the peak resident set of each process it stopped.
    """

    running: list[Service] = field(default_factory=list)
    case: str = ""
    memory: list[dict[str, Any]] = field(default_factory=list)

    def start(
        self,
        name: str,
        cmd: Sequence[str],
        *,
        cpu: int | None,
        log: Path,
        env: dict[str, str],
        cwd: Path = REPO_ROOT,
    ) -> Service:
        return self.adopt(name, spawn(cmd, cpu=cpu, log=log, env=env, cwd=cwd), log)

    def adopt(self, name: str, process: subprocess.Popen[bytes], log: Path) -> Service:
        """Track a process started elsewhere (stopped, and its memory read, like the others)."""
        service = Service(name, process, log, self.case)
        self.running.append(service)
        return service

    def stop(self, service: Service) -> None:
        process = service.process
        if process.poll() is None:
            used = memory_of(process.pid)
            if used is not None:
                self.memory.append({"case": service.case, "process": service.name, **used})
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if service in self.running:
            self.running.remove(service)

    def stop_named(self, *names: str) -> None:
        for service in list(reversed(self.running)):
            if service.name in names:
                self.stop(service)

    def stop_all(self) -> None:
        for service in list(reversed(self.running)):
            try:
                self.stop(service)
            except Exception as exc:  # keep stopping the others
                print(f"warning: could not stop {service.name}: {exc}", file=sys.stderr)


def wait_http(url: str, service: Service, *, want: int = 200, timeout: float = 30.0) -> None:
    try:
        asyncio.run(local_wait_http(url, timeout=timeout, want=want, process=service))
    except (TimeoutError, RuntimeError) as exc:
        raise BenchError(f"{exc}:\n{service.tail()}") from None


def start_server(
    processes: Processes,
    name: str,
    cmd: Sequence[str],
    *,
    log: Path,
    cpu: int | None = None,
    env: dict[str, str] | None = None,
) -> tuple[Service, str]:
    """A bench server (``bare_server``, ``fanout_server``, ``pywa_peer``): ``cmd`` with
    ``--port`` a free port, once its ``/livez`` answers; returns it and its base URL."""
    port = free_port()
    service = processes.start(
        name,
        [*cmd, f"--port={port}"],
        cpu=cpu,
        log=log,
        env=dict(os.environ) if env is None else env,
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/livez", service)
    return service, base


def get_json(url: str, *, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our URL
        return json.loads(response.read())


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
    env: dict[str, str] | None = None,
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
        env=env,
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


# -- broker --------------------------------------------------------------------------------


def number_queues(names: Names, phone_number_id: str) -> list[str]:
    """The send queue inbox-api declares for a channel's number, and its dead-letter queue."""
    queue = names.number_queue(phone_number_id)
    return [queue, names.dead_letter_queue(queue)]


def count_queue(names: Names) -> str:
    return f"{names.namespace}.bench.count"


async def declare_count_queue(url: str, names: Names, *, with_topology: bool) -> None:
    """The queue this benchmark counts in, bound like the service's own queue."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        if with_topology:
            await declare(channel, everything(names))
        exchange = await channel.get_exchange(names.webhooks_exchange, ensure=True)
        # Not durable: persistent messages then cost it no disk writes, so the extra queue
        # adds as little as possible to the broker's work (the same in cases ingest and raw).
        queue = await channel.declare_queue(count_queue(names), durable=False)
        await queue.bind(exchange, "whatsapp.#")


async def ready_count(connection: aio_pika.abc.AbstractConnection, queue: str) -> int:
    """The ready messages of ``queue`` (a passive declare on a channel of its own; -1 when the
    queue does not exist)."""
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0
    except aio_pika.exceptions.ChannelClosed:
        return -1
    finally:
        with contextlib.suppress(Exception):
            await channel.close()


async def queue_counts(url: str, names: Names) -> dict[str, int]:
    """Ready messages of the count queue and the service's webhook queue (-1: absent)."""
    connection = await aio_pika.connect(url)
    async with connection:
        return {
            name: await ready_count(connection, name)
            for name in (count_queue(names), names.webhooks_queue)
        }


async def delete_namespace(url: str, names: Names, extra: Sequence[str] = ()) -> list[str]:
    """Delete every queue and exchange of ``names`` and the queues ``extra``; returns what
    could not be deleted."""
    failed: list[str] = []
    spec = everything(names)
    connection = await aio_pika.connect(url, timeout=10)
    queues = (count_queue(names), *(q.name for q in spec.queues), *extra)
    doomed = [*(("queue", q) for q in queues), *(("exchange", e.name) for e in spec.exchanges)]
    async with connection:
        for kind, name in doomed:
            try:
                channel = await connection.channel()
                if kind == "queue":
                    await channel.queue_delete(name)
                else:
                    await channel.exchange_delete(name)
                await channel.close()
            except Exception as exc:
                failed.append(f"{kind} {name}: {exc}")
    return failed


class QueueWatch:
    """The ready count of some queues, sampled every second in a thread (the backlogs); a
    queue that does not exist (yet) reads -1."""

    def __init__(self, url: str, queues: Sequence[str]) -> None:
        self._url = url
        self._queues = list(queues)
        self._stop = threading.Event()
        self.samples: dict[str, list[int]] = {queue: [] for queue in self._queues}
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        connection = await aio_pika.connect(self._url)
        async with connection:
            while not self._stop.is_set():
                for queue in self._queues:
                    self.samples[queue].append(await ready_count(connection, queue))
                await asyncio.sleep(1.0)

    def __enter__(self) -> QueueWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def cleanup_namespace(url: str, names: Names, extra: Sequence[str] = ()) -> None:
    """Delete the run's broker objects of ``names`` (and the queues ``extra``: those made at
    run time, such as a channel's send queue, which ``everything`` does not list)."""
    try:
        failed = asyncio.run(delete_namespace(url, names, extra))
    except Exception as exc:
        failed = [str(exc)]
    for line in failed:
        print(f"warning: cleanup of {names.namespace}: {line}", file=sys.stderr)


def metric_values(base: str, name: str) -> dict[str, float]:
    """The samples of metric ``name`` from ``base``/metrics, by their label text."""
    with urllib.request.urlopen(base + "/metrics", timeout=5) as response:  # noqa: S310
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            rest = key[len(name) :]
            if rest == "" or rest.startswith("{"):
                values[rest] = float(value)
    return values


def scrape_outcomes(base: str) -> dict[str, float]:
    """webhook_requests_total by outcome, from the service's /metrics."""
    outcomes: dict[str, float] = {}
    for labels, value in metric_values(base, "webhook_requests_total").items():
        prefix = '{outcome="'
        if labels.startswith(prefix):
            outcomes[labels[len(prefix) :].split('"', 1)[0]] = value
    return outcomes


def latency_ratios(ours: dict[str, float], theirs: dict[str, float]) -> dict[str, float]:
    """p50 and p99 of ``ours`` over ``theirs`` (a baseline's), where the baseline's is not 0."""
    return {
        f"p{pct}": round(ours[f"p{pct}"] / theirs[f"p{pct}"], 1)
        for pct in (50, 99)
        if theirs[f"p{pct}"]
    }


def settled(read: Callable[[], Any], *, interval: float = 0.3, tries: int = 50) -> Any:
    """``read()`` once two reads in a row agree (work in flight at the stop has finished)."""
    previous = read()
    for _ in range(tries):
        time.sleep(interval)
        current = read()
        if current == previous:
            return current
        previous = current
    return previous


# -- SecantusDB ----------------------------------------------------------------------------


@dataclass
class Store:
    service: Service
    url: str


def start_secantus(processes: Processes, workdir: Path, name: str = "secantusdb") -> Store:
    """A SecantusDB server on a free port with its own storage under ``workdir``.

    Not pinned, like the broker. Its data directory goes with the run's temp dir.
    """
    label = f"{name}-{processes.case}" if processes.case else name
    server = SecantusServer(workdir / label, log_level="WARNING")
    try:
        server.start()
    except RuntimeError as exc:
        raise BenchError(str(exc)) from None
    assert server.process is not None
    service = processes.adopt(name, server.process, server.log_path)
    try:
        server.wait_ready(60)
    except (RuntimeError, TimeoutError) as exc:
        raise BenchError(f"SecantusDB did not answer: {exc}") from exc
    return Store(service, server.url)


# -- profiling (optional) ------------------------------------------------------------------


@dataclass
class Profile:
    process: subprocess.Popen[bytes]
    output: Path


def start_profile(args: argparse.Namespace, run_id: str, pid: int, case: str) -> Profile | None:
    """``--profile``: py-spy records ``pid`` until stop_profile() (SIGINT makes it write)."""
    if not args.profile:
        return None
    if shutil.which("py-spy"):
        py_spy = ["py-spy"]
    elif shutil.which("uvx"):
        py_spy = ["uvx", "py-spy"]
    else:
        print("warning: --profile needs py-spy (pip install --user py-spy) or uvx")
        return None
    fmt = args.profile_format
    suffix = {"flamegraph": "svg", "speedscope": "speedscope.json", "raw": "collapsed.txt"}[fmt]
    output = RESULTS_DIR / f"{run_id}-{case}.{suffix}"
    cmd = [*py_spy, "record", "-r", "100", "-f", fmt, "-o", str(output)]
    # --native shows uvloop's C frames but must pause the process for every sample.
    cmd += ["--native"] if args.profile_native else ["--nonblocking"]
    cmd += ["-p", str(pid)]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own group: SIGINT reaches uvx and py-spy, not us
    )
    time.sleep(0.5)  # attaching takes a moment
    return Profile(process, output)


def profiler(
    args: argparse.Namespace, run_id: str, case: str
) -> Callable[[int], Callable[[], None]]:
    """An ``on_start`` for run_child(): ``--profile`` records the child until it ends."""

    def start(pid: int) -> Callable[[], None]:
        profile = start_profile(args, run_id, pid, case)
        return lambda: stop_profile(profile)

    return start


def stop_profile(profile: Profile | None) -> None:
    if profile is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(profile.process.pid, signal.SIGINT)
    try:
        _, stderr = profile.process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(profile.process.pid, signal.SIGKILL)
        profile.process.wait()
        stderr = b""
    if profile.output.exists():
        print(f"  profile: {profile.output.relative_to(REPO_ROOT)}")
    else:
        print(f"  profile failed: {stderr.decode(errors='replace')[-500:]}")
