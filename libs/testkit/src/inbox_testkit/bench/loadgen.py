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
import json
import os
import time
from pathlib import Path

import aiohttp
import uvloop

from inbox_testkit.bench import bodies


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
    measuring = False
    stopping = False
    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal index
            while not stopping:
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
                if measuring:
                    stats.requests += 1
                    stats.latencies.append(elapsed)
                    if status == 0:
                        stats.errors += 1
                    elif status >= 400:
                        stats.bad_status += 1

        tasks = [asyncio.create_task(worker()) for _ in range(connections)]
        await asyncio.sleep(warmup)
        measuring = True
        started = time.perf_counter()
        watch.start()
        await asyncio.sleep(duration)
        measuring = False
        cpu = watch.stop()
        elapsed = time.perf_counter() - started
        stopping = True
        await asyncio.gather(*tasks)
    ordered = sorted(stats.latencies)
    mean = sum(ordered) / len(ordered) if ordered else 0.0
    return {
        "generator": "python-aiohttp",
        "duration_s": elapsed,
        "requests": stats.requests,
        "bad_status": stats.bad_status,
        "socket_errors": {"connect": 0, "read": stats.errors, "write": 0, "timeout": 0},
        "latency_ms": {
            "p50": percentile(ordered, 50) * 1e3,
            "p90": percentile(ordered, 90) * 1e3,
            "p99": percentile(ordered, 99) * 1e3,
            "p999": percentile(ordered, 99.9) * 1e3,
            "mean": mean * 1e3,
            "max": (ordered[-1] if ordered else 0.0) * 1e3,
        },
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
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one core")
    parser.add_argument("--watch", action="append", default=[], help="name=pid: report its CPU use")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    pairs = bodies.read(args.bodies)
    watch = CpuWatch({"load generator": os.getpid(), **CpuWatch.parse(args.watch)})
    result = uvloop.run(
        run(args.url, pairs, args.first, args.connections, args.warmup, args.duration, watch)
    )
    print("BENCH_JSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
