"""The retry-worker: passes over ``<ns>.retry.due`` under the ``campaign-retry`` job lock.

A pass runs only while this worker holds the lock (``inbox_common.jobs``). It takes the due
jobs one at a time with ``basic.get``, decides each against the store
(``inbox_retry.service``), acts on the broker, and only then acks:

- **requeue**: the original body, message id, content type, timestamp and headers (less the
  broker's ``x-death``, ``x-first-death-*``, ``x-last-death-*``, ``x-delivery-count``) are
  published, confirmed and mandatory, through the default exchange to the queue named by
  ``x-inbox-source-queue``; then acked. A crash in between duplicates the job, never loses it:
  the sender's compare-and-set on the message's ``send_state`` makes a duplicate harmless.
- **drop**: the store side is written first (the message cancelled or paused, its
  ``retry_dropped``); then acked, logged with the message id and reason, and counted.
- **not a job** (not JSON, no valid id; or no, an unknown or an unroutable source queue):
  dead-lettered as the kit's consumer does (to ``<ns>.dlx``, routing key the due queue, with
  ``x-inbox-dead-letter-reason``), then acked.

A failure stops the pass, leaves the job in the due queue as the kit's consumer would, and is
recorded on the lock: the store unreachable → the job is *parked* (published again to the due
queue's tail without the broker's headers, so an outage never counts toward the delivery
limit); a publish the broker refused, or a bug (logged with its traceback) → nack with
requeue. The daemon then waits longer before the next pass (doubling, up to 30 s).

**Why ``basic.get``, not a consumer.** A pass is a bounded piece of work done under a lock.
``get`` takes one job exactly when the worker is ready for it, and "the queue is empty" is an
answer, which ends a pass (``--once`` needs one); nothing is prefetched that would go back to
the queue, counted as a redelivery, when the lock is lost or the pass stops. The cost, a round
trip per job, is small beside the confirmed publish each job needs anyway, and due retries are
a trickle next to the webhook stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError
from prometheus_client import CollectorRegistry
from pymongo.errors import PyMongoError

from inbox_common.broker.connection import Broker
from inbox_common.broker.consumer import PARKED_HEADER, QUEUE_HEADER, REASON_HEADER
from inbox_common.broker.headers import republished_headers
from inbox_common.broker.publisher import ConfirmedPublisher, PublishFailedError
from inbox_common.broker.topology import PIECES, RETRY_TIERS, Names
from inbox_common.errors import PermanentError
from inbox_common.health import CheckResult, Status
from inbox_common.jobs import Grant, JobLock, LockState, worker_id
from inbox_common.logging import bind_message_context, get_logger
from inbox_common.store.campaigns import Campaigns
from inbox_common.store.client import Database, is_transient
from inbox_common.store.outbound import Outbound
from inbox_retry import metrics
from inbox_retry.metrics import RetryMetrics
from inbox_retry.service import RetryDecisions, parse_job
from inbox_retry.settings import RetryJobSettings

log = get_logger(__name__)

JOB = "campaign-retry"
MAX_BACKOFF_SECONDS = 30.0
GET_TIMEOUT_SECONDS = 5.0
DUE_TIER = "due"
# What a broker failure looks like from aio-pika (not RuntimeError at large: that is a bug).
BROKER_ERRORS = (AMQPError, ConnectionError, ChannelInvalidStateError, TimeoutError)


@dataclass
class PassResult:
    """What one pass did: jobs by outcome, and the error that stopped it (None: it ran until
    the queue was empty or its limit)."""

    outcomes: Counter[str] = field(default_factory=Counter)
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def seen(self) -> int:
        return sum(self.outcomes.values())

    @property
    def dropped(self) -> int:
        return sum(n for outcome, n in self.outcomes.items() if outcome.startswith("dropped_"))

    def line(self) -> str:
        """``seen 5, requeued 3, dropped 2 (done 1, paused 1), dead-lettered 0``."""
        drops = ", ".join(
            f"{outcome.removeprefix('dropped_')} {n}"
            for outcome, n in sorted(self.outcomes.items())
            if outcome.startswith("dropped_") and n
        )
        text = (
            f"seen {self.seen}, requeued {self.outcomes[metrics.REQUEUED]}, "
            f"dropped {self.dropped}{f' ({drops})' if drops else ''}, "
            f"dead-lettered {self.outcomes[metrics.DEAD_LETTERED]}"
        )
        back = self.outcomes[metrics.PARKED] + self.outcomes[metrics.RETURNED]
        return f"{text}, left in the due queue {back}" if back else text

    def summary(self) -> dict[str, Any]:
        """The pass as the lock document keeps it (``lastPass``)."""
        return {
            "seen": self.seen,
            "outcomes": {k: v for k, v in sorted(self.outcomes.items()) if v},
            "seconds": round(self.seconds, 3),
            "error": self.error,
        }


Progress = Callable[[PassResult], None]


@dataclass(frozen=True, slots=True)
class OnceResult:
    """A one-shot run: the pass's result, or the state of the lock another worker holds."""

    result: PassResult | None
    holder: LockState | None = None
    taken_from: str | None = None


