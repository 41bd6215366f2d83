"""The fallback load generator, for machines without ``wrk``: asyncio + aiohttp client.

Closed loop like wrk: ``--connections`` keep-alive connections, each with one request in
flight, cycling through the pre-signed bodies. It runs ``--warmup`` seconds unmeasured, then
``--duration`` seconds measured, then stops taking new requests and lets the in-flight ones
finish (so its count of 200s is exact). One Python process saturates well before wrk does:
its numbers are a floor, and the report labels them.

Prints one line ``BENCH_JSON {...}`` in the same shape as the wrk script's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from inbox_testkit.bench import bodies
from inbox_testkit.bench.cli import parse_pinned, print_result


class Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.requests = 0
        self.bad_status = 0
        self.errors = 0
        self.ok_total = 0
        self.sent_total = 0


class CpuWatch:
    """CPU use of some processes over a window, in cores (1.0 = one core busy).

    From the kernel's schedstat summed over each process's threads: ``run`` is time on a
    CPU, ``wait`` time spent runnable on a run queue waiting for one, the machine's
    contention as that process felt it (a noisy neighbour, or the broker on the same core).
    """

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self._start: dict[str, tuple[int, int]] = {}
        self._began = 0.0

    @staticmethod
    def parse(specs: list[str]) -> dict[str, int]:
        """``name=pid`` command-line items as a dict."""
        return {name: int(pid) for name, _, pid in (spec.partition("=") for spec in specs)}

    @classmethod
    def of_self(cls, name: str, specs: list[str]) -> CpuWatch:
        """This process, as ``name``, and the ``--watch`` processes ``specs``."""
        return cls({name: os.getpid(), **cls.parse(specs)})

    @staticmethod
    def _sched(pid: int) -> tuple[int, int] | None:
        run = wait = 0
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            return None
        for task in tasks:
            try:
                fields = (task / "schedstat").read_text().split()
            except OSError:
                continue  # a thread that ended
            run += int(fields[0])
            wait += int(fields[1])
        return run, wait

    def start(self) -> None:
        self._began = time.monotonic()
        for name, pid in self._pids.items():
            sample = self._sched(pid)
            if sample is not None:
                self._start[name] = sample

    def stop(self) -> dict[str, dict[str, float]]:
        wall = time.monotonic() - self._began
        used: dict[str, dict[str, float]] = {}
        for name, (run0, wait0) in self._start.items():
            sample = self._sched(self._pids[name])
            if sample is not None and wall > 0:
                used[name] = {
                    "run": round((sample[0] - run0) / 1e9 / wall, 3),
                    "wait": round((sample[1] - wait0) / 1e9 / wall, 3),
                }
        return used


def find_pid(command_name: str) -> int | None:
    """The pid of a process whose comm is ``command_name`` (e.g. the broker's beam.smp)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == command_name:
                    return int(entry.name)
            except OSError:
                continue
    return None


def percentile(ordered: list[float], pct: float) -> float:
    if not ordered:
        return 0.0
    rank = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[rank]


def wrk_latency(latencies: list[float]) -> dict[str, float]:
    """Latencies (seconds) in the shape of the wrk script's result: milliseconds."""
    ordered = sorted(latencies)
    return {
        "p50": percentile(ordered, 50) * 1e3,
        "p90": percentile(ordered, 90) * 1e3,
        "p99": percentile(ordered, 99) * 1e3,
        "p999": percentile(ordered, 99.9) * 1e3,
        "mean": (sum(ordered) / len(ordered) if ordered else 0.0) * 1e3,
        "max": (ordered[-1] if ordered else 0.0) * 1e3,
    }


@dataclass
class Phase:
    """Where a closed-loop run is: in its measured window, or stopping after it."""

    measuring: bool = False
    stopping: bool = False


async def closed_loop(
    worker: Callable[[Phase], Coroutine[Any, Any, None]],
    workers: int,
    warmup: float,
    duration: float,
    watch: CpuWatch,
) -> tuple[float, dict[str, dict[str, float]]]:
    """``workers`` copies of ``worker``, each looping until the phase says stop: ``warmup``
    seconds unmeasured, ``duration`` seconds measured (and ``watch`` over that window), then
    they finish what they have in flight. Returns the measured seconds and the CPU use."""
    phase = Phase()
    tasks = [asyncio.create_task(worker(phase)) for _ in range(workers)]
    await asyncio.sleep(warmup)
    phase.measuring = True
    started = time.perf_counter()
    watch.start()
    await asyncio.sleep(duration)
    phase.measuring = False
    cpu = watch.stop()
    elapsed = time.perf_counter() - started
    phase.stopping = True
    await asyncio.gather(*tasks)
    return elapsed, cpu


async def run(
    url: str,
    pairs: list[tuple[str, bytes]],
    first: int,
    connections: int,
    warmup: float,
    duration: float,
    watch: CpuWatch,
) -> dict[str, object]:
    stats = Stats()
    index = first
    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker(phase: Phase) -> None:
            nonlocal index
            while not phase.stopping:
                signature, body = pairs[index % len(pairs)]
                index += 1
                headers = {"Content-Type": "application/json", "X-Hub-Signature-256": signature}
                began = time.perf_counter()
                stats.sent_total += 1
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
                elapsed = time.perf_counter() - began
                if status == 200:
                    stats.ok_total += 1
                if phase.measuring:
                    stats.requests += 1
                    stats.latencies.append(elapsed)
                    if status == 0:
                        stats.errors += 1
                    elif status >= 400:
                        stats.bad_status += 1

        elapsed, cpu = await closed_loop(worker, connections, warmup, duration, watch)
    return {
        "generator": "python-aiohttp",
        "duration_s": elapsed,
        "requests": stats.requests,
        "bad_status": stats.bad_status,
        "socket_errors": {"connect": 0, "read": stats.errors, "write": 0, "timeout": 0},
        "latency_ms": wrk_latency(stats.latencies),
        "ok_total": stats.ok_total,
        "sent_total": stats.sent_total,
        "cpu_cores": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("bodies", type=Path)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parse_pinned(parser)
    pairs = bodies.read(args.bodies)
    watch = CpuWatch.of_self("load generator", args.watch)
    result = uvloop.run(
        run(args.url, pairs, args.first, args.connections, args.warmup, args.duration, watch)
    )
    print_result(result)


if __name__ == "__main__":
    main()
