"""One pass in the foreground: ``retry-worker --once`` (cron) and ``inbox-ops job
campaign-retry``.

The same worker and the same pass as the daemon's (``inbox_retry.worker``), over resources of
its own: a broker connection that declares what the daemon's publisher declares, a confirm
channel, a store client. It takes the lock (a stale one too: a crashed daemon's), runs one
pass, and releases it; while a live worker holds the lock it does nothing and says who.

Exit statuses: 0 the pass ran clean; 1 it failed; 2 bad settings; 3 the store or the broker
is unreachable; 4 a live worker holds the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

from prometheus_client import CollectorRegistry
from pymongo.errors import PyMongoError

from inbox_common.broker import topology
from inbox_common.broker.connection import Broker, BrokerUnavailableError
from inbox_common.broker.publisher import ConfirmedPublisher
from inbox_common.broker.topology import Names, declare
from inbox_common.jobs import LockState
from inbox_common.logging import configure_logging, get_logger
from inbox_common.settings import load_settings, redact_url
from inbox_common.store.client import create_client
from inbox_retry.settings import RetryJobSettings
from inbox_retry.worker import OnceResult, Progress, RetryWorker, build_worker

log = get_logger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNREACHABLE = 3
EXIT_HELD = 4
CONNECT_SECONDS = 10.0


@contextlib.asynccontextmanager
async def standalone(settings: RetryJobSettings, *, name: str) -> AsyncIterator[RetryWorker]:
    """A worker over its own connections (no daemon loop); raises
    :class:`BrokerUnavailableError` when the broker does not answer in time."""
    broker = Broker(settings.rabbitmq_url, name=name)
    names = Names(settings.amqp_namespace, settings.amqp_delivery_limit)
    publisher = ConfirmedPublisher(broker, timeout=settings.amqp_publish_timeout)

    async def setup() -> None:
        channel = await broker.connection.channel()
        await declare(channel, topology.retries(names) + topology.outbound(names))
        await channel.close()
        await publisher.start()

    broker.when_connected(setup, what="retry pass")
    broker.start()
    client = create_client(
        settings.mongodb_url,
        app_name=name,
        timeout_ms=settings.mongodb_timeout_ms,
        socket_timeout_ms=settings.mongodb_socket_timeout_ms,
    )
    worker: RetryWorker | None = None
    try:
        try:
            await asyncio.wait_for(broker.ready.wait(), CONNECT_SECONDS)
        except TimeoutError:
            raise BrokerUnavailableError(
                f"RabbitMQ at {redact_url(settings.rabbitmq_url)} did not answer within "
                f"{CONNECT_SECONDS:g}s; check RABBITMQ_URL and that the broker is running"
            ) from None
        worker = build_worker(
            settings,
            db=client[settings.mongodb_db],
            broker=broker,
            publisher=publisher,
            names=names,
            registry=CollectorRegistry(),
        )
        yield worker
    finally:
        if worker is not None:
            await worker.close()
        await client.close()
        await broker.close()


async def one_pass(
    settings: RetryJobSettings, *, name: str, progress: Progress | None = None
) -> OnceResult:
    """Take the lock, run one pass, release it (see the module docstring)."""
    async with standalone(settings, name=name) as worker:
        return await worker.once(progress)


def exit_status(outcome: OnceResult) -> int:
    if outcome.result is None:
        return EXIT_HELD
    return EXIT_OK if outcome.result.ok else EXIT_FAILED


def describe_holder(state: LockState) -> str:
    """Who holds the lock and since when, for an operator."""
    since = state.locked_at.isoformat() if state.locked_at else "an unknown time"
    age = state.heartbeat_age
    beat = f"{age:.1f}s ago" if age is not None else "never"
    return (
        f"the {state.job} lock is held by {state.locked_by} since {since} (last heartbeat "
        f"{beat}; a lock is taken over once its heartbeat is "
        f"{state.stale_after.total_seconds():g}s old)"
    )


def unreachable(settings: RetryJobSettings, exc: Exception) -> str:
    if isinstance(exc, BrokerUnavailableError):
        return str(exc)
    return (
        f"MongoDB at {redact_url(settings.mongodb_url)} failed ({type(exc).__name__}); check "
        "MONGODB_URL and that the database is reachable"
    )


def main_once() -> int:
    """``retry-worker --once``: for cron. Logs as the daemon does; a line on stderr when it
    cannot run."""
    settings = load_settings(RetryJobSettings)
    configure_logging(settings.log_level, settings.log_format)
    try:
        outcome = asyncio.run(one_pass(settings, name="retry-worker --once"))
    except (BrokerUnavailableError, PyMongoError) as exc:
        sys.stderr.write(f"retry-worker --once: {unreachable(settings, exc)}\n")
        return EXIT_UNREACHABLE
    if outcome.result is None:
        assert outcome.holder is not None
        sys.stderr.write(f"retry-worker --once: {describe_holder(outcome.holder)}; not run\n")
        return EXIT_HELD
    log.info(
        "retry.once_finished",
        ok=outcome.result.ok,
        summary=outcome.result.line(),
        error=outcome.result.error,
        taken_from=outcome.taken_from,
    )
    return exit_status(outcome)
