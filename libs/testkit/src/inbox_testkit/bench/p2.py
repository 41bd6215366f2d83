"""P2 consume: how fast inbox-api applies a backlog, against a minimal consumer of the same
queue on the same store.

1. One SecantusDB server for the whole case. Every drain gets a database of its own on it,
   with the schema's migrations (``apply_migrations``: the same indexes and validators) and
   one connected channel, dropped once the drain is checked.
2. The same ``--contacts x --per-contact`` unique text webhooks, queued in two shapes
   (``backlog.py``): micro-batches of up to 64 bodies, as webhook-ingest publishes a burst,
   and one body per message, as it publishes webhooks that arrive one at a time.
3. Each backlog is drained twice per round (``--p2-rounds``, interleaved; each drain's
   report is its fastest round), each time into a fresh database: by inbox-api (started,
   pinned to the server core, stopped once its ``consumer_messages_total{outcome="acked"}``
   reaches the backlog's message count) and by ``minimal_consumer.py`` (pinned to the same
   core; it stops by itself). Both store clients come from ``create_client``: w=majority,
   journaled.
4. The rate of each drain is events / (last ack - first delivery). For inbox-api both ends
   come from the watch: the queue's ready count dropping (polled every 50 ms) and its acked
   counter reaching the message count (scraped every 100 ms). The minimal consumer times
   itself on the same two events. The ledger's own window (earliest ``last_attempt_at`` to
   latest ``finished_at``) is recorded beside it: it leaves out the last batch's ledger
   write, which for inbox-api (an ``UpdateMany`` of the fates, batches finishing together)
   can be seconds, so it is not the rate.
5. Check, the same for every drain: every event processed and none failed, one message per
   event, one contact and one conversation per contact, every message in its conversation's
   unread set, every conversation with a preview, the queue empty.
6. Reference, same server, same run: ``raw_insert.py`` (``insert_many`` of message-sized
   documents, and bulk upserts), with the services' write concern too.

Target: inbox-api rate >= 0.9 x the minimal consumer's, on each backlog.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import aio_pika

from inbox_common.broker.topology import Names
from inbox_testkit.bench import backlog, bodies
from inbox_testkit.bench.cli import child_command
from inbox_testkit.bench.harness import (
    BenchError,
    Service,
    Store,
    cleanup_namespace,
    metric_values,
    number_queues,
    profiler,
    queue_counts,
    run_child,
    start_profile,
    start_secantus,
    stop_profile,
)
from inbox_testkit.bench.loadgen import CpuWatch
from inbox_testkit.bench.p1 import Context, broker_pid
from inbox_testkit.bench.stack import service_env, start_inbox_api
from inbox_testkit.bench.store_state import (
    DB_NAME,
    PHONE_NUMBER_ID,
    drop_database,
    ledger_window,
    prepare_store,
    processed_count,
    store_counts,
    write_concern,
)

TARGET_RATIO = 0.9
CONSUMERS = ("inbox-api", "minimal")
_OUTCOME = re.compile(r'outcome="([^"]*)"')


def consumer_outcomes(base: str, queue: str) -> dict[str, float] | None:
    """inbox-api's ``consumer_messages_total`` for ``queue`` by outcome (None: no such metric)."""
    values = metric_values(base, "consumer_messages_total")
    if not values:
        return None
    out: dict[str, float] = {}
    for labels, value in values.items():
        found = _OUTCOME.search(labels)
        if found and f'queue="{queue}"' in labels:
            out[found.group(1)] = value
    return out


