"""Turning the webhook bodies of one flush into one set of writes.

Three passes over the flush, so each kind of store work is done once for all its bodies:

1. **Parse** each body and look up the channel of each of its ``messages`` changes (a
   cached read). A body that is not a webhook gets its ``failed`` fate here.
2. **Identities**: the people the changes name. Identity changes Meta reports as ``system``
   messages are applied first (so the messages of the same flush already find the person
   under the new identifiers), then every other person is resolved to a contact with one
   read per channel (``inbox_common.store.identities``): a phone, a BSUID or both, linked as
   soon as one webhook carries both.
3. **Writes**: messages into their contact's conversation, statuses, reactions, edits and
   revokes onto their messages, contacts' names and usernames; each body's fate.

Besides ``messages``, the ``smb_message_echoes`` field is applied: the messages the business
sent from the WhatsApp Business app (or edited, or deleted there). An echo is an outbound
message in the conversation of the customer it went to (``to``, resolved like a sender): it
moves the preview but adds no unread mark and does not open the 24-hour window.

The business-account fields (template status, number quality) are planned in pass 1 by
:mod:`inbox_api.consumer.accounts` into their own writes: they name no contact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pymongo import UpdateOne

from inbox_api.consumer.accounts import AccountPlanner, AccountWrites
from inbox_api.consumer.statuses import rank
from inbox_api.previews import DELETED_PREVIEW, clip, preview
from inbox_api.store.inbox import (
    Revision,
    Touch,
    Writes,
    edit_op,
    reaction_op,
    revoke_op,
    status_op,
)
from inbox_api.store.storable import TOO_DEEP, storable
from inbox_common.contracts.delivery import WebhookDelivery
from inbox_common.contracts.webhook import (
    ACCOUNT_FIELDS,
    ChangeEvent,
    Contact,
    InboundMessage,
    InvalidEnvelope,
    MessageContent,
    MessageEcho,
    MessageStatus,
    iter_changes,
    parse_envelope,
)
from inbox_common.logging import get_logger
from inbox_common.store.channels import Channels
from inbox_common.store.client import Document
from inbox_common.store.identities import BSUID, ContactRef, Identities, Identity
from inbox_common.store.ledger import FAILED, PROCESSED, Fate
from inbox_common.store.outbound import error_record, message_of_callback
from inbox_common.whatsapp.classify import error_from_status_errors
from inbox_common.whatsapp.errors import Classification

log = get_logger(__name__)

IDENTITY_CHANGES = frozenset({"user_changed_number", "user_changed_user_id"})
# The fields whose changes reach the inbox; the business-account fields (ACCOUNT_FIELDS) go to
# account_events, and other subscriptions are kept in the ledger only.
APPLIED_FIELDS = frozenset({"messages", "smb_message_echoes"})
# Kinds of message that change an earlier one rather than add a bubble.
REVISIONS = frozenset({"edit", "revoke"})
ECHO_SOURCE = "business_app"
_NOT_DIGITS = re.compile(r"[^0-9]")


@dataclass(slots=True)
class Parsed:
    """One body after pass 1: its ``messages`` changes with their channel, or its fate."""

    delivery: WebhookDelivery
    changes: list[tuple[ChangeEvent, Document, People]] = field(default_factory=list)
    phone_number_ids: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)  # business-account changes off schema
    fate: Fate | None = None

    @property
    def ids(self) -> dict[str, str]:
        return {"sha256": self.delivery.sha256, "request_id": self.delivery.request_id}


@dataclass(slots=True)
class People:
    """Who a change names: each message's sender and each contact entry, as identities."""

    senders: dict[str, Identity] = field(default_factory=dict)  # by wamid
    recipients: dict[str, Identity] = field(default_factory=dict)  # of echoes, by wamid
    profiles: dict[Identity, Contact] = field(default_factory=dict)
    linked: list[Identity] = field(default_factory=list)  # statuses naming both ids


