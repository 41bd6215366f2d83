"""A robust consumer: manual ack after the handler's write, bounded prefetch, poison to DLQ.

The handler raises :class:`~inbox_common.errors.PermanentError` for a message that can never
succeed (it is dead-lettered with the reason, then acked) and
:class:`~inbox_common.errors.TransientError` when a dependency is down (retried in process
with backoff while the message stays unacked; after ``max_attempts`` it is returned to the
queue). Anything else is a bug: logged with its traceback, counted in
``consumer_crashes_total``, shown in the consumer's health, and the message goes back to the
queue (never dead-lettered as bad input by us; past the queue's delivery limit RabbitMQ
parks it in the dead-letter queue, from where it is replayed after the fix). Nothing is
acked before the handler returned, so a crash anywhere means redelivery, never loss.

:func:`consumer_ctx` is the resource of a service: one consumer of one piece of the
topology, declared by the consumer itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from inbox_common.broker.connection import BROKER, NAMES, Broker
from inbox_common.broker.publisher import PUBLISHER, ConfirmedPublisher, PublishFailedError
from inbox_common.broker.topology import Piece, declare
from inbox_common.errors import PermanentError, TransientError
from inbox_common.health import HEALTH_CHECKS, CheckResult, HealthCheck, Status
from inbox_common.logging import get_logger
from inbox_common.metrics import LATENCY_BUCKETS, METRICS_REGISTRY
from inbox_common.service import CleanupCtx

log = get_logger(__name__)

Handler = Callable[[AbstractIncomingMessage], Awaitable[None]]
HandlerFactory = Callable[[web.Application], Handler]

REASON_HEADER = "x-inbox-dead-letter-reason"
QUEUE_HEADER = "x-inbox-source-queue"


class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.outcomes = Counter(
            "consumer_messages_total",
            "Messages settled by the consumer",
            ["queue", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "consumer_handle_seconds",
            "Time from delivery to settlement",
            ["queue"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.crashes = Counter(
            "consumer_crashes_total",
            "Handler bugs (exceptions outside the error tree), by exception type",
            ["queue", "exception"],
            registry=registry,
        )


CONSUMER_METRICS = web.AppKey("consumer_metrics", ConsumerMetrics)

# A crash within this many seconds keeps the consumer's health degraded.
CRASH_MEMORY_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """In-process retries of transient failures before the message goes back to the queue."""

    max_attempts: int = 8
    initial_wait: float = 0.2
    max_wait: float = 10.0


class Consumer:
    """Consumes ``queue`` of ``broker`` with ``handler``; see the module docstring."""

    def __init__(
        self,
        broker: Broker,
        queue: str,
        handler: Handler,
        *,
        dead_letter_exchange: str,
        dead_letters: ConfirmedPublisher,
        metrics: ConsumerMetrics,
        prefetch: int = 64,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._broker = broker
        self.queue_name = queue
        self._handler = handler
        self._dlx = dead_letter_exchange
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._prefetch = prefetch
        self._retry = retry or RetryPolicy()
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._last_crash: tuple[float, str] | None = None

    async def start(self) -> None:
        """Open a channel with bounded prefetch and start consuming (waits for the broker)."""
        self._channel = await self._broker.connection.channel()
        await self._channel.set_qos(prefetch_count=self._prefetch)
        self._queue = await self._channel.get_queue(self.queue_name, ensure=True)
        self._tag = await self._queue.consume(self._on_message)
        log.info("consumer.started", queue=self.queue_name, prefetch=self._prefetch)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking messages, let in-flight ones settle, close the channel."""
        if self._queue is not None and self._tag is not None and self._broker.connected:
            try:
                await self._queue.cancel(self._tag, timeout=2)
            except Exception as exc:  # the channel may already be gone; nothing to settle
                log.warning("consumer.cancel_failed", error=str(exc))
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=grace)
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            await self.process(message)
        finally:
            if task is not None:
                self._inflight.discard(task)

    async def process(self, message: AbstractIncomingMessage) -> str:
        """Run the handler on ``message`` and settle it; returns the outcome's name."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome = await self._settle(message)
        self._metrics.outcomes.labels(self.queue_name, outcome).inc()
        self._metrics.duration.labels(self.queue_name).observe(loop.time() - started)
        return outcome

    async def _settle(self, message: AbstractIncomingMessage) -> str:
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(TransientError),
                stop=stop_after_attempt(self._retry.max_attempts),
                wait=wait_exponential(
                    multiplier=self._retry.initial_wait, max=self._retry.max_wait
                ),
                reraise=True,
            ):
                with attempt:
                    await self._handler(message)
        except PermanentError as exc:
            return await self._dead_letter(message, exc.reason, str(exc))
        except TransientError as exc:
            log.warning(
                "consumer.requeue", queue=self.queue_name, reason=exc.reason, error=str(exc)
            )
            await message.nack(requeue=True)
            return "requeued"
        except Exception as exc:
            # A bug, not the message's fault as far as we know: loud, and requeued.
            name = type(exc).__name__[:60]
            log.exception("consumer.handler_crashed", queue=self.queue_name, exception=name)
            self._metrics.crashes.labels(self.queue_name, name).inc()
            self._last_crash = (time.monotonic(), f"{name}: {exc}"[:200])
            await message.nack(requeue=True)
            return "crashed"
        await message.ack()
        return "acked"

    async def _dead_letter(self, message: AbstractIncomingMessage, reason: str, text: str) -> str:
        headers = {k: _republishable(v) for k, v in (message.headers or {}).items()}
        headers[REASON_HEADER] = f"{reason}: {text}"[:1000]
        headers[QUEUE_HEADER] = self.queue_name
        try:
            await self._dead_letters.publish(
                self._dlx,
                self.queue_name,
                message.body,
                message_id=message.message_id,
                headers=headers,
                content_type=message.content_type,
                timestamp=message.timestamp,
            )
        except PublishFailedError as exc:
            log.warning("consumer.dead_letter_failed", queue=self.queue_name, error=str(exc))
            await message.nack(requeue=True)
            return "requeued"
        log.warning("consumer.dead_lettered", queue=self.queue_name, reason=reason, error=text)
        await message.ack()
        return "dead_lettered"

    async def probe(self) -> CheckResult:
        """Health check: consuming or not."""
        if self._channel is None or self._tag is None:
            return CheckResult(status=Status.DOWN, detail=f"not consuming {self.queue_name} yet")
        if self._channel.is_closed or not self._broker.connected:
            return CheckResult(status=Status.DOWN, detail=f"consumer of {self.queue_name} is down")
        if self._last_crash is not None:
            at, what = self._last_crash
            ago = time.monotonic() - at
            if ago < CRASH_MEMORY_SECONDS:
                return CheckResult(
                    status=Status.DEGRADED,
                    detail=f"the handler crashed {ago:.0f}s ago ({what}); see the error log",
                )
        return CheckResult(status=Status.OK)


def _republishable(value: Any) -> Any:
    """A header value as pamqp will encode it again: it delivers string headers as bytes
    (they may not even be UTF-8) but refuses to send bytes."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [_republishable(v) for v in value]
    if isinstance(value, dict):
        return {k: _republishable(v) for k, v in value.items()}
    return value


