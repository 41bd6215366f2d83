"""The AMQP messages that carry webhook bodies from webhook-ingest to their consumers.

Every body travels byte for byte as Meta sent it, with its own identity: sha256, request id
and receive time. Two shapes:

- one body: the AMQP body is the webhook body; ``message_id`` is its sha256 and the headers
  ``sha256``, ``request_id`` and ``received_at`` carry its identity, and ``traceparent`` the
  trace of the request that brought it;
- a micro-batch (several requests that reached webhook-ingest in the same event-loop tick):
  the AMQP body is the bodies concatenated; the header ``batch`` lists, in order, one table
  per body with ``sha256``, ``request_id``, ``received_at``, ``traceparent`` (when the body
  has one) and ``size`` (bytes);
  ``message_id`` is ``batch-`` plus the sha256 of the bodies' sha256s.

Both are persistent and published with confirms; a consumer reads either with
:func:`deliveries_from_amqp`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from inbox_common.tracing import TRACEPARENT, trace_id_of

BATCH_HEADER = "batch"


def delivery_headers(
    sha256: str, request_id: str, received_at: datetime, traceparent: str = ""
) -> dict[str, str]:
    """The AMQP headers that identify one webhook body (see :class:`WebhookDelivery`)."""
    headers = {"sha256": sha256, "request_id": request_id, "received_at": received_at.isoformat()}
    if traceparent:
        headers[TRACEPARENT] = traceparent
    return headers


class InvalidDelivery(ValueError):  # noqa: N818 - a kind of ValueError, named for what it is
    """The AMQP message is not a webhook delivery (headers missing or malformed)."""


class WebhookDelivery(BaseModel):
    model_config = ConfigDict(frozen=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    request_id: str = ""
    received_at: datetime
    body: bytes
    # The W3C trace context of the request that brought the body ('' when none).
    traceparent: str = ""

    @field_validator("received_at")
    @classmethod
    def _in_utc_range(cls, value: datetime) -> datetime:
        try:
            return value.astimezone(UTC)
        except (OverflowError, ValueError):
            raise ValueError("received_at is out of range") from None

    def headers(self) -> dict[str, str]:
        return delivery_headers(self.sha256, self.request_id, self.received_at, self.traceparent)

    def intact(self) -> bool:
        """Whether the body still hashes to its sha256 (it was not altered in transit)."""
        return hashlib.sha256(self.body).hexdigest() == self.sha256

    @classmethod
    def from_amqp(cls, body: bytes, headers: dict[str, Any] | None) -> WebhookDelivery:
        """Rebuild a one-body delivery from an AMQP body and headers, or raise InvalidDelivery."""
        return _delivery(body, headers or {}, where="header")


def batch_message(deliveries: Sequence[WebhookDelivery]) -> tuple[bytes, dict[str, Any], str]:
    """The AMQP body, headers and message_id of a micro-batch of ``deliveries``."""
    entries = [{**d.headers(), "size": len(d.body)} for d in deliveries]
    digest = hashlib.sha256("".join(d.sha256 for d in deliveries).encode()).hexdigest()
    return b"".join(d.body for d in deliveries), {BATCH_HEADER: entries}, f"batch-{digest}"


def deliveries_from_amqp(body: bytes, headers: dict[str, Any] | None) -> list[WebhookDelivery]:
    """Every delivery an AMQP message carries (one, or a micro-batch), in order."""
    headers = headers or {}
    entries = headers.get(BATCH_HEADER)
    if entries is None:
        return [_delivery(body, headers, where="header")]
    if not isinstance(entries, list) or not entries:
        raise InvalidDelivery("header batch must be a non-empty list of tables")
    deliveries = []
    offset = 0
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("size"), int):
            raise InvalidDelivery(f"batch entry {index} must be a table with an integer size")
        size = entry["size"]
        if size < 0 or offset + size > len(body):
            raise InvalidDelivery(f"batch entry {index} overruns the body")
        deliveries.append(
            _delivery(body[offset : offset + size], entry, where=f"batch entry {index}")
        )
        offset += size
    if offset != len(body):
        raise InvalidDelivery(f"the batch sizes add up to {offset} bytes, the body has {len(body)}")
    return deliveries


def _delivery(body: bytes, fields: dict[str, Any], *, where: str) -> WebhookDelivery:
    raw = {
        k: v.decode("utf-8", "replace") if isinstance(v, bytes) else v for k, v in fields.items()
    }
    try:
        return WebhookDelivery(
            sha256=raw.get("sha256", ""),
            request_id=str(raw.get("request_id") or ""),
            received_at=raw.get("received_at") or datetime.now(UTC),
            body=body,
            # Tracing never costs a body: a malformed trace context is dropped, not refused.
            traceparent=traceparent
            if trace_id_of(traceparent := str(raw.get(TRACEPARENT) or ""))
            else "",
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidDelivery(
            f"{where} {first['loc'][0]!s}: {first['msg']}; publish webhooks through "
            "webhook-ingest, which sets sha256, request_id and received_at"
        ) from None
