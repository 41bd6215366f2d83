"""The fault-scenario runner: one shape for every fault test.

A fault test starts the services, streams signed webhooks through webhook-ingest while its
fault happens, lets the system settle and counts what is lost, doubled or unexpected::

    async with fault_run(config, "consumer-kill") as run:
        await run.start(replicas=2)
        await run.send(text_items(800), rate=100.0, during=kill_replicas)
        verdict = await run.check()
        fault_report(verdict)
        run.assert_clean(verdict)

``during`` is the fault: a coroutine function that gets the :class:`Sender` (to wait for
progress with ``wait_started``) and runs while the stream flows; the services, the store and
the log of what was done are on the :class:`FaultRun` it closes over.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from inbox_common.broker.topology import Names
from inbox_common.store.client import Database, create_client
from inbox_testkit.faults.checker import (
    Item,
    Sender,
    Verdict,
    check,
    queue_depth,
    wait_quiet,
)
from inbox_testkit.faults.stack import Service, Stack, StackConfig, running_stack

Fault = Callable[[Sender], Awaitable[None]]


@dataclass
class FaultRun:
    """One fault test's stack, store, stream and log (see the module docstring)."""

    fault: str
    config: StackConfig
    stack: Stack
    db: Database
    items: list[Item] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    ingest: Service | None = None
    replicas: list[Service] = field(default_factory=list)
    sender: Sender | None = None

    @property
    def names(self) -> Names:
        return Names(self.config.namespace)

    async def start(
        self,
        *,
        replicas: int = 2,
        ingest_rabbitmq_url: str | None = None,
        api_rabbitmq_url: str | None = None,
        api_mongodb_url: str | None = None,
    ) -> None:
        """Start webhook-ingest and ``replicas`` inbox-api processes; wait until they consume."""
        self.ingest = self.stack.ingest(rabbitmq_url=ingest_rabbitmq_url)
        self.replicas = [
            self.stack.api(
                name=f"inbox-api-{chr(ord('a') + n)}",
                rabbitmq_url=api_rabbitmq_url,
                mongodb_url=api_mongodb_url,
            )
            for n in range(replicas)
        ]
        await self.stack.start()
        await self.wait_consuming()

    async def wait_consuming(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        for replica in self.replicas:
            await replica.wait_consuming(timeout=timeout)

    async def send(
        self, items: Sequence[Item], *, during: Fault | None = None, **options: Any
    ) -> Sender:
        """Post ``items`` (``options`` configure the :class:`Sender`: rate, concurrency...)
        while ``during`` runs; returns once every item got its 200 or gave up."""
        if self.ingest is None:
            raise RuntimeError("start() the services before sending")
        sender = Sender(self.ingest.base, **options)
        self.items.extend(items)
        sending = asyncio.create_task(sender.run(items))
        try:
            if during is not None:
                await during(sender)
        finally:
            await sending
        if self.sender is None:
            self.sender = sender
        else:
            self.sender.absorb(sender)
        return sender

    async def settle(
        self,
        *,
        timeout: float = 60.0,  # noqa: ASYNC109
        settle: float = 12.0,
        rabbitmq_url: str | None = None,
    ) -> None:
        """Wait until what was sent so far is stored and the queue is quiet (see
        :func:`~inbox_testkit.faults.checker.wait_quiet`)."""
        assert self.sender is not None, "nothing was sent"
        url = rabbitmq_url or self.config.rabbitmq_url
        async with queue_depth(url, self.names.webhooks_queue) as depth:
            await wait_quiet(
                self.db, self.items, self.sender, depth, timeout=timeout, settle=settle
            )

    async def check(
        self,
        *,
        timeout: float = 60.0,  # noqa: ASYNC109
        settle: float = 12.0,
        rabbitmq_url: str | None = None,
        dead: Sequence[Item] = (),
    ) -> Verdict:
        """Settle, then count lost, doubled and unexpected facts of everything sent."""
        await self.settle(timeout=timeout, settle=settle, rabbitmq_url=rabbitmq_url)
        assert self.sender is not None
        verdict = await check(self.db, self.fault, self.items, self.sender, dead=dead)
        verdict.notes["logging_errors"] = self.stack.logging_errors()
        return verdict

    def context(self) -> str:
        """What was done, what the sender saw and the services' last lines (for failures)."""
        summary = self.sender.summary() if self.sender is not None else "nothing sent"
        return f"{'; '.join(self.log)}\n{summary}\n{self.stack.tails()}"

    def assert_clean(self, verdict: Verdict, extra: str = "") -> None:
        assert verdict.clean, f"{verdict.explain()}\n{self.context()}\n{extra}"


@contextlib.asynccontextmanager
async def fault_run(config: StackConfig, fault: str) -> AsyncIterator[FaultRun]:
    """A :class:`FaultRun` whose services are stopped (and must stop cleanly) on exit."""
    client = create_client(config.mongodb_url, app_name="faults-check", timeout_ms=10_000)
    try:
        async with running_stack(config) as stack:
            yield FaultRun(fault, config, stack, client[config.mongo_db])
    finally:
        await client.close()
