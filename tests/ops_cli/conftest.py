"""Fixtures of the runbook commands' tests: stand-ins for the services' HTTP surface
(``/api/health`` answers as each service gives them), the environment of a deployment over
the test's store, broker and namespace, a platform on which every readiness check passes,
and ``inbox-ops`` run as a process while the test's loop keeps serving."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from aiohttp import web
from aiohttp.test_utils import TestServer

from inbox_common.broker.topology import Names, declare, number_sends
from inbox_common.contracts.delivery import WebhookDelivery
from inbox_common.jobs import JobLock
from inbox_common.local.ports import free_port
from inbox_common.store.client import Database, Document
from inbox_retry.worker import JOB
from inbox_testkit.store import record_webhook
from inbox_testkit.tenants import ACME_NUMBER

SERVICES = ("webhook-ingest", "inbox-api", "retry-worker", "maintenance")
# The secrets of the test's deployment: distinctive, so a test can look for them.
WEBHOOK_SECRET = "whsec-test-6d1f0c2b9a"
VERIFY_TOKEN = "verify-test-91be4c07"
JOBS_TOKEN = "jobs-test-3a7e52d8c1"
RETRY_STALE_SECONDS = 30.0


def report(status: str, **checks: tuple[str, str | None]) -> dict[str, Any]:
    """A health report as ``inbox_common.health`` serves one."""
    return {
        "status": status,
        "service": "stand-in",
        "version": "0.1.0",
        "checks": {
            name: {"status": s, **({"detail": d} if d else {}), "latency_ms": 1.0}
            for name, (s, d) in checks.items()
        },
    }


OK = report("ok", mongodb=("ok", None), rabbitmq=("ok", None))


@dataclass
class HealthStandIn:
    """One service's ``/api/health``: answers ``body`` with ``http_status``; while ``hold``
    is set, it answers only once ``release`` is set (a hung service)."""

    body: Any = field(default_factory=lambda: OK)
    http_status: int = 200
    hold: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)
    server: TestServer | None = None

    async def handler(self, _: web.Request) -> web.StreamResponse:
        if self.hold:
            await self.release.wait()
        if isinstance(self.body, str):
            return web.Response(text=self.body, status=self.http_status, content_type="text/html")
        return web.json_response(self.body, status=self.http_status)

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")


@pytest.fixture
async def stand_ins() -> AsyncIterator[dict[str, HealthStandIn]]:
    """A healthy stand-in per service, served; change one to make it sick."""
    served = {service: HealthStandIn() for service in SERVICES}
    for stand_in in served.values():
        app = web.Application()
        app.router.add_get("/api/health", stand_in.handler)
        stand_in.server = TestServer(app)
        await stand_in.server.start_server()
    yield served
    for stand_in in served.values():
        stand_in.release.set()
        assert stand_in.server is not None
        await stand_in.server.close()


def targets(served: dict[str, HealthStandIn]) -> dict[str, str]:
    return {service: stand_in.url for service, stand_in in served.items()}


def nowhere() -> str:
    """An http:// URL nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"


def delivery(body: bytes, *, age: timedelta = timedelta(0)) -> WebhookDelivery:
    """A webhook body as webhook-ingest hands it on, received ``age`` ago."""
    return WebhookDelivery(
        sha256=hashlib.sha256(body).hexdigest(),
        request_id=f"req-{hashlib.sha256(body).hexdigest()[:8]}",
        received_at=datetime.now(UTC) - age,
        body=body,
    )


# --- a deployment's environment, and a platform where every check passes ---------------------


def deployment_env(
    amqp_url: str, names: Names, mongo_url: str, mongo_db_name: str
) -> dict[str, str]:
    """What the operator's shell holds on a deployment over the test's backends."""
    return {
        "MONGODB_URL": mongo_url,
        "MONGODB_DB": mongo_db_name,
        "MONGODB_TIMEOUT_MS": "1500",
        "RABBITMQ_URL": amqp_url,
        "AMQP_NAMESPACE": names.namespace,
        "WHATSAPP_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "WHATSAPP_WEBHOOK_VERIFY_TOKEN": VERIFY_TOKEN,
        "JOBS_API_TOKEN": JOBS_TOKEN,
        "CHANNEL_TOKEN_KEYS": os.environ["CHANNEL_TOKEN_KEYS"],
        "RETRY_WORKER_STALE_SECONDS": str(RETRY_STALE_SECONDS),
        "READINESS_BROKER_TIMEOUT_SECONDS": "3",
    }


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, amqp_url: str, names: Names, mongo_url: str, mongo_db_name: str
) -> dict[str, str]:
    """The deployment's environment, in this process's environment for the test."""
    values = deployment_env(amqp_url, names, mongo_url, mongo_db_name)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@dataclass
class Platform:
    """The test's platform with every readiness check passing: the topology declared, a
    consumer on each work queue (as the services attach theirs), acme's channel, the
    retry-worker's lock held by a live worker, a processed webhook."""

    db: Database
    names: Names
    channel: Document
    lock: JobLock
    consumers: dict[str, tuple[AbstractQueue, str]]

    async def stop_consuming(self, queue: str) -> None:
        """The consumer of ``queue`` goes away (its service stopped)."""
        consumed, tag = self.consumers.pop(queue)
        await consumed.cancel(tag)


async def _hold(message: AbstractIncomingMessage) -> None:
    """A consumer that keeps what it gets unacknowledged (back to the queue when it goes)."""


@pytest.fixture
async def platform(
    env: dict[str, str],
    db: Database,
    names: Names,
    amqp_channel: AbstractChannel,
    channel: Document,
) -> Platform:
    number = number_sends(ACME_NUMBER)(names)
    await declare(amqp_channel, number)
    consumers = {}
    for queue in (names.webhooks_queue, names.outbound_queue, names.maintenance_queue):
        consumers[queue] = await amqp_channel.get_queue(queue)
    assert number.consumed is not None
    consumers[number.consumed] = await amqp_channel.get_queue(number.consumed)
    tags = {name: (q, await q.consume(_hold)) for name, q in consumers.items()}
    lock = JobLock(
        db, JOB, owner="retry-worker-test", stale_after=timedelta(seconds=RETRY_STALE_SECONDS)
    )
    assert await lock.acquire() is not None
    await record_webhook(db, delivery(b'{"ok":1}'), status="processed", phone_number_ids=[])
    return Platform(db, names, channel, lock, tags)


# --- inbox-ops as a process ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str


async def inbox_ops(*args: str, env: dict[str, str], timeout: float = 60) -> Finished:  # noqa: ASYNC109
    """``python -m inbox_ops ARGS`` with ``env`` over this environment; the loop keeps
    serving (the stand-ins answer) while it runs."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "inbox_ops",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return Finished(process.returncode, out.decode(), err.decode())
