"""The built-in schedule against the real store and broker: once per task and period, however
many replicas tick at once; a failed publish hands the period back; two whole maintenance
services side by side publish and run each period once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import orjson
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from pymongo.errors import AutoReconnect
from structlog.testing import capture_logs

from inbox_common.broker.connection import Broker
from inbox_common.broker.publisher import ConfirmedPublisher
from inbox_common.broker.topology import Names
from inbox_common.local.ports import free_port
from inbox_common.metrics import METRICS_REGISTRY
from inbox_common.store.client import Database
from inbox_common.store.collections import MAINTENANCE_SCHEDULE
from inbox_maintenance.app import create_app
from inbox_maintenance.metrics import MaintenanceMetrics
from inbox_maintenance.schedule import Schedule, TaskMessage, period_start
from inbox_maintenance.settings import MaintenanceSettings
from inbox_testkit.broker import broker_connection
from inbox_testkit.polling import wait_until
from tests.maintenance.conftest import settings_values

pytestmark = pytest.mark.integration

PERIODS: dict[str, float | None] = {"stale_locks": 60.0, "alerts": 300.0, "retention": None}
# 12:00:30 UTC on a day: inside a 1-minute and a 5-minute period.
T0 = datetime(2026, 12, 2, 12, 0, 30, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def second_publisher(amqp_url: str, broker: Broker) -> AsyncIterator[ConfirmedPublisher]:
    """Another replica's own connection and confirm channel."""
    async with broker_connection(amqp_url, name="replica-b") as other:
        await other.wait_connected(10)
        publisher = ConfirmedPublisher(other, timeout=5)
        await publisher.start()
        yield publisher


async def drain(channel: AbstractChannel, queue: str) -> list[AbstractIncomingMessage]:
    source = await channel.get_queue(queue, ensure=False)
    got = []
    while (message := await source.get(fail=False, timeout=5)) is not None:
        await message.ack()
        got.append(message)
    return got


def replica(
    db: Database, publisher: ConfirmedPublisher, names: Names, clock: Clock, owner: str
) -> Schedule:
    metrics = MaintenanceMetrics(CollectorRegistry())
    return Schedule(db, publisher, names, PERIODS, metrics, owner=owner, clock=clock)


async def test_two_replicas_ticking_together_publish_each_task_once_per_period(
    db: Database,
    names: Names,
    publisher: ConfirmedPublisher,
    second_publisher: ConfirmedPublisher,
    amqp_channel: AbstractChannel,
) -> None:
    clock = Clock(T0)
    a = replica(db, publisher, names, clock, "replica-a")
    b = replica(db, second_publisher, names, clock, "replica-b")

    first = await asyncio.gather(*(r.tick() for _ in range(5) for r in (a, b)))
    assert sorted(task for won in first for task in won) == ["alerts", "stale_locks"]

    clock.now = T0 + 40  # 12:01:10: a new minute, the same five minutes
    second = await asyncio.gather(*(r.tick() for _ in range(5) for r in (a, b)))
    assert sorted(task for won in second for task in won) == ["stale_locks"]

    messages = await drain(amqp_channel, names.maintenance_queue)
    bodies = [TaskMessage.model_validate(orjson.loads(m.body)) for m in messages]
    assert sorted((b.task, b.period) for b in bodies) == [
        ("alerts", period_start(T0, 300)),
        ("stale_locks", period_start(T0, 60)),
        ("stale_locks", period_start(T0 + 40, 60)),
    ]
    assert len({m.message_id for m in messages}) == 3
    doc = await db[MAINTENANCE_SCHEDULE].find_one({"_id": "stale_locks"})
    assert doc is not None
    assert doc["period"] == period_start(T0 + 40, 60)


async def test_a_clock_behind_never_publishes_a_period_again(
    db: Database, names: Names, publisher: ConfirmedPublisher, amqp_channel: AbstractChannel
) -> None:
    ahead = replica(db, publisher, names, Clock(T0 + 60), "ahead")
    behind = replica(db, publisher, names, Clock(T0), "behind")
    assert sorted(await ahead.tick()) == ["alerts", "stale_locks"]
    assert await behind.tick() == []
    assert len(await drain(amqp_channel, names.maintenance_queue)) == 2


