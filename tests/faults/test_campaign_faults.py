"""Fault 9: a template campaign under Meta's refusals, killed senders, a killed retry-worker
and a broker restart loses and doubles nothing.

Two inbox-api replicas send a 300-recipient campaign through the Cloud API sandbox, while
the sandbox refuses sends the ways Meta does (HTTP 500 and 503, 131000, 130429, a lost
answer: the message taken but the answer never sent back, and 131026 for good). Mid-campaign
each replica is killed -9 once and started again, then the broker (a RabbitMQ node of this
module's own) is killed -9 and restarted, then the retry-worker is killed -9 and started
again (the new one takes over the dead one's lock once it is stale). The retry-worker brings
the retryable sends back from their delay tiers. The sandbox's ledger (what "Meta" accepted)
is the truth: every recipient got the template exactly once (the one refused for good was
accepted, then failed in a status webhook, as Meta does with 131026), and the campaign's
funnel says so, with Meta's code for the failure.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from typing import Any

import aiohttp
import pytest

from inbox_common.store.client import create_client
from inbox_common.store.schema import CHANNELS
from inbox_common.tokens import Role, create_token
from inbox_testkit.faults.cluster import RabbitNode
from inbox_testkit.faults.stack import (
    PHONE_NUMBER_ID,
    SECRET,
    StackConfig,
    running_stack,
)
from inbox_testkit.polling import wait_until
from inbox_testkit.sandbox import run_sandbox, sandbox_number
from inbox_testkit.tenants import bearer

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.timeout(300)]

RECIPIENTS = 300
RATE = 40  # the channel's messages per second: the campaign's first pass lasts ~8 s
TEMPLATE = {
    "name": "order_update",
    "language": {"code": "en_US"},
    "components": [{"type": "body", "parameters": [{"type": "text", "text": "{{n}}"}]}],
}
# (sends accepted before, fault, how many sends it takes), in the order they are injected.
FAULTS: list[tuple[int, int | str, int]] = [
    (0, "http_500", 3),
    (40, 131000, 2),
    (70, "lost_answer", 2),
    (110, 130429, 2),
    (150, "http_503", 2),
    (190, 131026, 1),
]
KILLS_AT = (60, 160)  # sends accepted when replica 0, then replica 1, is killed -9
BROKER_KILLED_AT = 200  # sends accepted when the broker node is killed -9 ...
BROKER_DOWN_SECONDS = 2.0  # ... and how long it stays down
WORKER_KILLED_AT = 240  # sends accepted when the retry-worker is killed -9


async def test_a_campaign_under_meta_refusals_and_kills_sends_each_once(
    node_config: StackConfig, started_node: RabbitNode
) -> None:
    stack_config = node_config
    client = create_client(stack_config.mongodb_url, app_name="faults", timeout_ms=10_000)
    db = client[stack_config.mongo_db]
    try:
        await db[CHANNELS].update_one(
            {"phone_number_id": PHONE_NUMBER_ID}, {"$set": {"messages_per_second": RATE}}
        )
        channel = await db[CHANNELS].find_one({"phone_number_id": PHONE_NUMBER_ID})
        assert channel is not None
        admin = await create_token(db, role=Role.ADMIN, tenant="faults")
        await run_campaign(stack_config, str(channel["_id"]), admin, started_node)
    finally:
        await client.close()


async def run_campaign(config: StackConfig, channel_id: str, admin: str, node: RabbitNode) -> None:
    async with running_stack(config) as stack:
        ingest = stack.ingest()
        await ingest.start()
        async with run_sandbox(
            f"{ingest.base}/webhooks/whatsapp",
            [sandbox_number(PHONE_NUMBER_ID, "EAAG-faults")],
            whatsapp_webhook_secret=SECRET,
            sandbox_status_delays_ms="20,60,100",
        ) as cloud:
            config.env.update({"WHATSAPP_API_BASE_URL": cloud.url, "SENDER_STALE_SECONDS": "60"})
            replicas = [stack.api(name=f"inbox-api-{n}") for n in range(2)]
            worker = stack.retry_worker(
                JOBS_API_TOKEN="faults-jobs-token",
                RETRY_WORKER_INTERVAL_SECONDS="0.5",
                # A restarted worker takes the killed one's lock over 3 s after its last beat.
                RETRY_WORKER_STALE_SECONDS="3",
            )
            await stack.start()
            numbers = [f"62812{n:08d}" for n in range(RECIPIENTS)]

            async def accepted() -> int:
                return len(await cloud.sent(phone_number_id=PHONE_NUMBER_ID))

            async def at_least(count: int) -> None:
                async def reached() -> bool:
                    return await accepted() >= count

                await wait_until(reached, f"{count} sends accepted", timeout=60)

            async def inject() -> None:
                for after, code, count in FAULTS:
                    await at_least(after)
                    await cloud.fail_next(code, count)

            async def kill() -> None:
                for victim, after in zip(replicas, KILLS_AT, strict=True):
                    await at_least(after)
                    await victim.kill(signal.SIGKILL)
                    await victim.start(healthy=False)
                await at_least(BROKER_KILLED_AT)
                await node.kill()
                await asyncio.sleep(BROKER_DOWN_SECONDS)
                await node.start()
                await node.wait_ready()
                await at_least(WORKER_KILLED_AT)
                await worker.kill(signal.SIGKILL)
                await worker.start(healthy=False)

            injecting = asyncio.create_task(inject())
            async with aiohttp.ClientSession(base_url=replicas[0].base) as http:
                rows = [{"wa_id": n, "variables": {"n": n[-4:]}} for n in numbers]
                body = {
                    "name": "faults",
                    "channel_id": channel_id,
                    "template": TEMPLATE,
                    "recipients": rows,
                }
                async with http.post("/api/campaigns", json=body, headers=bearer(admin)) as r:
                    created = await r.json()
                    assert r.status == 201, created
                await asyncio.gather(injecting, kill())
                await replicas[0].wait_healthy()
                try:
                    campaign = await settled(http, admin, created["id"], stack.tails)
                except AssertionError as exc:
                    stuck = await unsent(config)
                    _, state = await worker.get("/api/jobs/campaign-retry?token=faults-jobs-token")
                    raise AssertionError(
                        f"{exc}\nnot sent: {stuck}\nthe retry-worker: {state}"
                    ) from None

            sent = Counter(
                s["request"]["to"] for s in await cloud.sent(phone_number_id=PHONE_NUMBER_ID)
            )
            twice = {n: c for n, c in sent.items() if c > 1}
            assert twice == {}, f"sent more than once: {twice}"
            funnel = campaign["funnel"]
            # Meta accepts the 131026 one too, and then says in a status that it failed.
            assert set(sent) == set(numbers), (set(numbers) - set(sent), funnel)
            assert funnel["failed_by_code"] == [
                {"code": 131026, "title": funnel["failed_by_code"][0]["title"], "count": 1}
            ]
            assert funnel["counts"]["read"] == RECIPIENTS - 1, funnel
            redelivered = sum(r.events["consumer.redelivered"] for r in replicas)
            retried = await retried_messages(config)
            assert retried >= 5, f"only {retried} sends were retried: the faults did not bite"
            print(
                f"fault=campaign recipients={RECIPIENTS} sent_once={len(sent)} failed=1 "
                f"twice=0 retried={retried} redelivered={redelivered} "
                "killed=replica,replica,broker,retry-worker"
            )


async def settled(
    http: aiohttp.ClientSession, admin: str, campaign_id: str, tails: Any
) -> dict[str, Any]:
    """Wait until the campaign completed and every accepted message was read."""
    seen: list[dict[str, Any]] = []

    async def done() -> bool:
        async with http.get(f"/api/campaigns/{campaign_id}", headers=bearer(admin)) as answer:
            seen[:] = [await answer.json()]
        campaign = seen[0]
        return (
            campaign.get("status") == "completed"
            and campaign["funnel"]["counts"]["read"] + campaign["funnel"]["counts"]["failed"]
            == RECIPIENTS
        )

    try:
        await wait_until(done, "the campaign to complete and be read", timeout=200)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; it is {seen[-1] if seen else None}\n{tails()}") from None
    return seen[0]


async def unsent(config: StackConfig) -> list[Any]:
    client = create_client(config.mongodb_url, app_name="faults", timeout_ms=10_000)
    try:
        messages = client[config.mongo_db]["messages"]
        query = {"send_state": {"$nin": ["accepted", "failed"]}, "campaign_id": {"$exists": True}}
        return await messages.find(query, {"content": 0}).to_list()
    finally:
        await client.close()


async def retried_messages(config: StackConfig) -> int:
    client = create_client(config.mongodb_url, app_name="faults", timeout_ms=10_000)
    try:
        messages = client[config.mongo_db]["messages"]
        return await messages.count_documents({"attempts": {"$gt": 1}})
    finally:
        await client.close()