class Planner:
    def __init__(self, channels: Channels, identities: Identities) -> None:
        self._channels = channels
        self._identities = identities
        self._accounts = AccountPlanner(channels)

    async def plan(
        self, deliveries: list[WebhookDelivery], writes: Writes, accounts: AccountWrites
    ) -> list[Fate]:
        """The fate of each body (in order); their content is added to ``writes``, their
        business-account changes to ``accounts``."""
        parsed = [await self._parse(d, accounts) for d in deliveries]
        refs = await self._people(parsed, writes)
        fates = []
        for body in parsed:
            if body.fate is None:
                for change, channel, people in body.changes:
                    self._plan_change(body, change, channel, people, refs, writes)
                body.fate = _fate(body)
            fates.append(body.fate)
        return fates

    # --- pass 1 -----------------------------------------------------------------------------

    async def _parse(self, delivery: WebhookDelivery, accounts: AccountWrites) -> Parsed:
        body = Parsed(delivery)
        try:
            envelope = parse_envelope(delivery.body)
        except InvalidEnvelope as exc:
            log.warning("webhook.invalid_payload", reason=exc.reason, error=str(exc), **body.ids)
            error = {"code": f"invalid_payload:{exc.reason}", "message": str(exc)}
            body.fate = Fate(delivery, FAILED, [], error)
            return body
        for position, change in enumerate(iter_changes(envelope)):
            if change.field in ACCOUNT_FIELDS:
                await self._parse_account(body, position, change, accounts)
                continue
            if change.field not in APPLIED_FIELDS or change.phone_number_id is None:
                continue
            number = change.phone_number_id
            if number not in body.phone_number_ids:
                body.phone_number_ids.append(number)
            channel = await self._channels.by_phone_number_id(number)
            if channel is None:
                body.unknown.append(number)
                wamids = [m.id for m in (*change.messages, *change.echoes)]
                wamids += [s.id for s in change.statuses]
                log.warning(
                    "webhook.unknown_channel",
                    phone_number_id=number,
                    wamids=wamids[:20],
                    **body.ids,
                )
                continue
            body.changes.append((change, channel, people_of(change)))
        return body

    async def _parse_account(
        self, body: Parsed, position: int, change: ChangeEvent, accounts: AccountWrites
    ) -> None:
        try:
            await self._accounts.plan(body.delivery, position, change, accounts)
        except InvalidEnvelope as exc:
            log.warning("webhook.invalid_payload", reason=exc.reason, error=str(exc), **body.ids)
            body.invalid.append(str(exc))

    # --- pass 2 -----------------------------------------------------------------------------

    async def _people(
        self, parsed: list[Parsed], writes: Writes
    ) -> dict[tuple[Any, Identity], ContactRef]:
        by_channel: dict[Any, tuple[Document, list[Identity]]] = {}
        for body in parsed:
            for change, channel, people in body.changes:
                for message in change.messages:
                    if message.type == "system" and message.system is not None:
                        await self._apply_identity_change(channel, message, writes)
                named = by_channel.setdefault(channel["_id"], (channel, []))[1]
                named.extend(people.senders.values())
                named.extend(people.recipients.values())
                named.extend(people.profiles)
                named.extend(people.linked)
        refs: dict[tuple[Any, Identity], ContactRef] = {}
        for channel_id, (channel, identities) in by_channel.items():
            resolved = await self._identities.resolve_many(channel, identities)
            refs.update({(channel_id, i): ref for i, ref in resolved.items()})
        return refs

    async def _apply_identity_change(
        self, channel: Document, message: InboundMessage, writes: Writes
    ) -> None:
        system = message.system
        assert system is not None
        if system.type not in IDENTITY_CHANGES:
            return
        previous = Identity.of(message.from_, system.previous_user_id or message.from_user_id)
        new_phone = system.wa_id if system.type == "user_changed_number" else message.from_
        current = Identity.of(new_phone, system.user_id or message.from_user_id)
        log.info(
            "webhook.identity_changed",
            wamid=message.id,
            kind=system.type,
            phone_number_id=channel.get("phone_number_id"),
        )
        ref = await self._identities.change(
            channel, previous, current, at=message.timestamp, wamid=message.id, kind=system.type
        )
        # The conversation shows the new identifiers; no bubble, no unread mark.
        writes.touch(
            channel, ref, name=None, touch=Touch(message.id, message.timestamp, None, False)
        )

    # --- pass 3 -----------------------------------------------------------------------------

    def _plan_change(
        self,
        body: Parsed,
        change: ChangeEvent,
        channel: Document,
        people: People,
        refs: dict[tuple[Any, Identity], ContactRef],
        writes: Writes,
    ) -> None:
        where = {"phone_number_id": change.phone_number_id, **body.ids}
        for identity, contact in people.profiles.items():
            profile = contact.profile
            writes.contact(
                refs[(channel["_id"], identity)],
                name=profile.name if profile else None,
                username=profile.username if profile else None,
                parent_user_id=contact.parent_user_id,
            )
        for message in change.messages:
            log.debug("webhook.message", wamid=message.id, type=message.type, **where)
            if message.type == "system" and message.system is not None:
                continue  # applied to the contact in pass 2
            sender = people.senders.get(message.id)
            if not sender:
                log.warning("webhook.message_without_sender", wamid=message.id, **where)
                continue
            name, username = _profile(people, sender)
            ref = refs[(channel["_id"], sender)]
            if message.type in REVISIONS:
                _plan_revision(channel, ref, message, writes, where, name=name, username=username)
            else:
                _plan_message(channel, ref, message, name, username, writes)
        for echo in change.echoes:
            log.debug("webhook.echo", wamid=echo.id, type=echo.type, **where)
            recipient = people.recipients.get(echo.id)
            if not recipient:
                log.warning("webhook.echo_without_recipient", wamid=echo.id, **where)
                continue
            _plan_echo(channel, refs[(channel["_id"], recipient)], echo, writes, where)
        for status in change.statuses:
            log.debug("webhook.status", wamid=status.id, status=status.status, **where)
            writes.messages.append(_status(channel, status, writes))
            writes.statuses.append((channel["tenant"], status.id, status.status))


