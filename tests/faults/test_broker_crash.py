"""Fault 1 (with 7): the broker is killed -9 mid-stream and restarted.

The module starts its own RabbitMQ node (own ports, own data directory; the machine's
broker is never touched) and runs webhook-ingest and two inbox-api replicas against it.
While signed webhooks stream in, the node is killed with SIGKILL, left down for a few
seconds and started again on the same ports and data.

While it is down, webhook-ingest must answer 503, never 200 (a 200 would promise a body
the broker never confirmed), its ``/api/health`` must say ``down`` within seconds while
``/livez`` stays 200, and inbox-api must report its broker check down. After the restart,
health recovers, the consumers come back, every body Meta re-sent is accepted, and the
total-queue check finds nothing lost (confirmed messages of the quorum queue survive the
crash) and nothing doubled.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from inbox_testkit.faults.checker import Report, Sender, text_items
from inbox_testkit.faults.cluster import RabbitNode
from inbox_testkit.faults.scenario import fault_run
from inbox_testkit.faults.stack import Service, StackConfig

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.timeout(240)]

MESSAGES = 600
RATE = 60.0
DOWN_FOR = 5.0
REPORTS_WITHIN = 3.0  # seconds for health to say down (and, after the restart, ok)


@dataclass
class Observed:
    """What the probes saw, with loop times."""

    killed_at: float = 0.0
    restart_at: float = 0.0
    ingest_down_after: float | None = None
    api_broker_down_after: float | None = None
    livez_failures: list[str] = field(default_factory=list)
    recovered_after: float | None = None

    def describe(self) -> str:
        return (
            f"ingest health down after {self.ingest_down_after} s, inbox-api broker check "
            f"down after {self.api_broker_down_after} s, /livez failures "
            f"{self.livez_failures}, healthy again {self.recovered_after} s after the restart"
        )


async def _status(service: Service, path: str) -> tuple[int, object]:
    try:
        return await service.get(path, timeout=2.0)
    except Exception as exc:  # no answer is an answer here; it is recorded
        return 0, repr(exc)


async def _watch_down(ingest: Service, api: Service, seen: Observed) -> None:
    """Poll health and liveness while the broker is down."""
    loop = asyncio.get_running_loop()
    while loop.time() < seen.killed_at + DOWN_FOR - 0.3:
        elapsed = loop.time() - seen.killed_at
        status, body = await _status(ingest, "/api/health")
        down = status == 503 and isinstance(body, dict) and body.get("status") == "down"
        if down and seen.ingest_down_after is None:
            seen.ingest_down_after = round(elapsed, 2)
        _, api_body = await _status(api, "/api/health")
        api_checks = api_body.get("checks", {}) if isinstance(api_body, dict) else {}
        broker = api_checks.get("rabbitmq", {}).get("status")
        if broker == "down" and seen.api_broker_down_after is None:
            seen.api_broker_down_after = round(elapsed, 2)
        for service in (ingest, api):
            live, _ = await _status(service, "/livez")
            if live != 200:
                seen.livez_failures.append(f"{service.name} /livez {live} at {elapsed:.1f}s")
        await asyncio.sleep(0.2)


async def _crash(
    node: RabbitNode, ingest: Service, api: Service, sender: Sender, seen: Observed
) -> None:
    loop = asyncio.get_running_loop()
    await sender.wait_started(MESSAGES // 4)
    await node.kill()
    seen.killed_at = loop.time()
    await _watch_down(ingest, api, seen)
    seen.restart_at = loop.time()
    await node.start()
    await node.wait_ready()
    while loop.time() < seen.restart_at + 30:
        status, _ = await _status(ingest, "/api/health")
        if status == 200:
            seen.recovered_after = round(loop.time() - seen.restart_at, 2)
            break
        await asyncio.sleep(0.2)


async def test_broker_crash_answers_503_and_loses_nothing(
    started_node: RabbitNode, node_config: StackConfig, fault_report: Report
) -> None:
    node = started_node
    async with fault_run(node_config, "broker-crash") as run:
        await run.start(replicas=2)
        seen = Observed()

        async def crash(sender: Sender) -> None:
            assert run.ingest is not None
            await _crash(node, run.ingest, run.replicas[0], sender, seen)

        sender = await run.send(
            text_items(MESSAGES, label="broker-crash"), rate=RATE, retry_deadline=120, during=crash
        )
        await run.wait_consuming()
        verdict = await run.check()
        false_200 = sender.answered_200_between(seen.killed_at, seen.restart_at)
        refused = [
            a
            for a in sender.attempts
            if seen.killed_at < a.started and a.ended < seen.restart_at and a.status == 503
        ]
        verdict.notes["503_while_down"] = len(refused)
        verdict.notes["200_while_down"] = len(false_200)
        verdict.notes["health_down_after_s"] = seen.ingest_down_after
        fault_report(verdict)
        context = f"{seen.describe()}\n{run.context()}\n{node.tails(10)}"
        run.assert_clean(verdict, f"{seen.describe()}\n{node.tails(10)}")
        assert not false_200, f"200 while the broker was down: {false_200[:5]}\n{context}"
        assert refused, f"no request was answered while the broker was down\n{context}"
        assert seen.ingest_down_after is not None, context
        assert seen.ingest_down_after <= REPORTS_WITHIN, context
        assert seen.api_broker_down_after is not None, context
        assert seen.api_broker_down_after <= REPORTS_WITHIN, context
        assert seen.livez_failures == [], context
        assert seen.recovered_after is not None, context
