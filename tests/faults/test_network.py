"""Fault 4 (with 7): a bad network between the services and their broker and store.

Three TCP proxies (``tests/faults/proxy.py``) sit between webhook-ingest and RabbitMQ,
between the two inbox-api replicas and RabbitMQ, and between the replicas and the store.
While signed webhooks stream in, the proxies:

1. stall ingest's broker connection (no bytes either way, sockets open) for longer than
   ``AMQP_PUBLISH_TIMEOUT``: every publish must fail within its timeout, so ingest answers
   503 within the timeout plus slack, and nothing hangs;
2. cut every broker connection and refuse new ones for a while: the robust connections
   come back, the topology and consumers are restored;
3. slow every connection down (added latency per chunk);
4. stall the replicas' store connections for longer than a health probe's deadline (the
   health says so), let them go, then cut them (pending writes fail and are retried);
5. stall the replicas' broker connection (deliveries and acks wait) and let it go.

Afterwards every service is healthy, both consumers consume, and the total-queue check finds
nothing lost or doubled. No request waited longer than the publish timeout plus slack.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import pytest

from inbox_testkit.faults.checker import NO_ANSWER, Attempt, Report, Sender, text_items
from inbox_testkit.faults.proxy import TcpProxy
from inbox_testkit.faults.scenario import FaultRun, fault_run
from inbox_testkit.faults.stack import PUBLISH_TIMEOUT, StackConfig

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.timeout(180)]

MESSAGES = 900
RATE = 60.0  # about 15 s of stream
SLACK = 1.5  # seconds an answer may take beyond the publish timeout


def _via(url: str, proxy: TcpProxy) -> str:
    """``url`` with its host and port replaced by the proxy's (credentials kept)."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None or "," in parts.netloc:
        pytest.skip(f"the proxy needs one host:port in the URL, not {url!r}")
    return parts.hostname, parts.port


@dataclass
class Proxies:
    ingest_broker: TcpProxy
    api_broker: TcpProxy
    api_store: TcpProxy

    def all(self) -> list[TcpProxy]:
        return [self.ingest_broker, self.api_broker, self.api_store]


@pytest.fixture
async def proxies(stack_config: StackConfig) -> AsyncIterator[Proxies]:
    broker = _address(stack_config.rabbitmq_url)
    store = _address(stack_config.mongodb_url)
    made = Proxies(
        TcpProxy([broker], name="ingest-broker"),
        TcpProxy([broker], name="api-broker"),
        TcpProxy([store], name="api-store"),
    )
    try:
        for proxy in made.all():
            await proxy.start()
        yield made
    finally:
        for proxy in made.all():
            await proxy.close()


@dataclass
class Window:
    what: str
    start: float
    end: float = 0.0


async def _faults(proxies: Proxies, run: FaultRun, sender: Sender, windows: list[Window]) -> None:
    loop = asyncio.get_running_loop()
    log = run.log

    async def hold(what: str, seconds: float) -> None:
        window = Window(what, loop.time())
        await asyncio.sleep(seconds)
        window.end = loop.time()
        windows.append(window)

    await sender.wait_started(MESSAGES // 8)
    # 1. A stalled publisher connection: publishes time out, ingest answers 503.
    proxies.ingest_broker.stall()
    await hold("ingest-broker stall", PUBLISH_TIMEOUT * 2 + 1)
    proxies.ingest_broker.heal()
    await asyncio.sleep(1.0)
    # 2. Every broker connection cut; nothing accepts for a while.
    for proxy in (proxies.ingest_broker, proxies.api_broker):
        proxy.refuse()
        log.append(f"cut {proxy.cut()} connections of {proxy.name}")
    await hold("broker refused", 2.0)
    for proxy in (proxies.ingest_broker, proxies.api_broker):
        proxy.heal()
    await asyncio.sleep(1.0)
    # 3. Everything slow.
    for proxy in proxies.all():
        proxy.slow(0.03)
    await hold("slow", 3.0)
    for proxy in proxies.all():
        proxy.heal()
    # 4. The store stalls (past the health probe's deadline), then its connections drop.
    proxies.api_store.stall()
    await asyncio.sleep(2.5)
    status, health = await run.replicas[0].get("/api/health", timeout=5)
    log.append(f"inbox-api health while the store stalls: {status} {health}")
    assert status == 503, f"inbox-api health while the store stalls: {status} {health}"
    await hold("store stall", 1.0)
    proxies.api_store.heal()
    await asyncio.sleep(0.5)
    log.append(f"cut {proxies.api_store.cut()} connections of api-store")
    await asyncio.sleep(1.0)
    # 5. The consumers' broker connection stalls: deliveries and acks wait.
    proxies.api_broker.stall()
    await hold("api-broker stall", 3.0)
    proxies.api_broker.heal()


def _stall_answers(sender: Sender, window: Window) -> list[Attempt]:
    """The attempts that started in the stall early enough to time out inside it."""
    return [
        a
        for a in sender.attempts
        if window.start + 0.2 < a.started < window.end - PUBLISH_TIMEOUT - SLACK
    ]


async def test_cut_stalled_and_slow_connections_lose_nothing_and_hang_nothing(
    stack_config: StackConfig, proxies: Proxies, fault_report: Report
) -> None:
    windows: list[Window] = []
    async with fault_run(stack_config, "network") as run:
        await run.start(
            replicas=2,
            ingest_rabbitmq_url=_via(stack_config.rabbitmq_url, proxies.ingest_broker),
            api_rabbitmq_url=_via(stack_config.rabbitmq_url, proxies.api_broker),
            api_mongodb_url=_via(stack_config.mongodb_url, proxies.api_store),
        )

        async def faults(sender: Sender) -> None:
            try:
                await _faults(proxies, run, sender, windows)
            finally:
                for proxy in proxies.all():
                    proxy.heal()

        sender = await run.send(
            text_items(MESSAGES, label="network"),
            rate=RATE,
            concurrency=32,
            request_timeout=PUBLISH_TIMEOUT + 10,
            during=faults,
        )
        for service in run.stack.services:
            await service.wait_healthy(timeout=20)
        await run.wait_consuming(timeout=20)
        verdict = await run.check()
        stall = next(w for w in windows if w.what == "ingest-broker stall")
        in_stall = _stall_answers(sender, stall)
        hung = [a for a in sender.attempts if a.status == NO_ANSWER]
        slow = [a for a in sender.attempts if a.seconds > PUBLISH_TIMEOUT + SLACK]
        verdict.notes["answers_in_stall"] = len(in_stall)
        verdict.notes["slowest_s"] = round(sender.slowest(), 2)
        fault_report(verdict)
        context = f"windows: {windows}\n{run.context()}"
        run.assert_clean(verdict, f"windows: {windows}")
        assert in_stall, f"no request was answered during the stall\n{context}"
        assert all(a.status == 503 for a in in_stall), f"{in_stall}\n{context}"
        assert not hung, f"requests without an answer: {hung[:5]}\n{context}"
        assert not slow, f"answers slower than the timeout + slack: {slow[:5]}\n{context}"