def consumer_ctx(
    piece: Piece,
    handler: HandlerFactory,
    *,
    prefetch: int,
    critical: bool = False,
    retry: RetryPolicy | None = None,
) -> CleanupCtx:
    """The consumer resource of ``piece``'s queue: declared, then consumed with the handler
    ``handler(app)`` builds; poison goes out through the service's :data:`PUBLISHER`.

    Needs :func:`broker_ctx` and :func:`publisher_ctx` (for dead letters) before it, and
    whatever the handler factory reads from the app. Its health check is
    ``<label>_consumer``.
    """

    async def consumer(app: web.Application) -> AsyncIterator[None]:
        broker, names = app[BROKER], app[NAMES]
        spec = piece(names)
        if spec.consumed is None:
            raise ValueError(f"the {spec.label or 'given'} piece has no queue to consume")
        if PUBLISHER not in app:
            raise RuntimeError("consumer_ctx needs publisher_ctx before it (dead letters)")
        if CONSUMER_METRICS not in app:
            app[CONSUMER_METRICS] = ConsumerMetrics(app[METRICS_REGISTRY])
        running = Consumer(
            broker,
            spec.consumed,
            handler(app),
            dead_letter_exchange=names.dead_letter_exchange,
            dead_letters=app[PUBLISHER],
            metrics=app[CONSUMER_METRICS],
            prefetch=prefetch,
            retry=retry,
        )
        app[HEALTH_CHECKS][f"{spec.label}_consumer"] = HealthCheck(running.probe, critical=critical)

        async def setup() -> None:
            await declare(await broker.connection.channel(), spec)
            await running.start()

        broker.when_connected(setup, what=f"{spec.label} consumer")
        yield
        await running.stop()

    return consumer


__all__ = [
    "CONSUMER_METRICS",
    "Consumer",
    "ConsumerMetrics",
    "Handler",
    "HandlerFactory",
    "RetryPolicy",
    "consumer_ctx",
]
