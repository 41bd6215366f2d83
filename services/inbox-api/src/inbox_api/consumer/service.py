"""Applies webhook deliveries to the store: their content, then their ledger entry.

Knows nothing of AMQP: it takes :class:`WebhookDelivery` objects and the stores, so it is
tested directly against a real MongoDB-wire server. Every write is idempotent, so running
it again for the same body (a redelivery, a replay) changes nothing that one run did not.

:meth:`WebhookProcessor.process` calls (the bodies of every AMQP message the consumer holds,
one-body or micro-batch alike) are grouped into one :meth:`~WebhookProcessor.process_many`
per flush, with a bounded number of flushes in flight (adaptive: the number that moves the
most bodies per second on this store); bodies that arrive while the store is busy wait and
go together in the next flush. A flush costs: one indexed read of the ledger (which bodies
were processed already), the messages and the contacts, then the conversations (after the
messages: a conversation never shows the preview or unread mark of a message whose write
failed), then one insert of the ledger entries with their fates. An entry says
``processed`` only once its content was written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bson.errors import BSONError
from pymongo.errors import PyMongoError

from inbox_api.consumer.statuses import rank
from inbox_api.previews import clip, preview
from inbox_api.store.inbox import Inbox, Touch, Writes, reaction_op, status_op
from inbox_api.store.storable import TOO_DEEP, storable
from inbox_common.batching import AdaptiveConcurrency, Coalescer, Concurrency
from inbox_common.contracts.delivery import WebhookDelivery
from inbox_common.contracts.webhook import (
    ChangeEvent,
    InboundMessage,
    InvalidEnvelope,
    MessageStatus,
    iter_changes,
    parse_envelope,
)
from inbox_common.logging import get_logger
from inbox_common.store.channels import Channels
from inbox_common.store.client import Database, Document, is_transient
from inbox_common.store.ledger import FAILED, PROCESSED, Fate, Ledger

log = get_logger(__name__)

MAX_BATCH = 128


# What the store (or BSON) raises for data it will not take: such a body is recorded as
# failed, alone, and its batch goes on. BSON raises OverflowError for an integer beyond 64
# bits. Anything else (TypeError, KeyError, ValueError...) is a bug: it is not the input's
# fault, so it never marks a body failed; its batch-mates are applied without it, and it is
# raised for the consumer to log, count and requeue.
REFUSALS = (PyMongoError, BSONError, OverflowError)


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, PyMongoError) and is_transient(exc)


class Outcome(StrEnum):
    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Stores:
    ledger: Ledger
    channels: Channels
    inbox: Inbox

    @classmethod
    def of(cls, db: Database) -> Stores:
        return cls(Ledger(db), Channels(db), Inbox(db))


@dataclass(slots=True)
class _Body:
    """What one body's changes touched, to record its fate."""

    phone_number_ids: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


