"""A robust consumer: manual ack after the handler's write, bounded prefetch, and one fate per
error of the tree in ``inbox_common.errors``.

- The handler returns: ack.
- :class:`~inbox_common.errors.PermanentError`: the message is dead-lettered with the reason
  (published to the dead-letter exchange, confirmed), then acked.
- :class:`~inbox_common.errors.TransientError` with a ``tier``: the message moves to that
  delay tier (confirmed), then is acked; the tier brings it back when its TTL expires.
- :class:`~inbox_common.errors.TransientError` without a tier (the store is down): a few
  quick retries in process; if it still fails, the message is parked (published again to the
  tail of its own queue, confirmed, then acked: a new message, so the outage never counts
  toward the queue's delivery limit, however long it lasts) and the consumer pauses: it
  cancels its subscription and takes no work until the dependencies it was given answer
  again, then resumes by itself.
- Anything else is a bug: logged with its traceback, counted in ``consumer_crashes_total``,
  shown in the consumer's health, and the message goes back to the queue (never dead-lettered
  as bad input by us; past the queue's delivery limit RabbitMQ parks it in the dead-letter
  queue, from where it is replayed after the fix).

Each message is handled in a consumer span, the child of the ``traceparent`` it carries (a
message parked, delayed or dead-lettered keeps it, so a retry continues the same trace).

Nothing is acked before its fate is recorded, so a crash anywhere means redelivery, never
loss. :func:`consumer_ctx` is the resource of a service: one consumer of one piece of the
topology, declared by the consumer itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from inbox_common import tracing
from inbox_common.broker.connection import BROKER, NAMES, Broker
from inbox_common.broker.headers import republished_headers
from inbox_common.broker.publisher import PUBLISHER, ConfirmedPublisher, PublishFailedError
from inbox_common.broker.topology import Piece, declare
from inbox_common.errors import PermanentError, TransientError
from inbox_common.health import HEALTH_CHECKS, CheckResult, HealthCheck, Status
from inbox_common.logging import get_logger
from inbox_common.metrics import LATENCY_BUCKETS, METRICS_REGISTRY
from inbox_common.service import CleanupCtx
from inbox_common.settings import ConsumerSettings

log = get_logger(__name__)

Handler = Callable[[AbstractIncomingMessage], Awaitable[None]]
HandlerFactory = Callable[[web.Application], Handler]
Ready = Callable[[], Awaitable[bool]]

REASON_HEADER = "x-inbox-dead-letter-reason"
QUEUE_HEADER = "x-inbox-source-queue"
PARKED_HEADER = "x-inbox-parked"
TIER_HEADER = "x-inbox-retry-tier"
# Headers the broker sets on a delivery: a republished message starts afresh.

# A crash within this many seconds keeps the consumer's health degraded.
CRASH_MEMORY_SECONDS = 300.0


class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.outcomes = Counter(
            "consumer_messages_total",
            "Messages settled by the consumer, by outcome",
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
        self.redeliveries = Counter(
            "consumer_redeliveries_total",
            "Messages delivered again (their previous consumer died, or its channel closed)",
            ["queue"],
            registry=registry,
        )
        self.paused = Gauge(
            "consumer_paused",
            "1 while the consumer is paused because a dependency is unavailable",
            ["queue"],
            registry=registry,
        )


CONSUMER_METRICS = web.AppKey("consumer_metrics", ConsumerMetrics)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Quick in-process retries of a transient failure, then the pause.

    ``attempts`` includes the first; the pause then probes the dependencies every
    ``pause_initial`` seconds, doubling up to ``pause_max``.
    """

    attempts: int = 3
    initial_wait: float = 0.2
    max_wait: float = 1.0
    pause_initial: float = 0.5
    pause_max: float = 10.0

    @classmethod
    def of(cls, settings: ConsumerSettings) -> RetryPolicy:
        return cls(
            attempts=settings.consumer_retry_attempts, pause_max=settings.consumer_pause_max_seconds
        )


