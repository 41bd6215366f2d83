"""Tasks run now, in the foreground: ``maintenance --once [TASK…]`` (cron) and ``inbox-ops
maintenance run [TASK…]``.

The daemon's runner and tasks (``inbox_maintenance.service``), not a copy: each task takes its
lock (a stale one too), runs, is recorded, and releases it; while a live replica runs a task,
that task is skipped and its holder named. Only the resources the chosen tasks need are
opened (the broker only for ``dead_letters``). Progress lines and a summary go to stdout, the
log to stderr.

Exit statuses: 0 every task ran clean; 1 a task failed; 2 bad settings; 3 the store or the
broker is unreachable; 4 a task was skipped because a live replica runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TypeVar

import aiohttp
from prometheus_client import CollectorRegistry

from inbox_common.broker.connection import Broker, BrokerUnavailableError
from inbox_common.broker.topology import Names
from inbox_common.logging import configure_logging
from inbox_common.settings import load_settings, redact_url
from inbox_common.store.client import create_client
from inbox_common.whatsapp.cloud_api import CloudApiClient
from inbox_maintenance import metrics
from inbox_maintenance.metrics import MaintenanceMetrics
from inbox_maintenance.service import (
    Maintenance,
    Resources,
    TaskOutcome,
    build_maintenance,
    build_tasks,
)
from inbox_maintenance.settings import TASKS, MaintenanceTaskSettings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNREACHABLE = 3
EXIT_SKIPPED = 4
CONNECT_SECONDS = 10.0

SettingsT = TypeVar("SettingsT", bound=MaintenanceTaskSettings)
Say = Callable[[str], None]


@contextlib.asynccontextmanager
async def standalone(
    settings: MaintenanceTaskSettings, tasks: Sequence[str], *, name: str
) -> AsyncIterator[Maintenance]:
    """A runner over connections of its own; raises :class:`BrokerUnavailableError` when a
    chosen task needs the broker and it does not answer in time."""
    client = create_client(
        settings.mongodb_url,
        app_name=name,
        timeout_ms=settings.mongodb_timeout_ms,
        socket_timeout_ms=settings.mongodb_socket_timeout_ms,
    )
    db = client[settings.mongodb_db]
    names = Names(settings.amqp_namespace, settings.amqp_delivery_limit)
    needs_broker = any(build_tasks(settings, Resources(db, names))[t].needs_broker for t in tasks)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(client.close)
        broker = None
        if needs_broker:
            broker = Broker(settings.rabbitmq_url, name=name)
            stack.push_async_callback(broker.close)
            broker.start()
            try:
                await broker.wait_connected(CONNECT_SECONDS)
            except BrokerUnavailableError:
                raise BrokerUnavailableError(
                    f"RabbitMQ at {redact_url(settings.rabbitmq_url)} did not answer within "
                    f"{CONNECT_SECONDS:g}s; check RABBITMQ_URL and that the broker is running"
                ) from None
        cloud_api = None
        if "channel_health" in tasks:
            cloud_api = await stack.enter_async_context(CloudApiClient.from_settings(settings))
        http = None
        if "alerts" in tasks and settings.health_urls:
            http = await stack.enter_async_context(aiohttp.ClientSession())
        resources = Resources(db, names, broker=broker, cloud_api=cloud_api, http=http)
        yield build_maintenance(settings, resources, MaintenanceMetrics(CollectorRegistry()))


async def run_tasks(
    settings: MaintenanceTaskSettings, tasks: Sequence[str], *, name: str, say: Say
) -> list[TaskOutcome]:
    """Run ``tasks`` one after the other, saying what each does; their outcomes."""
    outcomes = []
    async with standalone(settings, tasks, name=name) as runner:
        for task in tasks:
            say(f"{task}: running")

            def progress(line: str, task: str = task) -> None:
                say(f"{task}: {line}")

            outcome = await runner.run(task, progress=progress, trigger="once")
            say(outcome.line())
            outcomes.append(outcome)
            if outcome.status == metrics.UNREACHABLE:
                break  # the others would fail the same way
    return outcomes


def exit_status(outcomes: Sequence[TaskOutcome]) -> int:
    statuses = {outcome.status for outcome in outcomes}
    if metrics.UNREACHABLE in statuses:
        return EXIT_UNREACHABLE
    if metrics.FAILED in statuses:
        return EXIT_FAILED
    if metrics.SKIPPED in statuses:
        return EXIT_SKIPPED
    return EXIT_OK


def summary(outcomes: Sequence[TaskOutcome], seconds: float) -> str:
    counts = {status: sum(o.status == status for o in outcomes) for status in metrics.RESULTS}
    parts = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    return f"{len(outcomes)} tasks in {seconds:.2f}s: {parts or 'nothing run'}"


def main_once(
    tasks: Sequence[str],
    *,
    settings_type: type[SettingsT],
    prog: str,
    say: Say | None = None,
) -> int:
    """Run ``tasks`` (every task when empty) in the foreground; the exit status."""
    settings = load_settings(settings_type)
    configure_logging(settings.log_level, settings.log_format, stream=sys.stderr)
    chosen = list(dict.fromkeys(tasks)) or list(TASKS)

    def out(line: str) -> None:
        sys.stdout.write(f"{prog}: {line}\n")
        sys.stdout.flush()

    speak = say or out
    started = time.monotonic()
    try:
        outcomes = asyncio.run(run_tasks(settings, chosen, name=prog, say=speak))
    except BrokerUnavailableError as exc:
        sys.stderr.write(f"{prog}: {exc}\n")
        return EXIT_UNREACHABLE
    speak(summary(outcomes, time.monotonic() - started))
    unreachable = [o for o in outcomes if o.status == metrics.UNREACHABLE]
    if unreachable:
        sys.stderr.write(
            f"{prog}: MongoDB at {redact_url(settings.mongodb_url)} is unreachable; check "
            "MONGODB_URL and that the database is running\n"
        )
    return exit_status(outcomes)
