"""Webhook bodies as the consumer receives them, and the business-account webhooks (template
status, number quality) in Meta's exact format, which the sandbox does not send."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import orjson

from inbox_common.contracts.delivery import WebhookDelivery


def delivery_of(body: dict[str, Any] | bytes, *, request_id: str = "") -> WebhookDelivery:
    """The delivery webhook-ingest would publish for ``body`` (a dict is JSON-encoded)."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return WebhookDelivery(
        sha256=hashlib.sha256(raw).hexdigest(),
        request_id=request_id or uuid4().hex,
        received_at=datetime.now(UTC),
        body=raw,
    )


def entries(*bodies: dict[str, Any]) -> dict[str, Any]:
    """One webhook body batching the entries of several ``payloads.webhook`` bodies."""
    return {
        "object": "whatsapp_business_account",
        "entry": [entry for body in bodies for entry in body["entry"]],
    }


# Meta's example values (its webhook reference pages).
TEMPLATE_ID = 1689556908129832
WEBHOOK_TIME = 1739321024


def account_webhook(
    waba_id: str, field: str, value: dict[str, Any], *, time: int
) -> dict[str, Any]:
    """A whole business-account webhook body: one entry (the WABA, with Meta's ``time``) and
    one change, in the key order Meta writes."""
    return {
        "entry": [{"id": waba_id, "time": time, "changes": [{"value": value, "field": field}]}],
        "object": "whatsapp_business_account",
    }


def template_status(
    waba_id: str,
    *,
    event: str,
    name: str,
    language: str = "en_US",
    template_id: int = TEMPLATE_ID,
    reason: str | None = "NONE",
    category: str = "MARKETING",
    other_info: dict[str, str] | None = None,
    disable_date: int | None = None,
    time: int = WEBHOOK_TIME,
) -> dict[str, Any]:
    """A ``message_template_status_update`` body. Meta sends ``reason`` ``NONE`` unless the
    template was rejected (then the rejection reason), ``disable_info`` only for a disabled
    template and ``other_info`` only for a pause or unpause (``FIRST_PAUSE``...)."""
    value: dict[str, Any] = {
        "event": event,
        "message_template_id": template_id,
        "message_template_name": name,
        "message_template_language": language,
        "reason": reason,
        "message_template_category": category,
    }
    if disable_date is not None:
        value["disable_info"] = {"disable_date": str(disable_date)}
    if other_info is not None:
        value["other_info"] = other_info
    return account_webhook(waba_id, "message_template_status_update", value, time=time)


def quality_update(
    waba_id: str,
    *,
    display_phone_number: str,
    event: str,
    current_limit: str,
    old_limit: str | None = None,
    max_daily_conversations_per_business: str | None = None,
    time: int = WEBHOOK_TIME,
) -> dict[str, Any]:
    """A ``phone_number_quality_update`` body: ``old_limit`` only for a limit change, as
    Meta sends it."""
    value: dict[str, Any] = {"display_phone_number": display_phone_number, "event": event}
    if old_limit is not None:
        value["old_limit"] = old_limit
    value["current_limit"] = current_limit
    if max_daily_conversations_per_business is not None:
        value["max_daily_conversations_per_business"] = max_daily_conversations_per_business
    return account_webhook(waba_id, "phone_number_quality_update", value, time=time)