def people_of(change: ChangeEvent) -> People:
    """The identities a change names (see :class:`People`).

    A message's sender is named by ``from`` (phone) and ``from_user_id`` (BSUID); the contact
    entry that shares either completes it, so an older webhook that gives only ``from`` still
    links the BSUID its contact entry carries.
    """
    people = People()
    entries = [(Identity.of(c.wa_id, c.user_id), c) for c in change.contacts]
    for identity, contact in entries:
        if identity:
            people.profiles[identity] = contact
    for message in change.messages:
        own = Identity.of(message.from_, message.from_user_id)
        for identity, _ in entries:
            if _shares(own, identity):
                own = Identity(own.wa_id or identity.wa_id, own.user_id or identity.user_id)
        if own:
            people.senders[message.id] = own
    for echo in change.echoes:
        recipient = recipient_of(echo)
        if recipient:
            people.recipients[echo.id] = recipient
    for status in change.statuses:
        both = Identity.of(status.recipient_id, status.recipient_user_id)
        if both.wa_id and both.user_id:
            people.linked.append(both)  # a status that names both links them
    return people


def recipient_of(echo: MessageEcho) -> Identity:
    """The customer an echo went to: ``to`` is the number as the business typed it in the
    app (Meta's example is ``+16505551234``), so only its digits are the phone (a BSUID given
    there is kept as one); ``to_user_id`` is the BSUID."""
    phone = echo.to
    if phone and not BSUID.match(phone):
        phone = _NOT_DIGITS.sub("", phone)
    return Identity.of(phone, echo.to_user_id)


def _shares(a: Identity, b: Identity) -> bool:
    return bool((a.wa_id and a.wa_id == b.wa_id) or (a.user_id and a.user_id == b.user_id))


def _profile(people: People, sender: Identity) -> tuple[str | None, str | None]:
    """The sender's name and username, from the contact entry that names them."""
    for identity, contact in people.profiles.items():
        if _shares(identity, sender) and contact.profile:
            return contact.profile.name, contact.profile.username
    return None, None


def _fate(body: Parsed) -> Fate:
    if body.unknown:
        numbers = ", ".join(sorted(set(body.unknown)))
        error = {
            "code": "unknown_channel",
            "message": f"no channel has phone_number_id {numbers}; create it "
            "(POST /api/channels), which replays this event",
        }
        return Fate(body.delivery, FAILED, body.phone_number_ids, error)
    if body.invalid:
        error = {"code": "invalid_payload:schema", "message": "; ".join(body.invalid)[:1000]}
        return Fate(body.delivery, FAILED, body.phone_number_ids, error)
    return Fate(body.delivery, PROCESSED, body.phone_number_ids)


def _plan_message(
    channel: Document,
    ref: ContactRef,
    message: InboundMessage,
    name: str | None,
    username: str | None,
    writes: Writes,
) -> None:
    sender = message.from_ or message.from_user_id or ref.wa_id or ref.user_id or ""
    reaction = message.reaction if message.type == "reaction" else None
    content, summary = _content_and_preview(message)
    conversation = writes.touch(
        channel,
        ref,
        name=name,
        username=username,
        # A reaction decorates its target: no unread count, no new preview.
        touch=Touch(message.id, message.timestamp, None if reaction else summary, True),
    )
    if reaction is not None and reaction.message_id:
        writes.messages.append(_reaction(channel, message, reaction.message_id, by=sender))
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


