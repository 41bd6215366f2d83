"""Fault 0 (with 7): the quorum queue leader's node of a 3-node RabbitMQ cluster is killed -9.

The module starts a real 3-node cluster from Debian's ``rabbitmq-server`` (its own node
names, ports and data directories; ``join_cluster``) and, in front of it, a TCP load
balancer (``tests/faults/proxy.py``) that sends every new connection to the first node that
accepts it. That is the production topology for services whose client takes a single
broker URL (aio-pika's ``connect_robust``): HAProxy or a cloud load balancer in front of the
cluster, with health-checked failover. The services use the balancer's URL; when a node
dies its connections drop, and each robust connection reconnects through the balancer to a
surviving node.

The services declare the topology while all three nodes are up, so the quorum queue has
three members. While signed webhooks stream in, the node that leads the queue is killed
with SIGKILL; the two survivors elect a new leader and every message the old leader had
confirmed survives. webhook-ingest may answer 503 during the failover (Meta re-sends),
but the total-queue check must find nothing lost and nothing doubled.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aio_pika
import pytest

from inbox_common.broker.topology import WEBHOOK_ROUTING_KEY, Names
from inbox_common.contracts.delivery import delivery_headers
from inbox_common.store.client import Database
from inbox_testkit.faults.checker import Item, Report, Sender, text_items
from inbox_testkit.faults.cluster import RabbitCluster, RabbitNode, can_run_rabbitmq, rabbit_cluster
from inbox_testkit.faults.proxy import TcpProxy
from inbox_testkit.faults.scenario import fault_run
from inbox_testkit.faults.stack import StackConfig, prepare_store

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.timeout(300)]

MESSAGES = 800
RATE = 80.0
RECOVERY_WITHIN = 20.0  # seconds a webhook may keep failing before it counts as never ok


@pytest.fixture(scope="module")
async def cluster() -> AsyncIterator[RabbitCluster]:
    can_run_rabbitmq()
    async with rabbit_cluster(3) as formed:
        yield formed


@pytest.fixture
async def balancer(cluster: RabbitCluster) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy([("127.0.0.1", n.amqp_port) for n in cluster.nodes], name="balancer")
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


async def _publish_directly(url: str, names: Names, items: list[Item]) -> None:
    """Publish bodies as webhook-ingest would, on a fresh connection and channel."""
    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(names.webhooks_exchange, ensure=False)
        for item in items:
            sha256 = hashlib.sha256(item.body).hexdigest()
            await exchange.publish(
                aio_pika.Message(
                    item.body,
                    headers=dict(delivery_headers(sha256, item.key, datetime.now(UTC))),
                    message_id=sha256,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                WEBHOOK_ROUTING_KEY,
            )


async def _wait_stored(db: Database, items: list[Item], timeout: float = 20.0) -> int:  # noqa: ASYNC109
    wamids = [w for i in items for w in i.messages]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        stored = await db["messages"].count_documents({"wamid": {"$in": wamids}})
        if stored == len(wamids) or loop.time() > deadline:
            return stored
        await asyncio.sleep(0.2)


async def test_leader_node_killed_loses_nothing(
    cluster: RabbitCluster,
    balancer: TcpProxy,
    namespace: str,
    mongo_url: str,
    mongo_db_name: str,
    fault_report: Report,
) -> None:
    await prepare_store(mongo_url, mongo_db_name)
    url = f"amqp://guest:guest@127.0.0.1:{balancer.port}/"
    config = StackConfig(
        namespace=namespace, mongo_db=mongo_db_name, mongodb_url=mongo_url, rabbitmq_url=url
    )
    names = Names(namespace)
    async with fault_run(config, "cluster-leader-kill") as run:
        await run.start(replicas=2)
        before = await cluster.quorum_queue(names.webhooks_queue)
        assert len(before["online"]) == 3, f"the quorum queue is not on 3 nodes: {before}"
        killed: list[RabbitNode] = []

        async def kill_leader(sender: Sender) -> None:
            await sender.wait_started(MESSAGES // 4)
            leader = await cluster.quorum_leader(names.webhooks_queue)
            await leader.kill()
            killed.append(leader)

        # Meta retries for days; a failover must be over well within this.
        sender = await run.send(
            text_items(MESSAGES, label="failover"),
            rate=RATE,
            retry_deadline=RECOVERY_WITHIN,
            during=kill_leader,
        )
        await run.wait_consuming(timeout=30)
        verdict = await run.check()
        after = await cluster.quorum_queue(names.webhooks_queue)
        assert run.ingest is not None
        verdict.notes["leader"] = f"{before['leader']}->{after['leader']}"
        verdict.notes["never_ok"] = len(sender.never_ok)
        verdict.notes["ingest_nacks"] = run.ingest.events["webhook.publish_failed:nacked"]
        fault_report(verdict)
        context = (
            f"queue before {before}, after {after}; killed {killed[0].name}\n"
            f"ingest events {dict(run.ingest.events)}\n{run.context()}"
        )
        # Safety: whatever got a 200 is stored, once.
        assert (verdict.lost, verdict.duplicated, verdict.unexpected) == (0, 0, 0), (
            f"{verdict.explain()}\n{context}"
        )
        assert verdict.unfinished == 0, f"{verdict.explain()}\n{context}"
        assert after["leader"] != killed[0].name, context
        assert killed[0].name not in after["online"], context
        # The consumers came back: bodies published on a fresh channel get stored.
        fresh = text_items(20, label="after-failover")
        await _publish_directly(url, names, fresh)
        stored = await _wait_stored(run.db, fresh)
        assert stored == len(fresh), f"consumers stored {stored} of 20 after the failover"
        # Availability: every webhook got its 200 once the cluster failed over.
        assert verdict.clean, f"{verdict.explain()}\n{context}"
