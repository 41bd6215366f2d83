"""Delivering webhooks to the ingest the way Meta does.

Every body is signed (``X-Hub-Signature-256``, HMAC-SHA256 of the exact bytes with the app
secret) and POSTed until the ingest answers 200: a non-200 answer or a connection error is
retried with exponential backoff for ``SANDBOX_WEBHOOK_RETRY_SECONDS`` (Meta retries for
days; a dev tool gives up sooner), one attempt at a time per body. Deliveries run as
background tasks, so nothing waits on the ingest to answer a send. Meta delivers at least once
and out of order; ``SANDBOX_WEBHOOK_DUPLICATES`` sends a body twice (byte for byte) and the
caller shuffles the timing. The number of pending deliveries is bounded: past it a webhook is
dropped, counted and logged rather than letting memory grow without end.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import aiohttp

from inbox_common.health import CheckResult, Status
from inbox_common.logging import get_logger
from inbox_common.settings import redact_url
from inbox_common.whatsapp.signature import SIGNATURE_HEADER, sign
from inbox_sandbox.metrics import SandboxMetrics

log = get_logger(__name__)

__all__ = ["MAX_PENDING", "USER_AGENT", "IngestUnreachableError", "WebhookSender"]

# What Meta's webhook requests call themselves.
USER_AGENT = "facebookexternalua"
MAX_PENDING = 200_000
FIRST_RETRY_SECONDS = 0.2
MAX_RETRY_SECONDS = 30.0
# A duplicate follows its original by up to this much, as Meta's redeliveries do.
DUPLICATE_LAG_SECONDS = 0.05


class IngestUnreachableError(ConnectionError):
    """The webhook URL did not answer (no connection, or no answer in time)."""


@dataclass(frozen=True, slots=True)
class _Attempt:
    status: int | None
    problem: str | None
    at: float


class WebhookSender:
    """Signs and posts webhook bodies to one URL, retrying in the background."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        metrics: SandboxMetrics,
        *,
        url: str,
        secret: bytes,
        retry_seconds: float,
        duplicates: float = 0.0,
        rng: random.Random | None = None,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._session = session
        self._metrics = metrics
        self.url = url
        self._secret = secret
        self._retry_seconds = retry_seconds
        self._duplicates = duplicates
        self._rng = rng or random.Random()
        self._max_pending = max_pending
        self._tasks: set[asyncio.Task[None]] = set()
        self._last: _Attempt | None = None
        metrics.pending_webhooks.set_function(lambda: len(self._tasks))

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def post(self, body: bytes) -> int:
        """POST ``body`` once, signed; return the ingest's HTTP status.

        Raises :class:`IngestUnreachableError` when the ingest does not answer.
        """
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self._secret, body),
            "User-Agent": USER_AGENT,
        }
        try:
            async with self._session.post(self.url, data=body, headers=headers) as response:
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            problem = _describe(exc)
            self._last = _Attempt(None, problem, time.time())
            raise IngestUnreachableError(problem) from exc
        self._last = _Attempt(response.status, None, time.time())
        return response.status

    def deliver(
        self,
        body: bytes,
        *,
        kind: str,
        delay: float,
        wamid: str,
        phone_number_id: str,
        may_duplicate: bool = True,
    ) -> None:
        """Post ``body`` after ``delay`` seconds, retrying until a 200 or the retry budget."""
        if len(self._tasks) >= self._max_pending:
            self._metrics.webhooks.labels(kind, "dropped").inc()
            log.warning(
                "sandbox.webhook_dropped",
                wamid=wamid,
                phone_number_id=phone_number_id,
                pending=len(self._tasks),
                reason="too many webhooks pending; is the ingest answering?",
            )
            return
        task = asyncio.create_task(
            self._deliver(body, kind, delay, wamid, phone_number_id), name=f"webhook:{wamid}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if may_duplicate:
            self.echo(body, kind=kind, delay=delay, wamid=wamid, phone_number_id=phone_number_id)

    def echo(
        self, body: bytes, *, kind: str, delay: float, wamid: str, phone_number_id: str
    ) -> None:
        """With the duplicate probability, deliver ``body`` once more, shortly after ``delay``."""
        if not self._duplicates or self._rng.random() >= self._duplicates:
            return
        self._metrics.webhooks.labels(kind, "duplicated").inc()
        self.deliver(
            body,
            kind=kind,
            delay=delay + self._rng.uniform(0, DUPLICATE_LAG_SECONDS),
            wamid=wamid,
            phone_number_id=phone_number_id,
            may_duplicate=False,
        )

    async def _deliver(
        self, body: bytes, kind: str, delay: float, wamid: str, phone_number_id: str
    ) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self._retry_seconds
        backoff = FIRST_RETRY_SECONDS
        attempts = 0
        while True:
            attempts += 1
            try:
                status = await self.post(body)
            except IngestUnreachableError as exc:
                problem = str(exc)
            else:
                if status == 200:
                    self._metrics.webhooks.labels(kind, "delivered").inc()
                    self._metrics.delivery_seconds.observe(loop.time() - started)
                    log.debug(
                        "sandbox.webhook_delivered",
                        wamid=wamid,
                        phone_number_id=phone_number_id,
                        kind=kind,
                        attempts=attempts,
                    )
                    return
                problem = f"HTTP {status}"
            if loop.time() + backoff > deadline:
                self._metrics.webhooks.labels(kind, "failed").inc()
                log.warning(
                    "sandbox.webhook_gave_up",
                    wamid=wamid,
                    phone_number_id=phone_number_id,
                    kind=kind,
                    attempts=attempts,
                    problem=problem,
                    url=redact_url(self.url),
                )
                return
            self._metrics.webhooks.labels(kind, "retried").inc()
            log.info(
                "sandbox.webhook_retry",
                wamid=wamid,
                phone_number_id=phone_number_id,
                kind=kind,
                attempts=attempts,
                problem=problem,
                retry_in=backoff,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_RETRY_SECONDS)

    async def close(self) -> None:
        """Stop every pending delivery (the process is going away)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def probe(self) -> CheckResult:
        """Health: whether the ingest answered the last webhook with a 200 (non-critical)."""
        url = redact_url(self.url)
        last = self._last
        if last is None:
            return CheckResult(status=Status.OK, detail=f"no webhook posted to {url} yet")
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(last.at))
        if last.status == 200:
            return CheckResult(status=Status.OK, detail=f"{url} answered 200 at {when}")
        problem = last.problem or f"HTTP {last.status}"
        return CheckResult(
            status=Status.DOWN,
            detail=f"the last webhook to {url} got {problem} at {when}; deliveries are retried "
            "(check SANDBOX_WEBHOOK_URL and that webhook-ingest is running)",
        )


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