class WebhookProcessor:
    def __init__(
        self,
        stores: Stores,
        *,
        max_batch: int = MAX_BATCH,
        concurrency: Concurrency | None = None,
    ) -> None:
        self._stores = stores
        self._batches: Coalescer[WebhookDelivery, Outcome] = Coalescer(
            self._flush,
            max_items=max_batch,
            concurrency=concurrency or AdaptiveConcurrency(1, 4),
        )

    async def process(self, delivery: WebhookDelivery) -> Outcome:
        """Apply ``delivery`` and record it in the ledger, together with the deliveries
        waiting at the same time; see the module docstring."""
        return await self._batches.submit(delivery)

    async def _flush(self, deliveries: Sequence[WebhookDelivery]) -> list[Outcome | BaseException]:
        """Process a batch; a body the store refuses (or that trips a bug) must not hold back
        the others."""
        try:
            return list(await self.process_many(deliveries))
        except REFUSALS as exc:
            if _transient(exc):
                raise  # the store is down: every body of the batch waits for it
            if len(deliveries) == 1:
                return [await self._refused(deliveries[0], exc)]
        except Exception as exc:
            if len(deliveries) == 1:
                _log_crash(deliveries[0], exc)
                raise  # a bug: the consumer logs it with its traceback and requeues
        results: list[Outcome | BaseException] = []
        for delivery in deliveries:  # find the body at fault: each on its own
            try:
                results.extend(await self.process_many([delivery]))
            except REFUSALS as exc:
                results.append(exc if _transient(exc) else await self._refused(delivery, exc))
            except Exception as exc:
                _log_crash(delivery, exc)
                results.append(exc)
        return results

    async def _refused(self, delivery: WebhookDelivery, exc: Exception) -> Outcome:
        """Record a body the store cannot take as failed (it stays in the ledger, raw)."""
        log.warning(
            "webhook.store_refused",
            sha256=delivery.sha256,
            request_id=delivery.request_id,
            error=f"{type(exc).__name__}: {exc}"[:500],
        )
        error = {"code": "store_refused", "message": f"{type(exc).__name__}: {exc}"[:500]}
        # If not even the ledger takes it, this raises: the consumer dead-letters the message.
        await self._stores.ledger.record([Fate(delivery, FAILED, [], error)])
        return Outcome.FAILED

    async def process_many(self, deliveries: Sequence[WebhookDelivery]) -> list[Outcome]:
        """Record and apply ``deliveries``; one outcome each, in order.

        A store error fails the whole batch (raised); running it again is safe.
        """
        stores = self._stores
        processed = await stores.ledger.processed_among([d.sha256 for d in deliveries])
        outcomes: list[Outcome] = []
        seen: set[str] = set()
        writes = Writes()
        fates: list[Fate] = []
        duplicates: list[str] = []
        for delivery in deliveries:
            if delivery.sha256 in seen or delivery.sha256 in processed:
                outcomes.append(Outcome.DUPLICATE)
                duplicates.append(delivery.sha256)
                continue
            seen.add(delivery.sha256)
            fate = await self._plan(delivery, writes)
            fates.append(fate)
            outcomes.append(Outcome.PROCESSED if fate.status == PROCESSED else Outcome.FAILED)
        if writes:
            await stores.inbox.write(writes)
        if fates:
            await stores.ledger.record(fates)
        await stores.ledger.count_attempts(duplicates)
        return outcomes

    async def _plan(self, delivery: WebhookDelivery, writes: Writes) -> Fate:
        ids = {"sha256": delivery.sha256, "request_id": delivery.request_id}
        try:
            envelope = parse_envelope(delivery.body)
        except InvalidEnvelope as exc:
            log.warning("webhook.invalid_payload", reason=exc.reason, error=str(exc), **ids)
            return Fate(
                delivery,
                FAILED,
                [],
                {"code": f"invalid_payload:{exc.reason}", "message": str(exc)},
            )
        body = _Body()
        for change in iter_changes(envelope):
            await self._plan_change(change, body, writes, ids)
        if body.unknown:
            numbers = ", ".join(sorted(set(body.unknown)))
            wamids = [
                wamid
                for change in iter_changes(envelope)
                for wamid in (
                    *(m.id for m in change.messages),
                    *(s.id for s in change.statuses),
                )
            ]
            log.warning(
                "webhook.unknown_channel", phone_number_ids=numbers, wamids=wamids[:20], **ids
            )
            return Fate(
                delivery,
                FAILED,
                body.phone_number_ids,
                {
                    "code": "unknown_channel",
                    "message": f"no channel has phone_number_id {numbers}; create it "
                    "(POST /api/channels), which replays this event",
                },
            )
        return Fate(delivery, PROCESSED, body.phone_number_ids)

    async def _plan_change(
        self, change: ChangeEvent, body: _Body, writes: Writes, ids: dict[str, str]
    ) -> None:
        if change.field != "messages" or change.phone_number_id is None:
            # Other subscriptions (templates, account updates) are kept in the ledger only.
            return
        number = change.phone_number_id
        if number not in body.phone_number_ids:
            body.phone_number_ids.append(number)
        channel = await self._stores.channels.by_phone_number_id(number)
        if channel is None:
            body.unknown.append(number)
            return
        names: dict[str, str | None] = {}
        for contact in change.contacts:
            identity = contact.wa_id or contact.user_id
            if identity:
                name = contact.profile.name if contact.profile else None
                names[identity] = name
                writes.contact(channel, identity, user_id=contact.user_id, name=name)
        where = {"phone_number_id": number, **ids}
        for message in change.messages:
            log.debug("webhook.message", wamid=message.id, type=message.type, **where)
            _plan_message(channel, message, names, writes)
        for status in change.statuses:
            log.debug("webhook.status", wamid=status.id, status=status.status, **where)
            writes.messages.append(_status(channel, status))


def _log_crash(delivery: WebhookDelivery, exc: Exception) -> None:
    """Name the body a bug hit (the consumer logs the traceback, with the AMQP message's ids)."""
    log.error(
        "webhook.crashed",
        sha256=delivery.sha256,
        request_id=delivery.request_id,
        exception=type(exc).__name__,
        error=str(exc)[:300],
    )


def _plan_message(
    channel: Document, message: InboundMessage, names: dict[str, str | None], writes: Writes
) -> None:
    sender = message.from_ or message.from_user_id or ""
    reaction = message.reaction if message.type == "reaction" else None
    content, preview = _content_and_preview(message)
    conversation = writes.touch(
        channel,
        sender,
        name=names.get(sender),
        # A reaction decorates its target: no unread count, no new preview.
        touch=Touch(message.id, message.timestamp, None if reaction else preview, True),
    )
    if reaction is not None and reaction.message_id:
        writes.messages.append(
            reaction_op(
                channel,
                reaction.message_id,
                by=sender,
                emoji=None if message.is_reaction_removal else reaction.emoji,
                at=message.timestamp,
                wamid=message.id,
            )
        )
        return
    doc: dict[str, Any] = {
        "wamid": message.id,
        "conversation_id": conversation,
        "direction": "inbound",
        "from": sender,
        "type": message.type,
        "content": content,
        "reply_to": message.reply_to,
        "timestamp": message.timestamp,
    }
    if message.context is not None and (
        message.context.forwarded or message.context.frequently_forwarded
    ):
        doc["forwarded"] = True
    writes.message(channel, doc, status="received")


def _content_and_preview(message: InboundMessage) -> tuple[dict[str, Any], str]:
    try:
        return storable(message.content), preview(message)
    except (ValueError, RecursionError):
        # Nesting too deep even to serialize (pydantic refuses it): keep the message, point
        # at the raw body.
        return {"unstorable": TOO_DEEP}, clip(f"[{message.type}]")


def _status(channel: Document, status: MessageStatus) -> Any:
    entry: dict[str, Any] = {"status": status.status, "timestamp": status.timestamp}
    if status.errors:
        entry["errors"] = [e.model_dump(mode="json", exclude_none=True) for e in status.errors]
    if status.recipient_id:
        entry["recipient_id"] = status.recipient_id
    return status_op(channel, status.id, entry=storable(entry), rank=rank(status.status))