def _header_text(message: AbstractIncomingMessage, name: str) -> str | None:
    value = (message.headers or {}).get(name)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


class RetryWorker:
    """The daemon loop (:meth:`run`), one pass (:meth:`run_pass`), a one-shot run
    (:meth:`once`), and what the jobs API and the health check ask of them."""

    def __init__(
        self,
        broker: Broker,
        publisher: ConfirmedPublisher,
        names: Names,
        lock: JobLock,
        decisions: RetryDecisions,
        outbound: Outbound,
        metrics_: RetryMetrics,
        *,
        pass_limit: int,
        failure_threshold: int,
        interval: float = 1.0,
    ) -> None:
        self._broker = broker
        self._publisher = publisher
        self._names = names
        self.lock = lock
        self._decisions = decisions
        self._outbound = outbound
        self._metrics = metrics_
        self._pass_limit = pass_limit
        self._failure_threshold = failure_threshold
        self._interval = interval
        self._heartbeat_every = lock.stale_after.total_seconds() / 3
        # A failing holder backs off, but tries (and so renews) often enough to keep its lock.
        self._max_backoff = max(
            min(MAX_BACKOFF_SECONDS, lock.stale_after.total_seconds() / 2), interval
        )
        self._due = names.retry_due_queue
        self._targets = frozenset(
            queue for piece in PIECES if (queue := piece(names).consumed) not in (None, self._due)
        )
        self._channel: AbstractChannel | None = None
        self._depth_channel: AbstractChannel | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._holding = False
        self._task: asyncio.Task[None] | None = None

    # --- the daemon -------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"retry-worker:{JOB}")

    async def run(self) -> None:
        """Pass after pass while this worker holds the lock; try to take it meanwhile."""
        await self._until_broker_ready()
        failures = 0
        while not self._stopping:
            result: PassResult | None = None
            if self.ready:
                try:
                    result = await self._take_and_pass()
                except PyMongoError as exc:
                    log.warning("job.lock_unavailable", job=JOB, error=type(exc).__name__)
                except Exception:  # a bug: loud, and the daemon lives on
                    log.exception("retry.loop_crashed", job=JOB)
            failures = 0 if result is None or result.ok else failures + 1
            if result is not None and result.ok and result.seen >= self._pass_limit:
                continue  # more are waiting: no pause
            delay = min(self._interval * 2**failures, self._max_backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()

    @property
    def ready(self) -> bool:
        """Whether a pass can run: the broker is connected, the topology declared."""
        return self._broker.connected and self._broker.ready.is_set()

    async def _until_broker_ready(self) -> None:
        """At start: until the topology is declared and the publisher open (or a stop)."""
        waits = [asyncio.ensure_future(e.wait()) for e in (self._broker.ready, self._wake)]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        self._wake.clear()

    async def _take_and_pass(self) -> PassResult | None:
        grant = await self.lock.acquire()
        if grant is None:
            await self._standby()
            return None
        self._took(grant)
        result = await self.run_pass()
        await self._refresh_lock_gauges()
        return result

    def _took(self, grant: Grant) -> None:
        if not self._holding:
            log.info(
                "job.lock_acquired", job=JOB, worker=self.lock.owner, taken_from=grant.taken_from
            )
        self._holding = True

    async def _standby(self) -> None:
        state = await self.lock.state()
        self._set_lock_gauges(state)
        if self._holding:
            log.warning("job.lock_lost", job=JOB, worker=self.lock.owner, holder=state.locked_by)
        self._holding = False

    async def request_pass(self) -> LockState | None:
        """Take (or renew) the lock and wake the daemon for a pass now; the lock's state when
        another live worker holds it."""
        grant = await self.lock.acquire()
        if grant is None:
            return await self.lock.state()
        self._took(grant)
        self._wake.set()
        return None

    async def close(self, grace: float = 10.0) -> None:
        """Let a pass finish its job in hand (up to ``grace``), release the lock, close."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=grace)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._holding or self.lock.held:
            try:
                await asyncio.wait_for(self.lock.release(), 2)
                log.info("job.lock_released", job=JOB, worker=self.lock.owner)
            except (PyMongoError, TimeoutError) as exc:
                # It goes stale instead, and is taken over after the bound.
                log.warning("job.release_failed", job=JOB, error=type(exc).__name__)
        for channel in (self._channel, self._depth_channel):
            if channel is not None and not channel.is_closed:
                with contextlib.suppress(*BROKER_ERRORS):
                    await channel.close()

    # --- one pass ---------------------------------------------------------------------------

    async def once(self, progress: Progress | None = None) -> OnceResult:
        """Take the lock, run one pass, release: ``retry-worker --once`` and ``inbox-ops job
        campaign-retry``. The lock's state instead when another live worker holds it."""
        grant = await self.lock.acquire()
        if grant is None:
            return OnceResult(None, holder=await self.lock.state())
        log.info("job.lock_acquired", job=JOB, worker=self.lock.owner, taken_from=grant.taken_from)
        try:
            result = await self.run_pass(progress)
        finally:
            with contextlib.suppress(PyMongoError):
                await self.lock.release()
        return OnceResult(result, taken_from=grant.taken_from)

    async def run_pass(self, progress: Progress | None = None) -> PassResult:
        """Settle due jobs one by one until the queue is empty, the pass limit, a failure, or
        the lock is lost; then refresh the tier gauges and record the pass on the lock."""
        if not self.lock.held:
            raise RuntimeError("a pass needs the job lock: acquire it first")
        result = PassResult()
        started = time.monotonic()
        try:
            queue = await self._due_queue()
            while result.seen < self._pass_limit and not self._stopping:
                if (trouble := await self._keep_lock()) is not None:
                    result.error = trouble
                    break
                message = await queue.get(no_ack=False, fail=False, timeout=GET_TIMEOUT_SECONDS)
                if message is None:
                    break
                outcome, failure = await self._settle(message)
                result.outcomes[outcome] += 1
                self._metrics.jobs.labels(outcome).inc()
                if progress is not None:
                    progress(result)
                if failure is not None:
                    result.error = failure
                    break
        except BROKER_ERRORS as exc:
            result.error = f"broker unavailable: {type(exc).__name__}"
        except Exception as exc:  # a bug: loud, recorded, and the daemon lives on
            log.exception("retry.pass_crashed", job=JOB)
            result.error = f"crashed: {type(exc).__name__}"
        finally:
            structlog.contextvars.clear_contextvars()
        result.seconds = time.monotonic() - started
        self._metrics.passes.labels("ok" if result.ok else "failed").inc()
        await self.depths()
        await self._record(result)
        return result

    async def _keep_lock(self) -> str | None:
        """Renew the heartbeat when it is due; what is wrong when the lock is not held."""
        renewed_ago = self.lock.renewed_ago
        if renewed_ago is not None and renewed_ago < self._heartbeat_every:
            return None
        try:
            if await self.lock.renew():
                return None
        except PyMongoError as exc:
            return f"could not renew the job lock: store unavailable ({type(exc).__name__})"
        return "lost the job lock: another worker took it over"

    async def _record(self, result: PassResult) -> None:
        if result.seen or not result.ok:
            event = "retry.pass_finished" if result.ok else "retry.pass_failed"
            (log.info if result.ok else log.warning)(
                event, job=JOB, summary=result.line(), error=result.error
            )
        try:
            recorded = await self.lock.record(
                ok=result.ok, error=result.error, summary=result.summary()
            )
        except PyMongoError as exc:
            log.warning("job.record_failed", job=JOB, error=type(exc).__name__)
            return
        if not recorded:
            log.warning("job.record_refused", job=JOB, worker=self.lock.owner)

    async def _due_queue(self) -> AbstractQueue:
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._broker.connection.channel()
        return await self._channel.get_queue(self._due, ensure=False)

    # --- one job ----------------------------------------------------------------------------

    async def _settle(self, message: AbstractIncomingMessage) -> tuple[str, str | None]:
        """Decide, act, ack; returns the outcome and, when the pass must stop, why."""
        structlog.contextvars.clear_contextvars()
        bind_message_context(message_id=message.message_id)
        try:
            message_id = parse_job(message.body)
            if message_id is not None:
                bind_message_context(message_id=str(message_id))
            decision = await self._decisions.decide(message_id)
        except PermanentError as exc:
            return await self._dead_letter(message, exc)
        except PyMongoError as exc:
            if is_transient(exc):
                return await self._park(message, exc)
            return await self._give_back(message, exc)
        except Exception as exc:
            return await self._give_back(message, exc)
        bind_message_context(wamid=decision.wamid)
        if decision.requeue:
            return await self._requeue(message, decision.reason)
        if decision.outcome == metrics.DROPPED_MISSING:
            log.warning("retry.dropped", outcome=decision.outcome, reason=decision.reason)
        else:
            log.info("retry.dropped", outcome=decision.outcome, reason=decision.reason)
        await message.ack()
        return decision.outcome, None

    async def _requeue(
        self, message: AbstractIncomingMessage, reason: str
    ) -> tuple[str, str | None]:
        target = _header_text(message, QUEUE_HEADER)
        if target is None:
            return await self._dead_letter(
                message, PermanentError("no_source_queue", f"the job has no {QUEUE_HEADER} header")
            )
        if target not in self._targets and not self._names.is_number_queue(target):
            return await self._dead_letter(
                message,
                PermanentError(
                    "unknown_source_queue",
                    f"{QUEUE_HEADER} names {target[:200]!r}, not a work queue of namespace "
                    f"{self._names.namespace!r}",
                ),
            )
        try:
            await self._publish(message, "", target, {})
        except PublishFailedError as exc:
            if exc.reason == "returned":
                return await self._dead_letter(
                    message,
                    PermanentError(
                        "unroutable", f"queue {target} does not exist; declare it and replay"
                    ),
                )
            await message.nack(requeue=True)
            return metrics.RETURNED, f"publish to {target} failed ({exc.reason}): {exc}"
        await message.ack()
        log.info("retry.requeued", queue=target, reason=reason)
        return metrics.REQUEUED, None

    async def _dead_letter(
        self, message: AbstractIncomingMessage, error: PermanentError
    ) -> tuple[str, str | None]:
        extra = {REASON_HEADER: f"{error.reason}: {error}"[:1000], QUEUE_HEADER: self._due}
        exchange = self._names.dead_letter_exchange
        try:
            await self._publish(message, exchange, self._due, extra)
        except PublishFailedError as exc:
            await message.nack(requeue=True)
            return metrics.RETURNED, f"dead-lettering failed ({exc.reason}): {exc}"
        await message.ack()
        log.warning("retry.dead_lettered", reason=error.reason, error=str(error))
        return metrics.DEAD_LETTERED, None

    async def _park(self, message: AbstractIncomingMessage, exc: PyMongoError) -> tuple[str, str]:
        why = f"store unavailable ({type(exc).__name__})"
        parked = (message.headers or {}).get(PARKED_HEADER)
        extra = {PARKED_HEADER: parked + 1 if isinstance(parked, int) else 1}
        try:
            # The default exchange routes by queue name: back to the due queue's tail.
            await self._publish(message, "", self._due, extra)
        except PublishFailedError as failed:
            await message.nack(requeue=True)
            return metrics.RETURNED, f"{why}; parking failed ({failed.reason})"
        await message.ack()
        log.warning("retry.parked", error=type(exc).__name__)
        return metrics.PARKED, why

    async def _give_back(self, message: AbstractIncomingMessage, exc: Exception) -> tuple[str, str]:
        # A bug, not the job's fault as far as we know: loud, and back to the queue (past the
        # delivery limit RabbitMQ parks it in the due queue's dead-letter queue).
        name = type(exc).__name__[:60]
        log.exception("retry.crashed", exception=name)
        await message.nack(requeue=True)
        return metrics.RETURNED, f"crashed: {name}: {exc}"[:300]

    async def _publish(
        self,
        message: AbstractIncomingMessage,
        exchange: str,
        routing_key: str,
        extra: dict[str, Any],
    ) -> None:
        await self._publisher.publish(
            exchange,
            routing_key,
            message.body,
            message_id=message.message_id,
            headers=republished_headers(message.headers) | extra,
            content_type=message.content_type,
            timestamp=message.timestamp,
        )

    # --- what the API and the health check read ---------------------------------------------

    async def depths(self) -> dict[str, int] | str:
        """Messages in each delay tier and the due queue (passive declares), by queue name;
        refreshes ``retry_tier_messages``. What went wrong instead, when the broker did."""
        tiers = [(tier, self._names.retry_tier_queue(tier)) for tier, _ in RETRY_TIERS]
        tiers.append((DUE_TIER, self._due))
        if not self._broker.connected:
            return "broker unavailable: not connected to RabbitMQ"
        counts: dict[str, int] = {}
        try:
            if self._depth_channel is None or self._depth_channel.is_closed:
                self._depth_channel = await asyncio.wait_for(self._broker.connection.channel(), 2)
            # On the channel underneath: aio-pika's robust channel answers a passive declare of
            # a queue it has seen before from its cache, with that first declare's count.
            channel = await self._depth_channel.get_underlay_channel()
            for tier, queue in tiers:
                declared = await channel.queue_declare(queue, passive=True, timeout=2)
                count = int(declared.message_count or 0)
                counts[queue] = count
                self._metrics.tier_messages.labels(tier).set(count)
        except BROKER_ERRORS as exc:
            return f"broker unavailable: {type(exc).__name__}"
        return counts

    async def status(self) -> dict[str, Any]:
        """``GET /api/jobs/campaign-retry``: the lock, the queues, the next due retry."""
        state = await self.lock.state()
        self._set_lock_gauges(state)
        depths = await self.depths()
        return state.document() | {
            "worker": {"id": self.lock.owner, "holdsLock": self.lock.held},
            "queues": depths if isinstance(depths, dict) else None,
            "queuesError": depths if isinstance(depths, str) else None,
            "nextDueAt": await self._outbound.next_retry_due(),
        }

    async def _refresh_lock_gauges(self) -> None:
        with contextlib.suppress(PyMongoError):
            self._set_lock_gauges(await self.lock.state())

    def _set_lock_gauges(self, state: LockState) -> None:
        age = state.heartbeat_age if state.locked_by is not None else None
        self._metrics.lock_age.labels(JOB).set(age or 0.0)
        if state.last_success_at is not None:
            self._metrics.last_success.labels(JOB).set(state.last_success_at.timestamp())

    async def probe(self) -> CheckResult:
        """Health: degraded after ``failure_threshold`` failed passes in a row, or when the
        lock's heartbeat is older than the bound (by the store's clock, or by this worker's
        own view of its renewals)."""
        state = await self.lock.state()
        self._set_lock_gauges(state)
        problems = []
        if state.consecutive_failures >= self._failure_threshold:
            problems.append(
                f"{state.consecutive_failures} passes failed in a row (last error: "
                f"{state.last_error}); see the retry-worker's log"
            )
        stale = self.lock.stale_after.total_seconds()
        if state.is_stale:
            problems.append(
                f"the lock held by {state.locked_by} has had no heartbeat for "
                f"{state.heartbeat_age or 0:.0f}s (stale after {stale:g}s); the next worker "
                "to try takes it over"
            )
        elif state.locked_by == self.lock.owner and not self.lock.held:
            problems.append(
                f"this worker holds the lock but has not renewed it for over {stale:g}s; "
                "check the store"
            )
        if problems:
            return CheckResult(status=Status.DEGRADED, detail="; ".join(problems))
        if state.locked_by == self.lock.owner:
            detail = "this worker holds the lock"
        elif state.locked_by is None:
            detail = "the lock is free"
        else:
            detail = f"standby: {state.locked_by} holds the lock"
        return CheckResult(status=Status.OK, detail=detail)


def build_worker(
    settings: RetryJobSettings,
    *,
    db: Database,
    broker: Broker,
    publisher: ConfirmedPublisher,
    names: Names,
    registry: CollectorRegistry,
    interval: float = 1.0,
) -> RetryWorker:
    """The worker over a service's resources, or a one-shot run's."""
    outbound = Outbound(db)
    return RetryWorker(
        broker,
        publisher,
        names,
        JobLock(db, JOB, owner=worker_id(), stale_after=settings.stale_after),
        RetryDecisions(outbound, Campaigns(db)),
        outbound,
        RetryMetrics(registry),
        pass_limit=settings.retry_worker_pass_limit,
        failure_threshold=settings.retry_worker_failure_threshold,
        interval=interval,
    )
