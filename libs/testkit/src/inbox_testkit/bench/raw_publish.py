"""Case (B), the broker ceiling: publish the benchmark bodies straight to RabbitMQ.

The same message the service publishes (persistent, ``mandatory`` with returns raised, the
same properties and headers, publisher confirms) to the same exchange and queues, which
``run.py`` declared beforehand. ``--concurrency`` publisher tasks share one confirm channel,
so that many publishes are in flight at once, as with the service's concurrent requests.
It runs ``--warmup`` seconds unmeasured, ``--duration`` seconds measured, then lets the
in-flight publishes settle. Prints one line ``BENCH_JSON {...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import uvloop

from inbox_testkit.bench import bodies
from inbox_testkit.bench.loadgen import CpuWatch, percentile

ROUTING_KEY = "whatsapp.webhook"


async def run(
    url: str,
    exchange_name: str,
    pairs: list[tuple[str, bytes]],
    concurrency: int,
    warmup: float,
    duration: float,
    watch: CpuWatch,
) -> dict[str, object]:
    hashes = [bodies.sha256_hex(body) for _, body in pairs]
    latencies: list[float] = []
    measured = 0
    failures = 0
    confirmed_total = 0
    index = 0
    measuring = False
    stopping = False
    connection = await aio_pika.connect(url, client_properties={"connection_name": "bench-raw"})
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(exchange_name, ensure=False)

        async def publisher() -> None:
            nonlocal index, measured, failures, confirmed_total
            while not stopping:
                i = index % len(pairs)
                index += 1
                body = pairs[i][1]
                received_at = datetime.now(UTC)
                message = aio_pika.Message(
                    body,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=hashes[i],
                    headers={
                        "request_id": uuid.uuid4().hex,
                        "received_at": received_at.isoformat(),
                        "sha256": hashes[i],
                    },
                    content_type="application/json",
                    timestamp=received_at,
                )
                began = time.perf_counter()
                ok = True
                try:
                    await exchange.publish(message, ROUTING_KEY, mandatory=True)
                except (aio_pika.exceptions.PublishError, aio_pika.exceptions.DeliveryError):
                    ok = False
                elapsed = time.perf_counter() - began
                confirmed_total += ok
                if measuring:
                    measured += 1
                    failures += not ok
                    latencies.append(elapsed)

        tasks = [asyncio.create_task(publisher()) for _ in range(concurrency)]
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
    ordered = sorted(latencies)
    return {
        "generator": "aio-pika",
        "duration_s": elapsed,
        "requests": measured,
        "bad_status": failures,
        "socket_errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0},
        "latency_ms": {
            "p50": percentile(ordered, 50) * 1e3,
            "p90": percentile(ordered, 90) * 1e3,
            "p99": percentile(ordered, 99) * 1e3,
            "p999": percentile(ordered, 99.9) * 1e3,
            "mean": sum(ordered) / len(ordered) * 1e3 if ordered else 0.0,
            "max": (ordered[-1] if ordered else 0.0) * 1e3,
        },
        "ok_total": confirmed_total,
        "sent_total": index,
        "cpu_cores": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("exchange")
    parser.add_argument("bodies", type=Path)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one core")
    parser.add_argument("--watch", action="append", default=[], help="name=pid: report its CPU use")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    pairs = bodies.read(args.bodies)
    watch = CpuWatch({"raw publisher": os.getpid(), **CpuWatch.parse(args.watch)})
    result = uvloop.run(
        run(args.url, args.exchange, pairs, args.concurrency, args.warmup, args.duration, watch)
    )
    print("BENCH_JSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
