"""Fault 2 (with 7): inbox-api consumers killed -9 mid-stream, two replicas on one queue.

Two inbox-api processes consume ``<ns>.inbox.webhooks`` while signed webhooks stream in
through webhook-ingest. One replica at a time is killed with SIGKILL at a random moment and
started again; once, a replica is frozen (SIGSTOP) for a while and thawed. A kill between a
store write and its ack makes the broker redeliver the message to the other replica (or
to the restarted one); the redelivery must be absorbed: nothing lost, nothing twice.

The replicas count the messages RabbitMQ delivered again (``consumer.redelivered``): the
test fails if the kills never hit a message between its delivery and its ack, as the fault
would then not have been exercised. The ledger's ``attempts`` shows how many of them had
already been written in full (a body recorded, then delivered again).
"""

from __future__ import annotations

import asyncio
import random
import signal

import pytest

from inbox_testkit.faults.checker import Report, Sender, text_items
from inbox_testkit.faults.scenario import fault_run
from inbox_testkit.faults.stack import StackConfig

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.timeout(180)]

MESSAGES = 800
RATE = 100.0  # first attempts per second: the stream lasts about 8 s
KILLS = 5


async def test_killed_consumers_neither_lose_nor_duplicate(
    stack_config: StackConfig, fault_report: Report
) -> None:
    async with fault_run(stack_config, "consumer-kill") as run:
        await run.start(replicas=2)

        async def kill_and_restart(sender: Sender) -> None:
            """Kill a replica -9 at random moments while the stream flows; restart it."""
            rng = random.Random(2)
            await sender.wait_started(MESSAGES // 8)
            for n in range(KILLS):
                await asyncio.sleep(rng.uniform(0.4, 1.0))
                victim = run.replicas[n % len(run.replicas)]
                await victim.kill(signal.SIGKILL)
                run.log.append(f"kill -9 {victim.name}")
                await victim.start(healthy=False)
            # And a freeze: the frozen replica's unacked messages wait, then it carries on.
            victim = run.replicas[0]
            victim.kill_now(signal.SIGSTOP)
            await asyncio.sleep(2.0)
            victim.kill_now(signal.SIGCONT)
            run.log.append(f"SIGSTOP/SIGCONT {victim.name}")
            await run.wait_consuming()

        await run.send(text_items(MESSAGES, label="crash"), rate=RATE, during=kill_and_restart)
        verdict = await run.check()
        redelivered = sum(r.events["consumer.redelivered"] for r in run.replicas)
        verdict.notes["redelivered"] = redelivered
        verdict.notes["received_twice"] = await run.db["webhook_events"].count_documents(
            {"attempts": {"$gt": 1}}
        )
        fault_report(verdict)
        run.assert_clean(verdict)
        assert redelivered > 0, (
            "no message was delivered twice: the kills never hit a message between its "
            f"delivery and its ack, so the fault was not exercised\n{run.context()}"
        )
