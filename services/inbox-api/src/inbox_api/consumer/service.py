"""Applies one webhook delivery to the store: ledger first, then its content.

Knows nothing of AMQP: it takes a :class:`WebhookDelivery` and the stores, so it is tested
directly against a real MongoDB-wire server. Every step is idempotent, so running it again
for the same body (a redelivery, a replay) changes nothing that one run did not.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from inbox_api.consumer.statuses import rank
from inbox_api.store.channels import Channels
from inbox_api.store.inbox import Inbox
from inbox_api.store.ledger import FAILED, PROCESSED, Ledger
from inbox_common.contracts.delivery import WebhookDelivery
from inbox_common.contracts.webhook import (
    ChangeEvent,
    InboundMessage,
    InvalidEnvelope,
    MessageStatus,
    iter_changes,
    parse_envelope,
)
from inbox_common.logging import bind_message_context, get_logger
from inbox_common.store.client import Document

log = get_logger(__name__)


class Outcome(StrEnum):
    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Stores:
    ledger: Ledger
    channels: Channels
    inbox: Inbox


@dataclass(slots=True)
class _Result:
    phone_number_ids: list[str]
    unknown: list[str]


class WebhookProcessor:
    def __init__(self, stores: Stores) -> None:
        self._stores = stores

    async def process(self, delivery: WebhookDelivery) -> Outcome:
        """Record ``delivery`` in the ledger and apply it; see the module docstring."""
        ledger = self._stores.ledger
        entry = await ledger.receive(delivery)
        if entry["status"] == PROCESSED:
            log.info("webhook.duplicate", attempts=entry.get("attempts"))
            return Outcome.DUPLICATE
        try:
            envelope = parse_envelope(delivery.body)
        except InvalidEnvelope as exc:
            await ledger.finish(
                delivery.sha256,
                status=FAILED,
                phone_number_ids=[],
                error={"code": f"invalid_payload:{exc.reason}", "message": str(exc)},
            )
            log.warning("webhook.invalid_payload", reason=exc.reason, error=str(exc))
            return Outcome.FAILED
        result = _Result(phone_number_ids=[], unknown=[])
        for change in iter_changes(envelope):
            await self._apply_change(change, result)
        if result.unknown:
            numbers = ", ".join(sorted(set(result.unknown)))
            await ledger.finish(
                delivery.sha256,
                status=FAILED,
                phone_number_ids=result.phone_number_ids,
                error={
                    "code": "unknown_channel",
                    "message": f"no channel has phone_number_id {numbers}; create it "
                    "(POST /api/channels) and replay this event",
                },
            )
            log.warning("webhook.unknown_channel", phone_number_ids=numbers)
            return Outcome.FAILED
        await ledger.finish(
            delivery.sha256, status=PROCESSED, phone_number_ids=result.phone_number_ids
        )
        return Outcome.PROCESSED

    async def _apply_change(self, change: ChangeEvent, result: _Result) -> None:
        if change.field != "messages" or change.phone_number_id is None:
            # Other subscriptions (templates, account updates) are kept in the ledger only.
            return
        number = change.phone_number_id
        if number not in result.phone_number_ids:
            result.phone_number_ids.append(number)
        channel = await self._stores.channels.by_phone_number_id(number)
        if channel is None:
            result.unknown.append(number)
            return
        names = {}
        for contact in change.contacts:
            identity = contact.wa_id or contact.user_id
            if identity:
                name = contact.profile.name if contact.profile else None
                names[identity] = name
                await self._stores.inbox.upsert_contact(
                    channel, identity, user_id=contact.user_id, name=name
                )
        for message in change.messages:
            await self._apply_message(channel, message, names)
        for status in change.statuses:
            await self._apply_status(channel, status)

    async def _apply_message(
        self, channel: Document, message: InboundMessage, names: dict[str, str | None]
    ) -> None:
        bind_message_context(wamid=message.id)
        sender = message.from_ or message.from_user_id or ""
        inbox = self._stores.inbox
        reaction = message.reaction if message.type == "reaction" else None
        conversation_id = await inbox.touch_conversation(
            channel,
            sender,
            name=names.get(sender),
            wamid=message.id,
            at=message.timestamp,
            # A reaction decorates its target: no unread count, no new preview.
            preview=None if reaction else message.preview,
            inbound=True,
        )
        if reaction is not None and reaction.message_id:
            await inbox.apply_reaction(
                channel,
                reaction.message_id,
                by=sender,
                emoji=None if message.is_reaction_removal else reaction.emoji,
                at=message.timestamp,
                wamid=message.id,
            )
            return
        doc: dict[str, Any] = {
            "wamid": message.id,
            "conversation_id": conversation_id,
            "direction": "inbound",
            "from": sender,
            "type": message.type,
            "content": message.content,
            "reply_to": message.reply_to,
            "timestamp": message.timestamp,
        }
        if message.context is not None and (
            message.context.forwarded or message.context.frequently_forwarded
        ):
            doc["forwarded"] = True
        await inbox.store_message(channel, doc, status="received")

    async def _apply_status(self, channel: Document, status: MessageStatus) -> None:
        bind_message_context(wamid=status.id)
        entry: dict[str, Any] = {"status": status.status, "timestamp": status.timestamp}
        if status.errors:
            entry["errors"] = [e.model_dump(mode="json", exclude_none=True) for e in status.errors]
        if status.recipient_id:
            entry["recipient_id"] = status.recipient_id
        await self._stores.inbox.apply_status(
            channel, status.id, entry=entry, rank=rank(status.status)
        )
