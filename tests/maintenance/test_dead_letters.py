"""``dead_letters`` against the real broker: one P2 per dead-letter queue that holds messages,
resolved once it is empty; the broker away fails the run and leaves the alerts alone."""

from __future__ import annotations

import pytest
from aio_pika.abc import AbstractChannel

from inbox_common.alerts import AlertKind
from inbox_common.broker.connection import Broker
from inbox_common.broker.publisher import ConfirmedPublisher
from inbox_common.broker.topology import Names, declare, number_sends
from inbox_common.local.ports import free_port
from inbox_common.store.client import Database
from inbox_maintenance import metrics
from inbox_maintenance.service import Maintenance
from inbox_maintenance.settings import MaintenanceTaskSettings
from inbox_testkit.store import create_channel
from inbox_testkit.tenants import ACME_NUMBER, GLOBEX_NUMBER
from tests.maintenance.conftest import active, new_runner, run_ok

pytestmark = pytest.mark.integration


async def dead_letter(publisher: ConfirmedPublisher, queue: str, n: int = 1) -> None:
    for i in range(n):
        await publisher.publish("", queue, b'{"poison": true}', message_id=f"poison-{i}")


async def test_a_dead_letter_queue_holding_messages_raises_p2_and_empty_resolves_it(
    runner: Maintenance,
    db: Database,
    names: Names,
    publisher: ConfirmedPublisher,
    amqp_channel: AbstractChannel,
) -> None:
    dead = names.dead_letter_queue(names.webhooks_queue)
    await dead_letter(publisher, dead, 3)

    outcome = await run_ok(runner, "dead_letters")

    [alert] = await active(db, AlertKind.DEAD_LETTERS)
    assert (alert["severity"], alert["tenant"]) == ("P2", None)
    assert alert["evidence"] == {"queue": dead, "messages": 3, "source_queue": names.webhooks_queue}
    assert alert["title"].startswith(f"3 messages wait in {dead}")
    assert "1 holding 3 messages" in outcome.summary

    await (await amqp_channel.get_queue(dead)).purge()
    await run_ok(runner, "dead_letters")

    assert await active(db, AlertKind.DEAD_LETTERS) == []


async def test_every_dead_letter_queue_of_the_namespace_and_of_the_numbers_is_looked_at(
    runner: Maintenance,
    db: Database,
    names: Names,
    publisher: ConfirmedPublisher,
    amqp_channel: AbstractChannel,
) -> None:
    await create_channel(db, tenant="acme", phone_number_id=ACME_NUMBER)
    # globex's number never sent: its queues were never declared, which is no error.
    await create_channel(db, tenant="globex", phone_number_id=GLOBEX_NUMBER)
    await declare(amqp_channel, number_sends(ACME_NUMBER)(names))
    number_dead = names.dead_letter_queue(names.number_queue(ACME_NUMBER))
    await dead_letter(publisher, number_dead, 2)
    await dead_letter(publisher, names.dead_letter_queue(names.maintenance_queue))

    outcome = await run_ok(runner, "dead_letters")

    held = {a["evidence"]["queue"]: a["evidence"]["messages"] for a in await active(
        db, AlertKind.DEAD_LETTERS
    )}  # fmt: skip
    assert held == {number_dead: 2, names.dead_letter_queue(names.maintenance_queue): 1}
    # webhooks, outbound, retry due, maintenance, acme's and globex's number queues
    assert outcome.summary.startswith("6 dead-letter queues, 2 holding 3 messages")


async def test_the_broker_away_fails_the_run_and_leaves_the_alerts(
    task_settings: MaintenanceTaskSettings,
    runner: Maintenance,
    db: Database,
    names: Names,
    publisher: ConfirmedPublisher,
) -> None:
    await dead_letter(publisher, names.dead_letter_queue(names.outbound_queue))
    await run_ok(runner, "dead_letters")
    away = Broker(f"amqp://guest:guest@127.0.0.1:{free_port()}/", name="away")
    cut_off = new_runner(task_settings, db, names, broker=away)

    outcome = await cut_off.run("dead_letters", trigger="test")

    assert outcome.status == metrics.FAILED
    assert "needs RabbitMQ, which is not connected" in (outcome.error or "")
    assert len(await active(db, AlertKind.DEAD_LETTERS)) == 1
    lock = await db["job_locks"].find_one({"_id": "maintenance.dead_letters"})
    assert lock is not None
    assert lock["consecutiveFailures"] == 1
    assert "not connected" in lock["lastError"]
    await away.close()
