"""The status webhooks that follow an accepted send, in Meta's format.

An accepted message goes ``sent``, ``delivered`` and (when the customer sends read receipts)
``read``; one that fails later gets a single ``failed`` status with ``errors[]``. What each
status carries follows Meta's status webhook reference and its BSUID changes:

- ``recipient_id`` is the phone number the message went to; a message sent to a BSUID has it
  only when the number is known. ``recipient_user_id`` (the BSUID) is always there, except in
  the ``failed`` status of a message sent to a phone number.
- ``contacts[]`` comes with sent, delivered and read (never failed); ``profile.username`` only
  with delivered and read.
- ``pricing`` comes with ``sent`` and with the first of delivered or read; ``conversation``
  likewise, but only for API versions before v24.0 (``expiration_timestamp`` only on sent).
- ``biz_opaque_callback_data`` is echoed in every status of the message.

Timestamps are the moments the events happen, in order; the arrival order is the caller's
business (Meta does not guarantee it, and ``SANDBOX_WEBHOOK_SHUFFLE`` mimics that).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from inbox_sandbox import payloads
from inbox_sandbox.errors import failed_status_error
from inbox_sandbox.numbers import BusinessNumber

__all__ = ["AcceptedSend", "ScheduledStatus", "status_webhooks"]

# From this Graph API version on, Meta leaves ``conversation`` out of status webhooks.
NO_CONVERSATION_FROM = 24
_DAY = 24 * 3600


@dataclass(frozen=True, slots=True)
class AcceptedSend:
    """What the status webhooks of one accepted send need to know."""

    wamid: str
    number: BusinessNumber
    user_id: str
    wa_id: str | None
    to_phone: bool
    template: bool
    api_version: int
    biz_opaque_callback_data: str | None = None
    name: str | None = None
    username: str | None = None
    failure: int | None = None


@dataclass(frozen=True, slots=True)
class ScheduledStatus:
    """One status webhook body and when (seconds after acceptance) it happens."""

    status: str
    at: float
    body: bytes


def status_webhooks(
    send: AcceptedSend, *, delays: tuple[float, float, float], read: bool, now: float | None = None
) -> list[ScheduledStatus]:
    """The status webhooks of ``send``, in the order their events happen."""
    accepted = time.time() if now is None else now
    if send.failure is not None:
        return [_scheduled(send, "failed", delays[0], accepted)]
    steps = [("sent", delays[0]), ("delivered", delays[1])]
    if read:
        steps.append(("read", delays[2]))
    return [_scheduled(send, status, at, accepted) for status, at in steps]


def _scheduled(send: AcceptedSend, status: str, at: float, accepted: float) -> ScheduledStatus:
    timestamp = int(accepted + at)
    failed = status == "failed"
    priced = status in ("sent", "delivered")
    statuses = [
        payloads.outbound_status(
            send.wamid,
            status,
            timestamp=timestamp,
            recipient_id=send.wa_id,
            recipient_user_id=None if failed and send.to_phone else send.user_id,
            biz_opaque_callback_data=send.biz_opaque_callback_data,
            conversation=_conversation(send, status, timestamp) if priced else None,
            pricing=_pricing(send) if priced else None,
            errors=[failed_status_error(send.failure)] if send.failure is not None else None,
        )
    ]
    contacts = []
    if not failed:
        contacts.append(
            payloads.user_contact(
                send.user_id,
                wa_id=send.wa_id,
                name=send.name,
                username=send.username if status != "sent" else None,
            )
        )
    body = payloads.webhook(
        send.number.phone_number_id,
        display_phone_number=send.number.webhook_number,
        waba_id=send.number.waba_id,
        contacts=contacts,
        statuses=statuses,
    )
    return ScheduledStatus(status, at, orjson.dumps(body))


def _category(send: AcceptedSend) -> str:
    # The sandbox does not know a template's category; campaigns are what it mostly carries.
    return "marketing" if send.template else "service"


def _pricing(send: AcceptedSend) -> dict[str, Any]:
    # Non-template messages only go out inside a service window, where they are free.
    return {
        "billable": send.template,
        "pricing_model": "PMP",
        "type": "regular" if send.template else "free_customer_service",
        "category": _category(send),
    }


def _conversation(send: AcceptedSend, status: str, timestamp: int) -> dict[str, Any] | None:
    if send.api_version >= NO_CONVERSATION_FROM:
        return None
    conversation: dict[str, Any] = {"id": uuid.uuid5(uuid.NAMESPACE_URL, send.wamid).hex}
    if status == "sent":
        conversation["expiration_timestamp"] = str(timestamp + _DAY)
    conversation["origin"] = {"type": _category(send)}
    return conversation
