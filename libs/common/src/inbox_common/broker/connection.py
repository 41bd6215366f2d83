"""One robust RabbitMQ connection per process, opened without blocking start-up.

The service starts (and answers ``/livez``) while the broker is still unreachable; the
connection keeps retrying in the background and its state feeds the health check.
:func:`broker_ctx` is the resource of a service: the :class:`Broker` under :data:`BROKER`
and the namespace's names under :data:`NAMES`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from aiohttp import web
from yarl import URL

from inbox_common.broker.topology import Names, Topology, declare
from inbox_common.health import HEALTH_CHECKS, CheckResult, HealthCheck, Status
from inbox_common.logging import get_logger
from inbox_common.service import CleanupCtx
from inbox_common.settings import BrokerSettings, redact_url

log = get_logger(__name__)


class BrokerUnavailableError(ConnectionError):
    """The broker is not connected right now; the caller should answer 503 or retry."""


class Broker:
    """A robust connection that reconnects forever and reports its state."""

    def __init__(self, url: str, *, name: str, reconnect_interval: float = 1.0) -> None:
        self._url = url
        self.connection: AbstractRobustConnection = aio_pika.RobustConnection(
            URL(url),
            client_properties={"connection_name": name},
            fail_fast="false",
            reconnect_interval=str(reconnect_interval),
        )
        self._connect_task: asyncio.Task[None] | None = None
        self._setup_tasks: set[asyncio.Task[None]] = set()
        self._pending_setups = 0
        self.ready = asyncio.Event()
        self._declared: set[str] = set()

    def start(self) -> None:
        """Begin connecting in the background."""
        self._connect_task = asyncio.create_task(self.connection.connect(timeout=5))
        log.info("broker.connecting", url=redact_url(self._url))

    def when_connected(self, setup: Callable[[], Awaitable[None]], *, what: str) -> None:
        """Run ``setup`` (declare topology, open channels, start consumers) once connected.

        A setup that fails (say the connection dropped half-way) is tried again after a
        pause; channels and declarations made through the robust connection are restored
        by aio-pika on later reconnects, so ``setup`` runs to completion once.
        """

        async def run() -> None:
            delay = 0.5
            while True:
                await self.connection.ready()
                try:
                    await setup()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("broker.setup_failed", what=what, error=str(exc), retry_in=delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
                log.info("broker.setup_done", what=what)
                self._pending_setups -= 1
                if self._pending_setups == 0:
                    self.ready.set()
                return

        self._pending_setups += 1
        self.ready.clear()
        task = asyncio.create_task(run(), name=f"broker-setup:{what}")
        self._setup_tasks.add(task)
        task.add_done_callback(self._setup_tasks.discard)

    async def declare_once(self, spec: Topology) -> None:
        """Declare ``spec`` unless this process already did (pieces made at run time, such as
        a number's queue, declared before the first publish to them). Raises
        :class:`BrokerUnavailableError` while disconnected."""
        key = "|".join(sorted(q.name for q in spec.queues) + sorted(e.name for e in spec.exchanges))
        if key in self._declared:
            return
        if not self.connected:
            raise BrokerUnavailableError("not connected to RabbitMQ; cannot declare a queue")
        channel = await self.connection.channel()
        try:
            await declare(channel, spec)
        finally:
            await channel.close()
        self._declared.add(key)

    @property
    def connected(self) -> bool:
        return self.connection.connected.is_set() and not self.connection.is_closed

    async def wait_connected(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until the connection is up, or raise :class:`BrokerUnavailableError`."""
        try:
            await asyncio.wait_for(self.connection.ready(), timeout)
        except TimeoutError:
            raise BrokerUnavailableError(
                f"RabbitMQ at {redact_url(self._url)} is not reachable; check RABBITMQ_URL "
                "and that the broker is running"
            ) from None

    async def close(self) -> None:
        for task in list(self._setup_tasks):
            task.cancel()
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
        await self.connection.close()

    async def probe(self) -> CheckResult:
        """Health check: connected or not, without a round trip."""
        if self.connected and self.ready.is_set():
            return CheckResult(status=Status.OK)
        if self.connected:
            return CheckResult(status=Status.DOWN, detail="connected; declaring the topology")
        return CheckResult(status=Status.DOWN, detail="not connected to RabbitMQ; reconnecting")


BROKER = web.AppKey("broker", Broker)
NAMES = web.AppKey("names", Names)


def broker_ctx(settings: BrokerSettings, name: str, *, critical: bool = True) -> CleanupCtx:
    """The broker resource: a connection that keeps retrying in the background, and the
    ``rabbitmq`` health check (``critical``: the service is down without it)."""

    async def broker(app: web.Application) -> AsyncIterator[None]:
        connection = Broker(settings.rabbitmq_url, name=name)
        app[BROKER] = connection
        app[NAMES] = Names(settings.amqp_namespace, settings.amqp_delivery_limit)
        app[HEALTH_CHECKS]["rabbitmq"] = HealthCheck(connection.probe, critical=critical)
        connection.start()
        yield
        await connection.close()

    return broker
