"""Webhook bodies as the consumer receives them."""

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
