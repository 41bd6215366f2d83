"""Fault 2 (with 7): inbox-api consumers killed -9 mid-stream, two replicas on one queue.

Two inbox-api processes consume ``<ns>.inbox.webhooks`` while signed webhooks stream in
through webhook-ingest. One replica at a time is killed with SIGKILL at a random moment and
started again; once, a replica is frozen (SIGSTOP) for a while and thawed. A kill between a
store write and its ack makes the broker redeliver the message to the other replica (or
to the restarted one); the redelivery must be absorbed: nothing lost, nothing twice.

The ledger's ``attempts`` counter shows that the kills really hit messages between the
write and the ack (a body received more than once); the test fails if they never did, as
the fault would then not have been exercised.
"""

from __future__ import annotations

import asyncio
import random
import signal

import pytest

from inbox_common.broker.topology import Names
from inbox_common.store.client import create_client
from tests.faults.checker import Sender, check, queue_depth, text_items, wait_quiet
from tests.faults.conftest import Report
from tests.faults.stack import Service, StackConfig, running_stack

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.timeout(180)]

MESSAGES = 800
RATE = 100.0  # first attempts per second: the stream lasts about 8 s
KILLS = 5


async def _kill_and_restart(replicas: list[Service], sender: Sender, seed: int) -> list[str]:
    """Kill a replica -9 at random moments while the stream flows; restart it each time."""
    rng = random.Random(seed)
    done: list[str] = []
    await sender.wait_started(MESSAGES // 8)
    for n in range(KILLS):
        await asyncio.sleep(rng.uniform(0.4, 1.0))
        victim = replicas[n % len(replicas)]
        await victim.kill(signal.SIGKILL)
        done.append(f"kill -9 {victim.name}")
        await victim.start(healthy=False)
    # And a freeze: the frozen replica's unacked messages wait, then it carries on.
    victim = replicas[0]
    victim.kill_now(signal.SIGSTOP)
    await asyncio.sleep(2.0)
    victim.kill_now(signal.SIGCONT)
    done.append(f"SIGSTOP/SIGCONT {victim.name}")
    for replica in replicas:
        await replica.wait_consuming()
    return done


async def test_killed_consumers_neither_lose_nor_duplicate(
    stack_config: StackConfig, names: Names, fault_report: Report
) -> None:
    items = text_items(MESSAGES, label="crash")
    client = create_client(stack_config.mongodb_url, app_name="faults-check")
    db = client[stack_config.mongo_db]
    try:
        async with running_stack(stack_config) as stack:
            ingest = stack.ingest()
            replicas = [stack.api(name="inbox-api-a"), stack.api(name="inbox-api-b")]
            await stack.start()
            for replica in replicas:
                await replica.wait_consuming()
            sender = Sender(ingest.base, rate=RATE)
            sending = asyncio.create_task(sender.run(items))
            try:
                faults = await _kill_and_restart(replicas, sender, seed=2)
            finally:
                await sending
            async with queue_depth(stack_config.rabbitmq_url, names.webhooks_queue) as depth:
                await wait_quiet(db, items, sender, depth, timeout=60)
            verdict = await check(db, "consumer-kill", items, sender)
            redelivered = await db["webhook_events"].count_documents({"attempts": {"$gt": 1}})
            verdict.notes["received_twice"] = redelivered
            fault_report(verdict)
            context = f"{'; '.join(faults)}\n{sender.summary()}\n{stack.tails()}"
            assert verdict.clean, f"{verdict.explain()}\n{context}"
            assert redelivered > 0, (
                "no body was received twice: the kills never hit a message between its "
                f"store write and its ack, so the fault was not exercised\n{context}"
            )
    finally:
        await client.close()
