"""A live event: one change in the inbox, as it travels on the ``<ns>.live`` fanout exchange.

The body is JSON: ``{"id", "type", "tenant", "at", "data"}``. The publisher makes the id (an
ObjectId in hex): unique without coordination between replicas, and roughly time-ordered,
which is all a client needs to hand it back and resume. ``at`` is when it was published
(ISO 8601, UTC). Events are a UI nicety that the store does not depend on, so the exchange
carries them without persistence or confirms; a client that may have missed one is told to
refetch over REST.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from bson import ObjectId
from pydantic import BaseModel, ConfigDict, Field

# Not shown to clients: it closes the sessions opened with that token on every replica and
# makes every replica's token cache forget it. Data: {"token_hash": <sha256 hex>}.
TOKEN_REVOKED = "token.revoked"  # noqa: S105 - an event type, not a secret


class LiveEvent(BaseModel):
    """An event as a replica receives it from the exchange (what it checks before fanning
    it out: whatever reaches the exchange is input)."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1, max_length=64)
    type: str = Field(min_length=1, max_length=100)
    tenant: str = Field(min_length=1, max_length=200)
    at: str = Field(max_length=64)
    data: dict[str, Any]


def encode_event(tenant: str, type_: str, data: dict[str, Any]) -> tuple[str, bytes]:
    """A new event's id and body. Raises ``TypeError`` when ``data`` holds a value JSON
    cannot carry (ObjectIds become their hex; datetimes ISO 8601)."""
    event_id = str(ObjectId())
    body = orjson.dumps(
        {
            "id": event_id,
            "type": type_,
            "tenant": tenant,
            "at": datetime.now(UTC),
            "data": data,
        },
        default=_json_default,
    )
    return event_id, body


def _json_default(value: Any) -> Any:
    if isinstance(value, ObjectId):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