async def watch_inbox_api(
    amqp_url: str,
    names: Names,
    base: str,
    queued: backlog.Backlog,
    service: Service,
    store_url: str,
    db_name: str,
    meter: CpuWatch,
    give_up_s: float,
) -> dict[str, Any]:
    """Wait for inbox-api to settle every queued message; returns the watch's timeline.

    First the queue's ready count (a passive declare) until it drops (the first delivery:
    ``meter`` starts), then inbox-api's acked counter until it reaches the backlog's message
    count. Both are cheap: counting the ledger would scan it on SecantusDB and take time from
    the consumer, so it is only the fallback when the metric is missing.
    """
    connection = await aio_pika.connect(amqp_url)
    spawned = time.monotonic()
    started: float | None = None
    outcomes: dict[str, float] | None = {}
    try:
        channel = await connection.channel()
        while started is None:
            service.check_alive()
            queue = await channel.declare_queue(names.webhooks_queue, passive=True)
            if (queue.declaration_result.message_count or 0) < queued.messages:
                started = time.monotonic()
                meter.start()
            elif time.monotonic() - spawned > give_up_s:
                raise BenchError(f"inbox-api took no message in {give_up_s:g}s:\n{service.tail()}")
            else:
                await asyncio.sleep(0.05)
        while True:
            service.check_alive()
            outcomes = consumer_outcomes(base, names.webhooks_queue)
            if outcomes is None:  # no metric: the ledger (a scan), less often
                done = await asyncio.to_thread(processed_count, store_url, db_name)
                finished = done >= queued.events
            else:
                # A crash is requeued and would be retried until the timeout: a bug to show
                # now, not a rate to measure.
                if outcomes.get("dead_lettered") or outcomes.get("crashed"):
                    raise BenchError(f"inbox-api: {outcomes}\n{service.tail()}")
                finished = outcomes.get("acked", 0) >= queued.messages
            ended = time.monotonic()
            if finished:
                break
            if ended - spawned > give_up_s:
                raise BenchError(
                    f"not every message settled after {give_up_s:g}s (raise --p2-timeout or "
                    f"lower --contacts/--per-contact): {outcomes}\n{service.tail()}"
                )
            await asyncio.sleep(0.1 if outcomes is not None else 0.5)
    finally:
        await connection.close()
    return {
        "first_delivery_after_s": round(started - spawned, 3),
        "seconds": round(ended - started, 3),
        "outcomes": outcomes if outcomes is not None else "no consumer_messages_total metric",
    }


def drain_inbox_api(
    ctx: Context, store: Store, names: Names, db_name: str, queued: backlog.Backlog
) -> dict[str, Any]:
    args = ctx.args
    service, base = start_inbox_api(
        ctx,
        service_env(ctx, names),
        store.url,
        log=f"inbox-api-p2-{queued.shape}.log",
        db=db_name,
        cpu=ctx.cores.server,
    )
    meter = CpuWatch(
        {"inbox-api": service.process.pid, "secantusdb": store.service.process.pid} | broker_pid()
    )
    label = f"consume-{queued.shape}"
    profiles = [
        start_profile(ctx.args, ctx.run_id, service.process.pid, f"{label}-inbox-api"),
        start_profile(ctx.args, ctx.run_id, store.service.process.pid, f"{label}-secantusdb"),
    ]
    try:
        watched = asyncio.run(
            watch_inbox_api(
                args.rabbitmq_url,
                names,
                base,
                queued,
                service,
                store.url,
                db_name,
                meter,
                args.p2_timeout,
            )
        )
        cpu = meter.stop()
    finally:
        for profile in profiles:
            stop_profile(profile)
    service.check_alive()
    ctx.processes.stop_named("inbox-api")
    return {"watch": watched, "cpu_cores": cpu}


def drain_minimal(
    ctx: Context, store: Store, names: Names, db_name: str, queued: backlog.Backlog
) -> dict[str, Any]:
    args = ctx.args
    watch = {"secantusdb": store.service.process.pid} | broker_pid()
    cmd = child_command(
        "minimal_consumer",
        args.rabbitmq_url,
        names.webhooks_queue,
        store.url,
        db_name,
        f"--events={queued.events}",
        f"--timeout={args.p2_timeout}",
        f"--in-flight={args.p2_minimal_in_flight}",
        watch=watch,
        cpu=ctx.cores.server,
    )
    child = run_child(
        cmd,
        "minimal_consumer",
        timeout=args.p2_timeout + 60,
        on_start=profiler(args, ctx.run_id, f"consume-{queued.shape}-minimal"),
    )
    if "peak_rss_mb" in child:
        ctx.processes.memory.append(
            {
                "case": ctx.processes.case,
                "process": "minimal consumer",
                "peak_rss_mb": child["peak_rss_mb"],
                "rss_mb": child.get("rss_mb", 0.0),
            }
        )
    cpu = child.pop("cpu_cores")
    return {"child": child, "cpu_cores": cpu}


