"""Sending a message from a conversation: stored first, then queued for the sender.

``POST /api/conversations/{id}/messages`` ends here. The message is stored (``pending``,
``send_state: queued``) under the request's idempotency key, its conversation shows it, and
its id is published to ``wa.outbound`` (confirmed) for a sender (``inbox_api.sender``) to
call the Cloud API. The same key again returns the same message and sends nothing new (if
its publish failed, it is published now); the same key with another body is a conflict.

Outside the customer's 24-hour service window only templates may go out (Meta refuses the
rest with 131047): such a request is refused here, saying when the window closed.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from bson import ObjectId

from inbox_api.conversations import ConversationService
from inbox_api.errors import ConflictError
from inbox_api.previews import outbound_preview
from inbox_api.rest.outgoing import OutgoingMessage
from inbox_api.store.inbox import Inbox, Touch, Writes
from inbox_common import tracing
from inbox_common.broker import topology
from inbox_common.broker.connection import Broker, BrokerUnavailableError
from inbox_common.broker.publisher import ConfirmedPublisher, PublishFailedError
from inbox_common.broker.topology import OUTBOUND_ROUTING_KEY, Names
from inbox_common.http import ApiError
from inbox_common.logging import get_logger
from inbox_common.store.channels import Channels
from inbox_common.store.client import Document
from inbox_common.store.outbound import QUEUED, Outbound, local_wamid

log = get_logger(__name__)

SERVICE_WINDOW = timedelta(hours=24)


class OutsideWindowError(ApiError):
    def __init__(self, closed_at: datetime | None) -> None:
        when = (
            f"the window closed at {closed_at.isoformat()}"
            if closed_at is not None
            else "the customer has not written yet"
        )
        super().__init__(
            422,
            "outside_service_window",
            "outside the customer's 24-hour service window only template messages can be "
            f"sent ({when}); send a template, or wait for the customer to write",
            {"window_closed_at": closed_at.isoformat() if closed_at else None},
        )


def request_hash(message: OutgoingMessage) -> str:
    canonical = orjson.dumps(message.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


class OutboundService:
    def __init__(
        self,
        conversations: ConversationService,
        inbox: Inbox,
        outbound: Outbound,
        publisher: ConfirmedPublisher,
        names: Names,
        broker: Broker,
        channels: Channels,
    ) -> None:
        self._broker = broker
        self._channels = channels
        self._conversations = conversations
        self._inbox = inbox
        self._outbound = outbound
        self._publisher = publisher
        self._names = names

    async def send(
        self,
        conversation_id_: ObjectId,
        scope: dict[str, Any],
        message: OutgoingMessage,
        *,
        idempotency_key: str | None,
        sender: str,
    ) -> tuple[Document, bool]:
        """Store and queue ``message``; returns it and whether it is new (see the module
        docstring)."""
        conversation = await self._conversations.get(conversation_id_, scope)
        if message.type != "template":
            _check_window(conversation.get("last_inbound_at"))
        channel = await self._channels.get(conversation["channel_id"], conversation["tenant"])
        if channel is None:
            raise ApiError(
                409,
                "channel_gone",
                "the conversation's channel no longer exists; connect the number again",
            )
        now = datetime.now(UTC)
        message_id = ObjectId()
        key = idempotency_key or str(message_id)
        fingerprint = request_hash(message)
        content = message.content()
        doc: Document = {
            "_id": message_id,
            "wamid": local_wamid(message_id),
            "conversation_id": conversation["_id"],
            "channel_id": conversation["channel_id"],
            "phone_number_id": channel["phone_number_id"],
            "tenant": conversation["tenant"],
            "direction": "outbound",
            "type": message.type,
            "content": content if isinstance(content, dict) else {message.type: content},
            "reply_to": message.reply_to,
            # Who it goes to, fixed now: the phone if known, else the business-scoped user id.
            "recipient": {
                "wa_id": conversation.get("wa_id"),
                "user_id": conversation.get("user_id"),
            },
            "timestamp": now,
            "status": "pending",
            "status_rank": 0,
            "send_state": QUEUED,
            "attempts": 0,
            "idempotency_key": f"{conversation['tenant']}:{conversation['_id']}:{key}",
            "request_hash": fingerprint,
            "sent_by": sender,
            "created_at": now,
            "trace_id": tracing.current_trace_id(),
        }
        stored, new = await self._outbound.store(doc)
        if not new:
            if stored.get("request_hash") != fingerprint:
                raise ConflictError(
                    "this Idempotency-Key was used for another message; use a new key for a "
                    "new message",
                    {"message_id": str(stored["_id"])},
                )
            if stored.get("send_state") == QUEUED:
                await self._queue(stored)  # the first request may have failed to publish it
            return stored, False
        await self._show(conversation, doc, content)
        await self._queue(doc)
        return doc, True

    async def _show(self, conversation: Document, doc: Document, content: Any) -> None:
        """The conversation's preview moves to the new message (no unread mark)."""
        writes = Writes()
        channel = {"_id": conversation["channel_id"], "tenant": conversation["tenant"]}
        summary = outbound_preview(doc["type"], content)
        writes.show(
            channel, conversation["_id"], Touch(doc["wamid"], doc["timestamp"], summary, False)
        )
        await self._inbox.write(writes)

    async def requeue_held(self, channel: Document) -> int:
        """Queue again the messages held while ``channel`` was disconnected; returns how
        many."""
        held = await self._outbound.held_of(channel["_id"])
        for message_id in held:
            await self.send_job(message_id, channel["phone_number_id"])
        return len(held)

    async def send_job(self, message_id: ObjectId, phone_number_id: str) -> None:
        """The job of one send, on its number's queue (declared before the first one)."""
        try:
            await self._broker.declare_once(topology.number_sends(phone_number_id)(self._names))
        except BrokerUnavailableError as exc:
            raise PublishFailedError("broker_unavailable", str(exc)) from exc
        await self._publisher.publish(
            self._names.outbound_exchange,
            phone_number_id,
            orjson.dumps({"message_id": str(message_id)}),
            message_id=str(message_id),
            content_type="application/json",
        )

    async def queue_read(self, channel_id: ObjectId, wamid: str) -> None:
        """Tell Meta (through the sender) that ``wamid`` and the messages before it were read.
        A courtesy: if the broker is away, it is logged and skipped."""
        job = {"kind": "read", "channel_id": str(channel_id), "wamid": wamid}
        try:
            await self._publish(job, f"read:{wamid}")
        except PublishFailedError as exc:
            log.warning("outbound.read_receipt_skipped", wamid=wamid, error=str(exc))

    async def _publish(self, job: dict[str, str], message_id: str) -> None:
        """A job on the shared outbound queue (read receipts)."""
        await self._publisher.publish(
            self._names.outbound_exchange,
            OUTBOUND_ROUTING_KEY,
            orjson.dumps(job),
            message_id=message_id,
            content_type="application/json",
        )

    async def _queue(self, doc: Document) -> None:
        try:
            await self.send_job(doc["_id"], doc["phone_number_id"])
        except PublishFailedError as exc:
            log.warning("outbound.queue_failed", message_id=str(doc["_id"]), error=str(exc))
            raise ApiError(
                503,
                "broker_unavailable",
                f"the message is stored ({doc['_id']}) but could not be queued for sending "
                f"({exc}); send the same request again with the same Idempotency-Key",
                {"message_id": str(doc["_id"])},
            ) from exc
        log.info("outbound.queued", message_id=str(doc["_id"]), type=doc["type"])


def _check_window(last_inbound_at: datetime | None) -> None:
    if last_inbound_at is None:
        raise OutsideWindowError(None)
    closes = last_inbound_at + SERVICE_WINDOW
    if datetime.now(UTC) >= closes:
        raise OutsideWindowError(closes)
