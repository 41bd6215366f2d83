"""Planning Meta's business-account webhooks: template status and phone number quality.

These changes name a WhatsApp Business Account (the entry's id), not a number: there is no
``metadata.phone_number_id``. Their channels are the WABA's (``channels.waba_id``); a
quality update names its number by ``display_phone_number``, so it concerns the channels
that show that number, or, when none does (a display number written differently, a number
not connected here), every channel of the WABA: for a risk signal, pausing too much is the
safe side, and an operator resumes.

Each change becomes one ``account_events`` document per tenant of those channels (one with
no tenant and no channel when the WABA is unknown here: stored and logged, never failed, so
it is never retried for nothing), with an id derived from the body (see
``inbox_api.store.account_events``), so applying a body again writes nothing new.

A risk signal also pauses campaigns: a template PAUSED or DISABLED pauses the campaigns of
the WABA's channels that send that template (name and language); a number's quality FLAGGED
or DOWNGRADE pauses every campaign of its channels. Pausing is a compare-and-set from
scheduled or running (``Campaigns.auto_pause``), so doing it again for the same body pauses
nothing more and raises no second alert.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from bson import ObjectId

from inbox_api.store.account_events import event_id
from inbox_api.store.storable import storable
from inbox_common.contracts.delivery import WebhookDelivery
from inbox_common.contracts.webhook import (
    AccountUpdate,
    ChangeEvent,
    PhoneNumberQualityUpdate,
    TemplateStatusUpdate,
    account_update,
)
from inbox_common.logging import get_logger
from inbox_common.store.channels import Channels
from inbox_common.store.client import Document

log = get_logger(__name__)

# The events that pause campaigns, by field.
TEMPLATE_RISKS = frozenset({"PAUSED", "DISABLED"})
QUALITY_RISKS = frozenset({"FLAGGED", "DOWNGRADE"})
_NOT_DIGITS = re.compile(r"[^0-9]")


@dataclass(frozen=True, slots=True)
class Pause:
    """Campaigns to pause (``query``) because of a risk signal, and why."""

    query: Document
    signal: str
    reason: str
    tenant: str
    waba_id: str
    sha256: str
    request_id: str


@dataclass(slots=True)
class AccountWrites:
    """What the business-account changes of a flush write: their documents (by ``_id``),
    then the pauses they call for."""

    events: dict[ObjectId, Document] = field(default_factory=dict)
    pauses: list[Pause] = field(default_factory=list)
    # The channels of each WABA the flush named, read once per flush.
    wabas: dict[str, list[Document]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.events or self.pauses)


class AccountPlanner:
    def __init__(self, channels: Channels) -> None:
        self._channels = channels

    async def plan(
        self,
        delivery: WebhookDelivery,
        position: int,
        change: ChangeEvent,
        writes: AccountWrites,
    ) -> None:
        """Add the documents and pauses of ``change`` (the ``position``-th of the body) to
        ``writes``. Raises ``InvalidEnvelope`` when its value is not Meta's schema.

        The body's ledger entry keeps naming no number (``phone_number_ids`` are the numbers
        a body's changes name, and these name a WABA): its document refers to the entry by
        sha256 instead."""
        update = account_update(change)
        ids = {"sha256": delivery.sha256, "request_id": delivery.request_id}
        channels = writes.wabas.get(change.waba_id)
        if channels is None:
            channels = writes.wabas[change.waba_id] = await self._channels.of_waba(change.waba_id)
        if isinstance(update, PhoneNumberQualityUpdate):
            channels = _showing(channels, update.display_phone_number, change.waba_id, ids)
        log.info(
            "webhook.account_event",
            field=change.field,
            meta_event=update.event,
            waba_id=change.waba_id,
            channels=len(channels),
            **ids,
        )
        if not channels:
            log.warning("webhook.unknown_waba", waba_id=change.waba_id, field=change.field, **ids)
        by_tenant: dict[str | None, list[Document]] = {}
        for channel in channels:
            by_tenant.setdefault(channel["tenant"], []).append(channel)
        for tenant, own in list(by_tenant.items()) or [(None, [])]:
            doc = _document(delivery, position, change, update, tenant, own)
            writes.events[doc["_id"]] = doc
            pause = _pause(change.waba_id, update, tenant, own, ids)
            if pause is not None:
                writes.pauses.append(pause)


def _showing(
    channels: list[Document], number: str | None, waba_id: str, ids: dict[str, str]
) -> list[Document]:
    """The channels that show ``number`` (compared as digits), else all of ``channels``."""
    digits = _NOT_DIGITS.sub("", number or "")
    if not digits:
        return channels
    showing = [
        c for c in channels if _NOT_DIGITS.sub("", c.get("display_phone_number") or "") == digits
    ]
    if channels and not showing:
        log.warning(
            "webhook.account_number_unmatched",
            waba_id=waba_id,
            display_phone_number=digits,
            channels=len(channels),
            **ids,
        )
    return showing or channels


def _document(
    delivery: WebhookDelivery,
    position: int,
    change: ChangeEvent,
    update: AccountUpdate,
    tenant: str | None,
    channels: list[Document],
) -> Document:
    at: datetime = change.time or delivery.received_at
    template = quality = reason = None
    if isinstance(update, TemplateStatusUpdate):
        template = {
            "id": update.template_id,
            "name": update.message_template_name,
            "language": update.message_template_language,
        }
        reason = update.reason
    else:
        quality = {
            "display_phone_number": update.display_phone_number,
            "current_limit": update.current_limit,
            "old_limit": update.old_limit,
        }
    return {
        "_id": event_id(at, delivery.sha256, position, tenant),
        "tenant": tenant,
        "channel_ids": [c["_id"] for c in channels],
        "waba_id": change.waba_id,
        "field": change.field,
        "event": update.event,
        "template": template,
        "quality": quality,
        "reason": reason,
        "signal": _signal(update),
        "occurred_at": change.time,
        "received_at": delivery.received_at,
        "webhook_event": {"sha256": delivery.sha256, "request_id": delivery.request_id},
        # Meta's value as received (category, other_info, rejection_info, ...): the ledger
        # keeps the raw body only for 30 days.
        "value": storable(change.value.model_extra or {}),
    }


def _signal(update: AccountUpdate) -> str | None:
    """The risk signal an event is (``template_paused``, ``quality_flagged``...), or None."""
    if isinstance(update, TemplateStatusUpdate):
        return f"template_{update.event.lower()}" if update.event in TEMPLATE_RISKS else None
    return f"quality_{update.event.lower()}" if update.event in QUALITY_RISKS else None


def _pause(
    waba_id: str,
    update: AccountUpdate,
    tenant: str | None,
    channels: list[Document],
    ids: dict[str, str],
) -> Pause | None:
    signal = _signal(update)
    if signal is None or tenant is None or not channels:
        return None
    query: Document = {"tenant": tenant, "channel_id": {"$in": [c["_id"] for c in channels]}}
    if isinstance(update, TemplateStatusUpdate):
        name, language = update.message_template_name, update.message_template_language
        if not name:
            log.warning("webhook.template_event_without_name", waba_id=waba_id, **ids)
            return None
        query["template.name"] = name
        if language:
            # Meta writes en_US; a language written en-US means the same template.
            codes = sorted({language, language.replace("-", "_")})
            query["template.language.code"] = codes[0] if len(codes) == 1 else {"$in": codes}
        reason = _template_reason(update)
    else:
        reason = _quality_reason(update)
    return Pause(query, signal, reason, tenant, waba_id, **ids)


def _template_reason(update: TemplateStatusUpdate) -> str:
    """What happened to the template and what to do, with Meta's words when it gave some."""
    template = f"the template {update.message_template_name!r}"
    if update.message_template_language:
        template += f" ({update.message_template_language})"
    said = update.other_info.description if update.other_info else None
    if not said and update.reason and update.reason != "NONE":
        said = update.reason
    because = f" ({said})" if said else ""
    if update.event == "PAUSED":
        return (
            f"Meta paused {template} after negative feedback{because}. Meta lifts a pause "
            "after a few hours (a REINSTATED event); resume the campaign then, or move it to "
            "another approved template"
        )
    return (
        f"Meta disabled {template}{because}: it cannot be sent any more. Move the campaign "
        "to another approved template, or appeal in WhatsApp Manager, then resume it"
    )


def _quality_reason(update: PhoneNumberQualityUpdate) -> str:
    number = update.display_phone_number or "the number"
    if update.event == "FLAGGED":
        return (
            f"Meta flagged the quality of {number}: more negative feedback lowers its "
            "messaging limit. Check the campaign's content and audience before resuming it"
        )
    limits = f" to {update.current_limit}" if update.current_limit else ""
    if update.old_limit:
        limits += f" (from {update.old_limit})"
    return (
        f"Meta lowered the messaging limit of {number}{limits} after negative feedback. "
        "Check the campaign's content and audience, and its size against the new limit, "
        "before resuming it"
    )
