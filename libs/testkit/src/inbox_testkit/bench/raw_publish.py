"""Case (b), the broker ceiling: publish the benchmark bodies straight to RabbitMQ.

The messages are the service's (persistent, ``mandatory`` with returns raised, the same
properties and headers, publisher confirms), to the same exchange and queues, which ``p1.py``
declared beforehand. With ``--batch N`` (N > 1) every message is a micro-batch of N bodies
built with ``batch_message``, the format webhook-ingest publishes under load: the ceiling for
our message shape. With ``--batch 1`` every message carries one body (the reference). The
bodies' identities (sha256, request id, receive time) are built before the clock starts; the
messages are built per publish, as the service builds them.

``--concurrency`` publisher tasks share one confirm channel, so that many messages are in
flight at once. It runs ``--warmup`` seconds unmeasured, ``--duration`` seconds measured, then
lets the in-flight publishes settle. ``requests`` counts bodies (comparable with the HTTP
cases' requests), ``messages`` AMQP messages; the latency is each message's publish to
confirm. Prints one line ``BENCH_JSON {...}``.
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import uvloop

from inbox_common.broker.topology import WEBHOOK_ROUTING_KEY
from inbox_common.contracts.delivery import WebhookDelivery
from inbox_testkit.bench import bodies
from inbox_testkit.bench.backlog import ingest_message
from inbox_testkit.bench.cli import parse_pinned, print_result
from inbox_testkit.bench.loadgen import CpuWatch, Phase, closed_loop, wrk_latency


def identities(pairs: list[tuple[str, bytes]]) -> list[WebhookDelivery]:
    now = datetime.now(UTC)
    return [
        WebhookDelivery.model_construct(
            sha256=bodies.sha256_hex(body), request_id=uuid.uuid4().hex, received_at=now, body=body
        )
        for _, body in pairs
    ]


async def run(
    url: str,
    exchange_name: str,
    items: list[WebhookDelivery],
    concurrency: int,
    batch: int,
    warmup: float,
    duration: float,
    watch: CpuWatch,
) -> dict[str, object]:
    latencies: list[float] = []
    measured = measured_bodies = 0
    failures = 0
    confirmed_total = bodies_total = 0
    index = sent = 0
    connection = await aio_pika.connect(url, client_properties={"connection_name": "bench-raw"})
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(exchange_name, ensure=False)

        async def publisher(phase: Phase) -> None:
            nonlocal index, sent, measured, measured_bodies, failures, confirmed_total
            nonlocal bodies_total
            while not phase.stopping:
                group = [items[(index + k) % len(items)] for k in range(batch)]
                index += batch
                sent += 1
                outgoing = ingest_message(group)
                began = time.perf_counter()
                ok = True
                try:
                    await exchange.publish(outgoing, WEBHOOK_ROUTING_KEY, mandatory=True)
                except (aio_pika.exceptions.PublishError, aio_pika.exceptions.DeliveryError):
                    ok = False
                elapsed = time.perf_counter() - began
                confirmed_total += ok
                bodies_total += batch if ok else 0
                if phase.measuring:
                    measured += 1
                    measured_bodies += batch if ok else 0
                    failures += not ok
                    latencies.append(elapsed)

        elapsed, cpu = await closed_loop(publisher, concurrency, warmup, duration, watch)
    return {
        "generator": "aio-pika",
        "duration_s": elapsed,
        "requests": measured_bodies,
        "messages": measured,
        "batch": batch,
        "bad_status": failures,
        "socket_errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0},
        "latency_ms": wrk_latency(latencies),
        "ok_total": confirmed_total,
        "bodies_total": bodies_total,
        "sent_total": sent,
        "cpu_cores": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("exchange")
    parser.add_argument("bodies", type=Path)
    parser.add_argument("--concurrency", type=int, default=50, help="messages in flight")
    parser.add_argument("--batch", type=int, default=1, help="bodies per message")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parse_pinned(parser)
    items = identities(bodies.read(args.bodies))
    watch = CpuWatch.of_self("raw publisher", args.watch)
    result = uvloop.run(
        run(
            args.url,
            args.exchange,
            items,
            args.concurrency,
            args.batch,
            args.warmup,
            args.duration,
            watch,
        )
    )
    print_result(result)


if __name__ == "__main__":
    main()