class Consumer:
    """Consumes ``queue`` of ``broker`` with ``handler``; see the module docstring."""

    def __init__(
        self,
        broker: Broker,
        queue: str,
        handler: Handler,
        *,
        dead_letter_exchange: str,
        publisher: ConfirmedPublisher,
        metrics: ConsumerMetrics,
        prefetch: int = 64,
        retry: RetryPolicy | None = None,
        retry_exchange: str | None = None,
        ready: Ready | None = None,
    ) -> None:
        self._broker = broker
        self.queue_name = queue
        self._handler = handler
        self._dlx = dead_letter_exchange
        self._publisher = publisher
        self._metrics = metrics
        self._prefetch = prefetch
        self._retry = retry or RetryPolicy()
        self._retry_exchange = retry_exchange
        self._ready = ready
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._last_crash: tuple[float, str] | None = None
        self._paused: tuple[float, str] | None = None
        self._pausing: asyncio.Future[None] | None = None
        self._resuming: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def paused(self) -> bool:
        return self._paused is not None

    async def start(self) -> None:
        """Open a channel with bounded prefetch and start consuming (waits for the broker)."""
        self._channel = await self._broker.connection.channel()
        await self._channel.set_qos(prefetch_count=self._prefetch)
        self._queue = await self._channel.get_queue(self.queue_name, ensure=True)
        self._tag = await self._queue.consume(self._on_message)
        log.info("consumer.started", queue=self.queue_name, prefetch=self._prefetch)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking messages, let in-flight ones settle, close the channel."""
        self._stopping = True
        if self._resuming is not None:
            self._resuming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resuming
        await self._cancel()
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=grace)
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    async def _cancel(self) -> None:
        tag, self._tag = self._tag, None
        if self._queue is not None and tag is not None and self._broker.connected:
            try:
                await self._queue.cancel(tag, timeout=2)
            except Exception as exc:  # the channel may already be gone; nothing to settle
                log.warning("consumer.cancel_failed", queue=self.queue_name, error=str(exc))

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
        with tracing.span(
            f"{self.queue_name} process",
            parent=tracing.context_from(message.headers),
            kind=tracing.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.operation.type": "process",
                "messaging.destination.name": self.queue_name,
                "messaging.message.id": message.message_id or "",
            },
        ) as span:
            count = (message.headers or {}).get("x-delivery-count")
            if message.redelivered or (isinstance(count, int) and count > 0):
                # Not an error: at-least-once at work. Worth a line, as it should be rare.
                self._metrics.redeliveries.labels(self.queue_name).inc()
                log.info(
                    "consumer.redelivered",
                    queue=self.queue_name,
                    message_id=message.message_id,
                    delivery_count=count,
                )
            outcome = await self._settle(message)
            span.set_attribute("inbox.outcome", outcome)
        self._metrics.outcomes.labels(self.queue_name, outcome).inc()
        self._metrics.duration.labels(self.queue_name).observe(loop.time() - started)
        return outcome

    async def _settle(self, message: AbstractIncomingMessage) -> str:
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(_retried_in_place),
                stop=stop_after_attempt(self._retry.attempts),
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
            if exc.tier is not None:
                return await self._delay(message, exc)
            return await self._park(message, exc)
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

    async def _republish(
        self,
        message: AbstractIncomingMessage,
        exchange: str,
        routing_key: str,
        extra: dict[str, Any],
    ) -> bool:
        """Publish ``message`` again (confirmed) and ack it; False (and requeued) when the
        broker did not take it."""
        headers = republished_headers(message.headers)
        headers.update(extra)
        try:
            await self._publisher.publish(
                exchange,
                routing_key,
                message.body,
                message_id=message.message_id,
                headers=headers,
                content_type=message.content_type,
                timestamp=message.timestamp,
            )
        except PublishFailedError as exc:
            log.warning("consumer.republish_failed", queue=self.queue_name, error=str(exc))
            await message.nack(requeue=True)
            return False
        await message.ack()
        return True

    async def _dead_letter(self, message: AbstractIncomingMessage, reason: str, text: str) -> str:
        extra = {REASON_HEADER: f"{reason}: {text}"[:1000], QUEUE_HEADER: self.queue_name}
        if not await self._republish(message, self._dlx, self.queue_name, extra):
            return "requeued"
        log.warning("consumer.dead_lettered", queue=self.queue_name, reason=reason, error=text)
        return "dead_lettered"

    async def _delay(self, message: AbstractIncomingMessage, exc: TransientError) -> str:
        if self._retry_exchange is None:
            raise RuntimeError(f"no retry exchange for tier {exc.tier!r} of {self.queue_name}")
        extra = {TIER_HEADER: exc.tier, QUEUE_HEADER: self.queue_name}
        assert exc.tier is not None
        if not await self._republish(message, self._retry_exchange, exc.tier, extra):
            return "requeued"
        log.info("consumer.delayed", queue=self.queue_name, tier=exc.tier, reason=exc.reason)
        return "delayed"

    async def _park(self, message: AbstractIncomingMessage, exc: TransientError) -> str:
        # Stop taking work first, or the parked copy could come straight back to us.
        await self._pause(f"{exc.reason}: {exc}")
        parked = (message.headers or {}).get(PARKED_HEADER)
        count = parked + 1 if isinstance(parked, int) else 1
        # The default exchange routes by queue name: back to this queue's tail.
        if not await self._republish(message, "", self.queue_name, {PARKED_HEADER: count}):
            return "requeued"
        return "parked"

    async def _pause(self, reason: str) -> None:
        """Cancel the subscription (once; concurrent callers wait for it) and resume in the
        background when the dependencies answer again."""
        if self._paused is None:
            self._paused = (time.monotonic(), reason[:300])
            self._metrics.paused.labels(self.queue_name).set(1)
            log.warning("consumer.paused", queue=self.queue_name, reason=reason[:300])
            self._pausing = asyncio.ensure_future(self._cancel())
            self._resuming = asyncio.create_task(self._resume_when_ready(self._pausing))
        if self._pausing is not None:
            await asyncio.shield(self._pausing)

    async def _resume_when_ready(self, cancelled: asyncio.Future[None]) -> None:
        await asyncio.shield(cancelled)
        delay = self._retry.pause_initial
        # Not ``while True``: a cancellation can be lost inside the readiness probe (Python
        # 3.11's ``asyncio.wait_for``, which PyMongo's socket writes use, swallows one that
        # arrives as its awaitable completes); the flag ends the loop at the next turn.
        while not self._stopping:
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry.pause_max)
            if self._ready is not None and not await self._ready():
                continue
            if self._queue is None or not self._broker.connected:
                continue
            try:
                self._tag = await self._queue.consume(self._on_message)
            except Exception as exc:  # the channel is being restored: try again later
                log.warning("consumer.resume_failed", queue=self.queue_name, error=str(exc))
                continue
            break
        if self._stopping:
            return
        since, _ = self._paused or (time.monotonic(), "")
        self._paused = None
        self._metrics.paused.labels(self.queue_name).set(0)
        paused_for = round(time.monotonic() - since, 1)
        log.info("consumer.resumed", queue=self.queue_name, paused_s=paused_for)

    async def probe(self) -> CheckResult:
        """Health check: consuming, paused (degraded), or down."""
        if self._paused is not None:
            since, reason = self._paused
            return CheckResult(
                status=Status.DEGRADED,
                detail=f"paused {time.monotonic() - since:.0f}s ago ({reason}); "
                f"{self.queue_name} holds the work and consumption resumes by itself",
            )
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


def _retried_in_place(exc: BaseException) -> bool:
    """A transient failure with a tier waits in that tier; only one without is retried here
    (repeating a Cloud API call in place would defeat its rate limit and its tiers)."""
    return isinstance(exc, TransientError) and exc.tier is None


def consumer_metrics(app: web.Application) -> ConsumerMetrics:
    """The consumers' metrics of ``app`` (one set for all its consumers)."""
    if CONSUMER_METRICS not in app:
        app[CONSUMER_METRICS] = ConsumerMetrics(app[METRICS_REGISTRY])
    return app[CONSUMER_METRICS]


