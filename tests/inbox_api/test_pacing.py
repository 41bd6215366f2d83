"""A number's sends stay under Meta's throughput whatever the number of sender replicas.

The referee is the whatsapp-sandbox process: it refuses a send above the number's configured
throughput with 130429, exactly like Meta. Two inbox-api replicas send for one number; each
number's queue has a single active consumer, so only one of them sends at a time and its
token bucket is the whole budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from bson import ObjectId

from inbox_api.app import create_app
from inbox_api.pacing import TokenBucket
from inbox_api.settings import InboxApiSettings
from inbox_common.store.client import Database, Document
from inbox_common.store.schema import MESSAGES
from inbox_testkit.agent import reply, writes_in
from inbox_testkit.plugin import ApiClient
from inbox_testkit.polling import wait_until
from inbox_testkit.sandbox import Sandbox, run_sandbox, sandbox_number
from inbox_testkit.tenants import ACME_NUMBER, Tokens

pytestmark = pytest.mark.integration

TOKEN = f"EAAG-secret-{ACME_NUMBER}"
RATE = 20  # messages a second the sandbox allows the number
SENDS = 80


@pytest.fixture
async def cloud(ingest_url: str) -> AsyncIterator[Sandbox]:
    async with run_sandbox(
        ingest_url,
        [sandbox_number(ACME_NUMBER, TOKEN)],
        sandbox_throughput=str(RATE),
        sandbox_pair_burst="1000",  # the pair rate is not what this test is about
        sandbox_read="false",
    ) as sandbox:
        yield sandbox


async def test_two_replicas_keep_a_number_under_its_throughput(
    settings: InboxApiSettings,
    cloud: Sandbox,
    channel: Document,
    db: Database,
    tokens: Tokens,
) -> None:
    wired = settings.model_copy(
        update={"whatsapp_api_base_url": cloud.url, "sender_messages_per_second": RATE}
    )
    replicas: list[ApiClient] = []
    try:
        for _ in range(2):
            replica: ApiClient = TestClient(TestServer(create_app(wired)))
            await replica.start_server()
            replicas.append(replica)
        a, b = replicas
        conversation = await writes_in(
            a, cloud, tokens.acme_agent, ACME_NUMBER, "6281100000001", "Hi"
        )
        answers = await asyncio.gather(
            *(
                reply(
                    (a, b)[i % 2],
                    tokens.acme_agent,
                    conversation,
                    {"type": "text", "text": {"body": f"update {i}"}},
                    f"k{i}",
                )
                for i in range(SENDS)
            )
        )
        assert {status for status, _ in answers} == {202}
        ids = [ObjectId(message["id"]) for _, message in answers]

        async def all_accepted() -> bool:
            done = await db[MESSAGES].count_documents(
                {"_id": {"$in": ids}, "send_state": "accepted"}
            )
            return done == SENDS

        # 80 sends at 19/s take about 4 s; a refusal would park one for 30 s in a tier.
        await wait_until(all_accepted, f"{SENDS} sends accepted", timeout=20)
    finally:
        for replica in replicas:
            await replica.close()
    sent = await cloud.sent(phone_number_id=ACME_NUMBER)
    assert len(sent) == SENDS
    refused = await db[MESSAGES].count_documents({"_id": {"$in": ids}, "attempts": {"$gt": 1}})
    assert refused == 0, "a send was refused (130429) and tried again"


async def test_a_bucket_that_takes_over_starts_empty_and_backs_off() -> None:
    now = [100.0]
    bucket = TokenBucket(10.0, burst=5.0, clock=lambda: now[0])
    slept: list[float] = []

    async def take() -> None:
        waiting = asyncio.ensure_future(bucket.acquire())
        for _ in range(50):  # let it reach its sleep; advance the clock by what it waits
            await asyncio.sleep(0)
            if waiting.done():
                return
        now[0] += 0.25  # past the 0.1 s one token takes (and float rounding)
        slept.append(0.25)
        await asyncio.wait_for(waiting, 1)

    await take()  # empty at first: the first send waits for a token
    assert slept == [0.25]
    assert bucket.back_off() == 1.0
    assert bucket.back_off() == 2.0  # doubling while 130429 repeats
    bucket.succeeded()
    assert bucket.back_off() == 1.0