def _reaction(channel: Document, message: InboundMessage, target: str, *, by: str) -> UpdateOne:
    """The write of ``message``, a reaction (or its removal) by ``by`` to message ``target``."""
    assert message.reaction is not None
    return reaction_op(
        channel,
        target,
        by=by,
        emoji=None if message.is_reaction_removal else message.reaction.emoji,
        at=message.timestamp,
        wamid=message.id,
    )


def _plan_echo(
    channel: Document, ref: ContactRef, echo: MessageEcho, writes: Writes, where: dict[str, Any]
) -> None:
    """A message the business sent from the WhatsApp Business app: an outbound message Meta
    already accepted, in the customer's conversation (its preview moves; no unread mark, and
    the 24-hour window stays as it is: only the customer opens it)."""
    if echo.type in REVISIONS:
        _plan_revision(channel, ref, echo, writes, where)
        return
    business = echo.from_ or channel.get("display_phone_number") or ""
    reaction = echo.reaction if echo.type == "reaction" else None
    content, summary = _content_and_preview(echo)
    conversation = writes.touch(
        channel,
        ref,
        name=None,
        touch=Touch(echo.id, echo.timestamp, None if reaction else summary, False),
    )
    if reaction is not None:
        if reaction.message_id:
            writes.messages.append(_reaction(channel, echo, reaction.message_id, by=business))
        return
    recipient = recipient_of(echo)
    doc: dict[str, Any] = {
        "wamid": echo.id,
        "conversation_id": conversation,
        "direction": "outbound",
        "from": business,
        "recipient": {"wa_id": recipient.wa_id, "user_id": recipient.user_id},
        "type": echo.type,
        "content": content,
        "reply_to": echo.reply_to,
        "timestamp": echo.timestamp,
        "send_state": "accepted",
        "source": ECHO_SOURCE,
    }
    writes.message(channel, doc, status="sent", status_rank=rank("sent"))


def _plan_revision(
    channel: Document,
    ref: ContactRef,
    message: InboundMessage,
    writes: Writes,
    where: dict[str, Any],
    *,
    name: str | None = None,
    username: str | None = None,
) -> None:
    """An ``edit`` or a ``revoke`` (the customer's, or the business's in an echo) changes the
    message it names: no bubble, no unread mark, no move of the 24-hour window (an edit comes
    within 15 minutes of its message, which opened it already). ``where`` names the body for
    the log."""
    if message.type == "edit":
        edit = message.edit
        target = edit.original_message_id if edit else None
        new = edit.message if edit else None
        if not target or new is None or not new.type:
            log.warning("webhook.edit_incomplete", wamid=message.id, original=target, **where)
            return
        content, summary = _content_and_preview(new)
        writes.messages.append(
            edit_op(
                channel, target, wamid=message.id, type_=new.type, content=content,
                at=message.timestamp,
            )
        )  # fmt: skip
        revision = Revision(target, message.timestamp, message.id, summary, deleted=False)
    else:
        target = message.revoke.original_message_id if message.revoke else None
        if not target:
            log.warning("webhook.revoke_incomplete", wamid=message.id, **where)
            return
        writes.messages.append(revoke_op(channel, target, at=message.timestamp))
        revision = Revision(target, message.timestamp, message.id, DELETED_PREVIEW, deleted=True)
    writes.touch(
        channel,
        ref,
        name=name,
        username=username,
        touch=Touch(message.id, message.timestamp, None, False),
        revision=revision,
    )
    writes.changed.append(target)


def _content_and_preview(message: MessageContent) -> tuple[dict[str, Any], str]:
    try:
        return storable(message.content), preview(message)
    except (ValueError, RecursionError):
        # Nesting too deep even to serialize (pydantic refuses it): keep the message, point
        # at the raw body.
        return {"unstorable": TOO_DEEP}, clip(f"[{message.type}]")


def _status(channel: Document, status: MessageStatus, writes: Writes) -> Any:
    entry: dict[str, Any] = {"status": status.status, "timestamp": status.timestamp}
    error = None
    if status.status == "failed":
        classified = error_from_status_errors(status.errors or [])
        error = error_record(classified)
        if classified.classification is Classification.STOP_CHANNEL:
            writes.stopped_channels[channel["_id"]] = (str(classified), classified.code)
    if status.errors:
        entry["errors"] = [e.model_dump(mode="json", exclude_none=True) for e in status.errors]
    if status.recipient_id:
        entry["recipient_id"] = status.recipient_id
    if status.recipient_user_id:
        entry["recipient_user_id"] = status.recipient_user_id
    return status_op(
        channel,
        status.id,
        entry=storable(entry),
        rank=rank(status.status),
        message_id=message_of_callback(status.biz_opaque_callback_data),
        error=error,
    )