def drain(
    ctx: Context,
    store: Store,
    payloads: list[bytes],
    shape: str,
    consumer: str,
    number: int,
) -> dict[str, Any]:
    """Queue ``payloads`` in ``shape``, let ``consumer`` drain them into a fresh database,
    check the store it left and time the drain from its ledger."""
    args = ctx.args
    names = Names(f"{ctx.run_id}-c{number}")
    db_name = f"{DB_NAME}_{number}"
    try:
        asyncio.run(prepare_store(store.url, db_name, PHONE_NUMBER_ID))
        queued = asyncio.run(
            backlog.publish(args.rabbitmq_url, names, shape, payloads, args.p2_batch)
        )
        print(
            f"  {consumer} on the {shape} backlog ({queued.events} events in "
            f"{queued.messages} messages) ...",
            flush=True,
        )
        runner = drain_inbox_api if consumer == "inbox-api" else drain_minimal
        result = runner(ctx, store, names, db_name, queued)
        counts = store_counts(store.url, db_name)
        window = ledger_window(store.url, db_name)
        left = asyncio.run(queue_counts(args.rabbitmq_url, names)).get(names.webhooks_queue, -1)
    finally:
        ctx.processes.stop_named("inbox-api")
        cleanup_namespace(args.rabbitmq_url, names, number_queues(names, PHONE_NUMBER_ID))
        drop_database(store.url, db_name)
    expected = {
        "ledger_processed": queued.events,
        "ledger_failed": 0,
        "ledger_total": queued.events,
        "messages": queued.events,
        "contacts": args.contacts,
        "conversations": args.contacts,
        "conversations_with_preview": args.contacts,
        "unread_wamids": queued.events,
    }
    timed = result["watch"] if consumer == "inbox-api" else result["child"]
    seconds = float(timed["seconds"])
    return {
        "backlog": shape,
        "consumer": consumer,
        "events": queued.events,
        "messages": queued.messages,
        "publish_s": round(queued.publish_s, 3),
        "rate": queued.events / seconds if seconds > 0 else 0.0,
        "seconds": round(seconds, 3),
        "ledger_window": window,
        **result,
        "verification": {
            "counts": counts,
            "expected": expected,
            "queue_left": left,
            "ok": counts == expected and left == 0,
        },
        "namespace": names.namespace,
    }


def fastest(every: list[dict[str, Any]], shape: str, consumer: str) -> dict[str, Any]:
    """A consumer's report on a backlog: its fastest round (noise only ever slows a drain
    down), with every round's rate."""
    mine = [d for d in every if d["backlog"] == shape and d["consumer"] == consumer]
    best = max(mine, key=lambda d: float(d["rate"]))
    return {**best, "round_rates": [round(float(d["rate"]), 1) for d in mine]}


def case_consume(ctx: Context) -> dict[str, Any]:
    args = ctx.args
    total = args.contacts * args.per_contact
    payloads = bodies.conversation_bodies(PHONE_NUMBER_ID, args.contacts, args.per_contact)
    store = start_secantus(ctx.processes, ctx.workdir, "secantusdb")
    every: list[dict[str, Any]] = []
    try:
        concern = asyncio.run(write_concern(store.url))
        # Interleaved rounds, as in P1, so that a burst of noise (the disk's fsyncs are
        # shared with the rest of the machine) does not land on one drain only.
        for number in range(args.p2_rounds):
            if args.p2_rounds > 1:
                print(f"  round {number + 1} of {args.p2_rounds}", flush=True)
            for shape in backlog.SHAPES:
                for consumer in CONSUMERS:
                    result = drain(ctx, store, payloads, shape, consumer, len(every))
                    every.append({**result, "round": number + 1})
        print("  insert_many and bulk upsert references ...", flush=True)
        cmd = child_command(
            "raw_insert",
            store.url,
            f"{DB_NAME}_raw",
            f"--count={total}",
            "--batch=1000",
            "--rounds=5",
            cpu=ctx.cores.server,
        )
        raw = run_child(cmd, "raw_insert", timeout=300)
    finally:
        ctx.processes.stop_named("inbox-api", "secantusdb")
    drains = [fastest(every, shape, consumer) for shape in backlog.SHAPES for consumer in CONSUMERS]
    rates = {(d["backlog"], d["consumer"]): float(d["rate"]) for d in drains}
    ratios = {
        shape: rates[(shape, "inbox-api")] / rates[(shape, "minimal")]
        for shape in backlog.SHAPES
        if rates[(shape, "minimal")] > 0
    }
    ctx.results["consume_rate"] = rates[("single", "inbox-api")]
    return {
        "events": total,
        "contacts": args.contacts,
        "batch_bodies": args.p2_batch,
        "write_concern": concern,
        "rounds": args.p2_rounds,
        "drains": drains,
        "every_drain": every,
        "raw_insert": raw,
        "ratios": ratios,
        "verification": {
            "ok": all(d["verification"]["ok"] for d in every),
            "drains": {
                f"{d['consumer']}/{d['backlog']}/round {d['round']}": d["verification"]["ok"]
                for d in every
            },
            "rule": "every drain, the same check: ledger all processed, one message per "
            "event, one contact and conversation per contact, every message unread in its "
            "conversation, a preview on each, the queue empty",
        },
    }
