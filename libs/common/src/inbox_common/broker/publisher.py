"""A publisher with confirms: persistent, mandatory, returns raised, bounded in time.

Publishes from concurrent callers share one confirm channel and are pipelined on it (each
waits only for its own confirm); there is no lock around publish + confirm.
:func:`publisher_ctx` is the resource of a service: it declares the pieces of the topology
the service publishes to, then opens the confirm channel (:data:`PUBLISHER`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange
from aio_pika.exceptions import (
    CONNECTION_EXCEPTIONS,
    ChannelNotFoundEntity,
    DeliveryError,
    PublishError,
)
from aiohttp import web

from inbox_common import tracing
from inbox_common.broker.connection import BROKER, NAMES, Broker
from inbox_common.broker.topology import Piece, Topology, declare
from inbox_common.logging import get_logger
from inbox_common.service import CleanupCtx
from inbox_common.settings import BrokerSettings

log = get_logger(__name__)

_REOPEN_POLL_SECONDS = 0.01


class PublishFailedError(Exception):
    """The broker did not take the message; nothing may be acknowledged upstream.

    ``reason`` is one of ``broker_unavailable``, ``nacked``, ``returned``, ``timeout``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ConfirmedPublisher:
    """Publishes on one confirm channel of ``broker``'s connection."""

    def __init__(self, broker: Broker, *, timeout: float) -> None:
        self._broker = broker
        self._timeout = timeout
        self._channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._replacing: asyncio.Task[None] | None = None
        self._started = asyncio.Event()

    async def start(self) -> None:
        """Open the confirm channel (waits for the connection)."""
        self._channel = await self._open()
        self._started.set()

    async def _open(self) -> AbstractChannel:
        return await self._broker.connection.channel(publisher_confirms=True, on_return_raises=True)

    def _replace_channel(self) -> None:
        """Swap in a fresh confirm channel in the background (one swap at a time).

        After a quorum queue's leader moved (its node died), RabbitMQ can keep nacking every
        publish on a channel that was restored while the election was still running, while a
        new channel on the same connection publishes fine: so a nack retires the channel.
        """
        if self._replacing is not None and not self._replacing.done():
            return

        async def replace() -> None:
            old = self._channel
            try:
                self._channel = await self._open()
            except Exception as exc:  # the next nack tries again
                log.warning("publisher.reopen_failed", error=str(exc))
                return
            self._exchanges = {}
            if old is not None and not old.is_closed:
                with contextlib.suppress(Exception):
                    await old.close()

        self._replacing = asyncio.create_task(replace())

    async def _exchange(self, name: str) -> AbstractExchange:
        exchange = self._exchanges.get(name)
        if exchange is None:
            if self._channel is None:
                raise PublishFailedError("broker_unavailable", "the publisher is not started")
            exchange = await self._channel.get_exchange(name, ensure=False)
            self._exchanges[name] = exchange
        return exchange

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        message_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
        content_type: str | None = None,
        timestamp: datetime | None = None,
        propagate: bool = True,
    ) -> None:
        """Publish ``body`` and wait for the broker's confirm.

        The current span's ``traceparent`` joins the headers (unless they carry one, or
        ``propagate`` is false: a message of several traces' items carries theirs inside).

        Raises :class:`PublishFailedError` on a nack, a return (unroutable), a lost
        connection, or no confirm within the timeout.
        """
        if not self._broker.connected:
            raise PublishFailedError("broker_unavailable", "not connected to RabbitMQ")
        if self._channel is None:
            # Connected, and the service's broker setup is still under way (the first
            # seconds after a start): wait for the confirm channel rather than fail.
            try:
                await asyncio.wait_for(self._started.wait(), self._timeout)
            except TimeoutError:
                raise PublishFailedError(
                    "broker_unavailable",
                    f"the confirm channel was not open within {self._timeout:g}s of "
                    "connecting to RabbitMQ",
                ) from None
        message = aio_pika.Message(
            body,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message_id,
            headers=(tracing.inject(dict(headers or {})) if propagate else dict(headers or {}))
            or None,
            content_type=content_type,
            timestamp=timestamp,
        )
        try:
            target = await self._exchange(exchange)
            # The robust channel waits for a reconnect without a deadline: bound it here.
            await asyncio.wait_for(self._publish(target, message, routing_key), self._timeout)
        except TimeoutError:
            raise PublishFailedError(
                "timeout", f"no confirm from RabbitMQ within {self._timeout:g}s"
            ) from None
        except PublishError as exc:
            raise PublishFailedError(
                "returned", f"unroutable: exchange {exchange!r} key {routing_key!r}"
            ) from exc
        except ChannelNotFoundEntity as exc:
            raise PublishFailedError(
                "returned", f"exchange {exchange!r} does not exist; declare the topology"
            ) from exc
        except DeliveryError as exc:
            self._replace_channel()
            raise PublishFailedError("nacked", "RabbitMQ refused the message (nack)") from exc
        except CONNECTION_EXCEPTIONS as exc:
            raise PublishFailedError(
                "broker_unavailable", f"RabbitMQ connection lost: {type(exc).__name__}"
            ) from exc

    async def _publish(
        self, target: AbstractExchange, message: aio_pika.Message, routing_key: str
    ) -> None:
        # A channel error (a publish to a missing exchange: 404) closes the channel but not
        # the connection; the robust channel reopens it in the background within
        # milliseconds. Wait for that (bounded by the caller's timeout) instead of failing
        # every publish made meanwhile.
        while self._reopening():  # noqa: ASYNC110 - aio-pika offers no event to await
            await asyncio.sleep(_REOPEN_POLL_SECONDS)
        await target.publish(message, routing_key, mandatory=True)

    def _reopening(self) -> bool:
        return self._channel is not None and self._channel.is_closed and self._broker.connected


PUBLISHER = web.AppKey("publisher", ConfirmedPublisher)


def publisher_ctx(settings: BrokerSettings, *pieces: Piece) -> CleanupCtx:
    """The publisher resource: once connected, declare ``pieces`` (what the service
    publishes to) and open the confirm channel. Needs :func:`broker_ctx` before it."""

    async def publisher(app: web.Application) -> AsyncIterator[None]:
        broker, names = app[BROKER], app[NAMES]
        confirmed = ConfirmedPublisher(broker, timeout=settings.amqp_publish_timeout)
        app[PUBLISHER] = confirmed
        spec = Topology((), ())
        for piece in pieces:
            spec = spec + piece(names)

        async def setup() -> None:
            await declare(await broker.connection.channel(), spec)
            await confirmed.start()

        broker.when_connected(setup, what="publisher")
        yield

    return publisher