def dependencies_ready(app: web.Application, depends_on: Sequence[str]) -> Ready:
    """A paused consumer's resume condition: the named health checks all answer OK."""
    checks = app[HEALTH_CHECKS]

    async def ready() -> bool:
        for name in depends_on:
            check = checks[name]
            try:
                result = await asyncio.wait_for(check.probe(), check.timeout)
            except Exception:  # no answer is not ready
                return False
            if result is not None and result.status is not Status.OK:
                return False
        return True

    return ready


def consumer_ctx(
    piece: Piece,
    handler: HandlerFactory,
    *,
    prefetch: int,
    critical: bool = False,
    retry: RetryPolicy | None = None,
    depends_on: Sequence[str] = (),
) -> CleanupCtx:
    """The consumer resource of ``piece``'s queue: declared, then consumed with the handler
    ``handler(app)`` builds; dead letters, delays and parked messages go out through the
    service's :data:`PUBLISHER`.

    ``depends_on`` names health checks (``"mongodb"``) that must answer before a paused
    consumer resumes. Needs :func:`broker_ctx`, :func:`publisher_ctx` and whatever the
    handler factory reads from the app before it. Its health check is ``<label>_consumer``.
    """

    async def consumer(app: web.Application) -> AsyncIterator[None]:
        broker, names = app[BROKER], app[NAMES]
        spec = piece(names)
        if spec.consumed is None:
            raise ValueError(f"the {spec.label or 'given'} piece has no queue to consume")
        if PUBLISHER not in app:
            raise RuntimeError("consumer_ctx needs publisher_ctx before it (dead letters)")
        metrics = consumer_metrics(app)
        checks = app[HEALTH_CHECKS]
        running = Consumer(
            broker,
            spec.consumed,
            handler(app),
            dead_letter_exchange=names.dead_letter_exchange,
            publisher=app[PUBLISHER],
            metrics=metrics,
            prefetch=prefetch,
            retry=retry,
            retry_exchange=names.retry_exchange,
            ready=dependencies_ready(app, depends_on),
        )
        checks[f"{spec.label}_consumer"] = HealthCheck(running.probe, critical=critical)

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
