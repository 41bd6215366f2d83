"""The AMQP message that carries one webhook body from webhook-ingest to its consumers.

The body travels byte for byte as Meta sent it; its identity (sha256, also the AMQP
``message_id``), request id and receive time ride in the headers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


def delivery_headers(sha256: str, request_id: str, received_at: datetime) -> dict[str, str]:
    """The AMQP headers that identify one webhook body (see :class:`WebhookDelivery`)."""
    return {"sha256": sha256, "request_id": request_id, "received_at": received_at.isoformat()}


class InvalidDelivery(ValueError):  # noqa: N818 - a kind of ValueError, named for what it is
    """The AMQP message is not a webhook delivery (headers missing or malformed)."""


class WebhookDelivery(BaseModel):
    model_config = ConfigDict(frozen=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    request_id: str = ""
    received_at: datetime
    body: bytes

    def headers(self) -> dict[str, str]:
        return delivery_headers(self.sha256, self.request_id, self.received_at)

    @classmethod
    def from_amqp(cls, body: bytes, headers: dict[str, Any] | None) -> WebhookDelivery:
        """Rebuild a delivery from an AMQP body and headers, or raise InvalidDelivery."""
        raw = {k: v.decode() if isinstance(v, bytes) else v for k, v in (headers or {}).items()}
        try:
            delivery = cls(
                sha256=raw.get("sha256", ""),
                request_id=str(raw.get("request_id") or ""),
                received_at=raw.get("received_at") or datetime.now(UTC),
                body=body,
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            raise InvalidDelivery(
                f"header {first['loc'][0]!s}: {first['msg']}; publish webhooks through "
                "webhook-ingest, which sets sha256, request_id and received_at"
            ) from None
        return delivery