async def test_a_failed_publish_hands_the_period_back_for_the_next_tick(
    db: Database, names: Names, publisher: ConfirmedPublisher, amqp_channel: AbstractChannel
) -> None:
    away = Broker(f"amqp://guest:guest@127.0.0.1:{free_port()}/", name="away")
    unplugged = ConfirmedPublisher(away, timeout=1)  # never connected
    clock = Clock(T0)
    failing = replica(db, unplugged, names, clock, "unplugged")
    assert await failing.tick() == []
    assert await db[MAINTENANCE_SCHEDULE].count_documents({}) == 0
    working = replica(db, publisher, names, clock, "working")
    assert sorted(await working.tick()) == ["alerts", "stale_locks"]

    clock.now = T0 + 60
    assert await failing.tick() == []
    doc = await db[MAINTENANCE_SCHEDULE].find_one({"_id": "stale_locks"})
    assert doc is not None
    assert doc["period"] == period_start(T0, 60)  # handed back: still the previous period
    assert await working.tick() == ["stale_locks"]
    assert len(await drain(amqp_channel, names.maintenance_queue)) == 3
    await away.close()


async def test_two_whole_services_publish_and_run_each_period_once(
    amqp_url: str,
    names: Names,
    mongo_url: str,
    mongo_db_name: str,
    db: Database,
    amqp_channel: AbstractChannel,
) -> None:
    values = settings_values(amqp_url, names, mongo_url, mongo_db_name)
    others = ("retention", "stuck_sends", "channel_health", "dead_letters", "alerts")
    settings = MaintenanceSettings.model_validate(
        values
        | {
            "maintenance_schedule": ",".join(["stale_locks=1s", *(f"{t}=off" for t in others)]),
            "maintenance_tick_seconds": 0.05,
        }
    )
    apps = [create_app(settings), create_app(settings)]
    with capture_logs() as logs:
        async with TestClient(TestServer(apps[0])), TestClient(TestServer(apps[1])):

            async def three_runs() -> bool:
                return bool(sum(e["event"] == "maintenance.task_finished" for e in logs) >= 3)

            await wait_until(three_runs, "three runs of stale_locks", timeout=20)
    published = [e["period"] for e in logs if e["event"] == "maintenance.published"]
    assert len(set(published)) == len(published) >= 3, published  # never one period twice
    ran = sum(
        app[METRICS_REGISTRY].get_sample_value(
            "maintenance_task_runs_total", {"task": "stale_locks", "result": result}
        )
        or 0
        for app in apps
        for result in ("ok", "skipped", "failed", "unreachable")
    )
    # Every message was run once, by whichever replica got it, or waits in the queue still
    # (published just before the services stopped).
    left = await drain(amqp_channel, names.maintenance_queue)
    assert ran + len(left) == len(published)
    by_replica = [
        app[METRICS_REGISTRY].get_sample_value(
            "maintenance_schedule_published_total", {"task": "stale_locks"}
        )
        for app in apps
    ]
    assert sum(v or 0 for v in by_replica) == len(published)


async def test_closing_ends_the_ticking_even_when_the_driver_swallows_the_cancellation(
    db: Database, names: Names, publisher: ConfirmedPublisher
) -> None:
    # A cancellation can be lost inside a store call (Python 3.11's wait_for swallows one
    # that arrives as its awaitable completes) or come out as a store error; the loop logs
    # store errors and goes on, so closing must end it by itself. Here the refresh turns
    # its cancellation into AutoReconnect.
    calls = 0

    async def refresh() -> None:
        nonlocal calls
        calls += 1
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            raise AutoReconnect("operation cancelled") from None

    ticking = replica(db, publisher, names, Clock(T0), "a")
    ticking.start(0.01, also=refresh)

    async def ticked_twice() -> bool:
        return calls >= 2

    await wait_until(ticked_twice, "the schedule ticking", timeout=5)
    closing = asyncio.create_task(ticking.close())
    done, _ = await asyncio.wait({closing}, timeout=3)  # no cancellation of its own on timeout
    stuck = closing not in done
    while not closing.done():  # let a stuck loop go, so the failure does not leak it
        closing.cancel()
        await asyncio.sleep(0.02)
    assert not stuck, "close() did not end the schedule's loop"
