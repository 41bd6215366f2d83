"""The AMQP edge of the webhook consumer: message → validated delivery → service → fate."""

from __future__ import annotations

import hashlib

import structlog
from aio_pika.abc import AbstractIncomingMessage
from pymongo.errors import PyMongoError

from inbox_api.consumer.service import WebhookProcessor
from inbox_common.contracts.delivery import InvalidDelivery, WebhookDelivery
from inbox_common.errors import PermanentError, TransientError
from inbox_common.logging import bind_message_context
from inbox_common.store.client import is_transient


class WebhookHandler:
    """Callable handed to :class:`~inbox_common.broker.consumer.Consumer`."""

    def __init__(self, processor: WebhookProcessor) -> None:
        self._processor = processor

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        structlog.contextvars.clear_contextvars()
        try:
            delivery = WebhookDelivery.from_amqp(message.body, message.headers)
        except InvalidDelivery as exc:
            raise PermanentError("invalid_delivery", str(exc)) from exc
        bind_message_context(request_id=delivery.request_id or None, sha256=delivery.sha256)
        if hashlib.sha256(delivery.body).hexdigest() != delivery.sha256:
            raise PermanentError(
                "checksum_mismatch", "the body does not hash to its sha256 header; it was altered"
            )
        try:
            await self._processor.process(delivery)
        except PyMongoError as exc:
            if is_transient(exc):
                raise TransientError("store_unavailable", f"MongoDB: {exc}") from exc
            raise PermanentError("store_rejected", f"MongoDB refused the write: {exc}") from exc
