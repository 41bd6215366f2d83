"""The job lock as the workers use it: two workers never pass at once, a standby daemon waits,
and a crashed daemon's stale lock is taken over by the next worker."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest
from aio_pika.abc import AbstractChannel
from prometheus_client import CollectorRegistry

from inbox_common.broker.connection import Broker
from inbox_common.broker.publisher import ConfirmedPublisher
from inbox_common.broker.topology import Names
from inbox_common.local.ports import free_port
from inbox_common.local.processes import ServiceProcess, wait_http
from inbox_common.store.client import Database
from inbox_common.store.collections import JOB_LOCKS
from inbox_retry.settings import RetryJobSettings
from inbox_retry.worker import JOB, PassResult
from inbox_testkit.polling import wait_until
from tests.retry_worker.conftest import (
    JOBS_TOKEN,
    depth,
    drain,
    logs_with_context,
    new_worker,
    process_env,
    publish_due,
)

pytestmark = pytest.mark.integration


async def holder(db: Database) -> str | None:
    doc = await db[JOB_LOCKS].find_one({"_id": JOB})
    return None if doc is None else doc.get("lockedBy")


async def test_two_one_shot_runs_at_once_never_both_pass(
    job_settings: RetryJobSettings, db: Database, broker: Broker, publisher: ConfirmedPublisher,
    names: Names, amqp_channel: AbstractChannel,
) -> None:  # fmt: skip
    seen: list[int] = []

    def progress(result: PassResult) -> None:
        seen.append(result.seen)

    for round_ in range(5):
        for n in range(10):
            await publish_due(publisher, names, {"kind": "read"}, message_id=f"r{round_}-{n}")
        workers = [new_worker(job_settings, db, broker, publisher, names) for _ in range(2)]

        # Both ask for the lock at the same moment (neither can release before the other
        # asked): the store's compare-and-set grants it to exactly one.
        grants = await asyncio.gather(*(w.lock.acquire() for w in workers))
        assert sum(g is not None for g in grants) == 1, f"round {round_}: both got the lock"
        winner, loser = workers if grants[0] is not None else workers[::-1]
        # A one-shot run while the other holds it: refused, naming the holder; nothing taken.
        refused = await loser.once()
        assert refused.result is None
        assert refused.holder is not None
        assert refused.holder.locked_by == winner.lock.owner
        seen.clear()
        passed = await winner.run_pass(progress)
        await winner.lock.release()

        assert (passed.seen, len(seen)) == (10, 10)  # the winner saw every job
        back = await drain(amqp_channel, names.outbound_queue)
        assert sorted(m.message_id or "" for m in back) == sorted(
            f"r{round_}-{n}" for n in range(10)
        )
        assert await holder(db) is None  # released after the pass
        for worker in workers:
            await worker.close()


async def test_a_standby_daemon_waits_and_takes_over_when_the_holder_stops(
    job_settings: RetryJobSettings, db: Database, broker: Broker, publisher: ConfirmedPublisher,
    names: Names, amqp_channel: AbstractChannel,
) -> None:  # fmt: skip
    registries = {"a": CollectorRegistry(), "b": CollectorRegistry()}
    a = new_worker(
        job_settings, db, broker, publisher, names, registry=registries["a"], interval=0.1
    )
    b = new_worker(
        job_settings, db, broker, publisher, names, registry=registries["b"], interval=0.1
    )
    a.start()

    async def a_holds() -> bool:
        return await holder(db) == a.lock.owner

    await wait_until(a_holds, "the first daemon to take the lock")
    b.start()
    for n in range(5):
        await publish_due(publisher, names, {"kind": "read"}, message_id=f"j{n}")
        await asyncio.sleep(0.1)

    async def all_back() -> bool:
        return await depth(amqp_channel, names.outbound_queue) == 5

    await wait_until(all_back, "the five jobs back in the outbound queue")
    await asyncio.sleep(0.5)  # many more loops of both daemons
    assert await holder(db) == a.lock.owner
    assert registries["b"].get_sample_value("retry_passes_total", {"result": "ok"}) == 0
    assert (registries["a"].get_sample_value("retry_passes_total", {"result": "ok"}) or 0) > 1

    with logs_with_context() as logs:
        await a.close()  # releases the lock: b takes it at its next try

        async def b_holds() -> bool:
            return await holder(db) == b.lock.owner

        await wait_until(b_holds, "the standby daemon to take the released lock", timeout=3)
    taken = [e for e in logs if e["event"] == "job.lock_acquired"]
    assert [e["worker"] for e in taken] == [b.lock.owner]
    assert taken[0]["taken_from"] is None  # released, not stale
    await publish_due(publisher, names, {"kind": "read"}, message_id="after")

    async def six_back() -> bool:
        return await depth(amqp_channel, names.outbound_queue) == 6

    await wait_until(six_back, "the standby daemon to pass")
    await b.close()


@pytest.mark.slow
async def test_a_killed_daemons_stale_lock_is_taken_over_after_the_bound(
    job_settings: RetryJobSettings, db: Database, broker: Broker, publisher: ConfirmedPublisher,
    names: Names,
) -> None:  # fmt: skip
    port = free_port()
    env = process_env(job_settings) | {
        "JOBS_API_TOKEN": JOBS_TOKEN,
        "RETRY_WORKER_PORT": str(port),
        "RETRY_WORKER_STALE_SECONDS": "2",
        "RETRY_WORKER_INTERVAL_SECONDS": "0.2",
    }
    daemon = ServiceProcess(
        "retry-worker", [sys.executable, "-m", "inbox_retry"], env={**os.environ, **env},
        sink=lambda _name, _line: None,
    )  # fmt: skip
    await daemon.start()
    try:
        await wait_http(f"http://127.0.0.1:{port}/api/health", timeout=30, process=daemon)

        assert daemon.process is not None
        pid = str(daemon.process.pid)

        async def process_holds() -> bool:
            return (await holder(db) or "").split(":")[1:2] == [pid]

        await wait_until(process_holds, "the daemon process to take the lock", timeout=10)
        dead = await holder(db)
        daemon.kill()  # SIGKILL: no release, no last heartbeat
        killed_at = time.monotonic()
        await daemon.wait()

        settings = job_settings.model_copy(update={"retry_worker_stale_seconds": 2.0})
        successor = new_worker(settings, db, broker, publisher, names, interval=0.1)
        with logs_with_context() as logs:
            successor.start()

            async def successor_holds() -> bool:
                return await holder(db) == successor.lock.owner

            await wait_until(successor_holds, "the successor to take the stale lock", timeout=8)
        waited = time.monotonic() - killed_at
        assert waited > 1.0  # not before the heartbeat was 2 s old (the kill came up to 0.2 s
        # after the daemon's last renewal)
        [taken] = [e for e in logs if e["event"] == "job.lock_acquired"]
        assert taken["taken_from"] == dead
        await successor.close()
    finally:
        if daemon.running:
            daemon.kill()
            await daemon.wait()
