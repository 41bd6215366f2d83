"""The sender's consumers: one per number, on that number's single-active-consumer queue.

Every inbox-api replica subscribes to every number's queue; RabbitMQ delivers each queue to
one of them at a time (the others wait as standbys and take over when it goes away), so a
number is paced by one token bucket in the whole deployment (``inbox_api.pacing``). Numbers
are found in the ``channels`` collection at start and every ``refresh_seconds`` after, so a
channel connected on any replica gets its senders everywhere within that time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

from aiohttp import web

from inbox_common.broker.connection import BROKER, NAMES
from inbox_common.broker.consumer import (
    Consumer,
    Handler,
    RetryPolicy,
    consumer_metrics,
    dependencies_ready,
)
from inbox_common.broker.publisher import PUBLISHER
from inbox_common.broker.topology import number_sends
from inbox_common.health import HEALTH_CHECKS, CheckResult, HealthCheck, Status
from inbox_common.logging import get_logger
from inbox_common.service import CleanupCtx
from inbox_common.store.client import DATABASE
from inbox_common.store.collections import CHANNELS

log = get_logger(__name__)

REFRESH_SECONDS = 5.0
STOP_SECONDS = 5.0  # a refresh under way finishes within this, or is cancelled


class NumberSenders:
    def __init__(
        self,
        app: web.Application,
        handler: Handler,
        *,
        prefetch: int,
        retry: RetryPolicy,
        depends_on: Sequence[str],
        refresh_seconds: float,
    ) -> None:
        self._app = app
        self._handler = handler
        self._prefetch = prefetch
        self._retry = retry
        self._ready = dependencies_ready(app, depends_on)
        self._refresh_seconds = refresh_seconds
        self._consumers: dict[str, Consumer] = {}
        self._loop: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        self._loop = asyncio.create_task(self._keep_up(), name="number-senders")

    async def stop(self) -> None:
        # The loop is asked to end and only cancelled if it does not: a store call cancelled
        # while its connection opens can leave that socket open, and a cancellation landing
        # in aio-pika while a channel opens can be swallowed (the loop would then subscribe
        # again and the shutdown wait for ever).
        self._stopping.set()
        if self._loop is not None:
            _, running = await asyncio.wait([self._loop], timeout=STOP_SECONDS)
            if running:
                self._loop.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._loop
        await asyncio.gather(*(c.stop() for c in self._consumers.values()))

    async def _keep_up(self) -> None:
        broker = self._app[BROKER]
        while not self._stopping.is_set():
            try:
                await broker.connection.ready()
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store or the broker is away: next round
                log.warning("senders.refresh_failed", error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._refresh_seconds)

    async def refresh(self) -> None:
        """Subscribe to the queue of every number not subscribed yet."""
        numbers = await self._app[DATABASE][CHANNELS].distinct("phone_number_id")
        for number in sorted(set(numbers) - set(self._consumers)):
            if self._stopping.is_set():
                return
            await self._subscribe(number)

    async def _subscribe(self, phone_number_id: str) -> None:
        app = self._app
        broker, names = app[BROKER], app[NAMES]
        spec = number_sends(phone_number_id)(names)
        await broker.declare_once(spec)
        assert spec.consumed is not None
        consumer = Consumer(
            broker,
            spec.consumed,
            self._handler,
            dead_letter_exchange=names.dead_letter_exchange,
            publisher=app[PUBLISHER],
            metrics=consumer_metrics(app),
            prefetch=self._prefetch,
            retry=self._retry,
            retry_exchange=names.retry_exchange,
            ready=self._ready,
        )
        await consumer.start()
        self._consumers[phone_number_id] = consumer
        log.info("senders.subscribed", phone_number_id=phone_number_id, queue=spec.consumed)

    async def probe(self) -> CheckResult:
        """Down while the refresh loop is dead; otherwise the worst of the numbers' consumers."""
        if self._loop is None or self._loop.done():
            return CheckResult(status=Status.DOWN, detail="the number senders are not running")
        worst = CheckResult(status=Status.OK, detail=f"{len(self._consumers)} number(s)")
        for number, consumer in self._consumers.items():
            result = await consumer.probe()
            if result.status is Status.DOWN:
                return CheckResult(status=Status.DOWN, detail=f"{number}: {result.detail}")
            if result.status is Status.DEGRADED and worst.status is Status.OK:
                worst = CheckResult(status=Status.DEGRADED, detail=f"{number}: {result.detail}")
        return worst


def number_senders_ctx(
    handler: Callable[[web.Application], Handler],
    *,
    prefetch: int,
    retry: RetryPolicy,
    depends_on: Sequence[str] = (),
    refresh_seconds: float = REFRESH_SECONDS,
) -> CleanupCtx:
    """The senders of every number, under the ``number_senders`` health check. Needs the
    store, the broker, the publisher and what ``handler`` reads before it."""

    async def senders(app: web.Application) -> AsyncIterator[None]:
        running = NumberSenders(
            app,
            handler(app),
            prefetch=prefetch,
            retry=retry,
            depends_on=depends_on,
            refresh_seconds=refresh_seconds,
        )
        app[HEALTH_CHECKS]["number_senders"] = HealthCheck(running.probe, critical=False)
        running.start()
        yield
        await running.stop()

    return senders
