"""Opaque cursors: a position (timestamp, id) in a sorted listing, base64url-encoded."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime

import orjson
from bson import ObjectId
from bson.errors import InvalidId

from inbox_common.http import ApiError

_LIMIT = re.compile(r"[0-9]{1,4}")  # ASCII digits only (str.isdigit also takes "²")
DEFAULT_LIMIT = 50
_BAD_CURSOR = (
    binascii.Error,
    orjson.JSONDecodeError,
    ValueError,
    TypeError,
    OverflowError,
    InvalidId,
)
MAX_LIMIT = 200


def encode(at: datetime | None, oid: ObjectId) -> str:
    raw = orjson.dumps([at.isoformat() if at else None, str(oid)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> tuple[datetime | None, ObjectId]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, oid = orjson.loads(raw)
        return (datetime.fromisoformat(at).astimezone(UTC) if at else None, ObjectId(oid))
    except _BAD_CURSOR:
        raise ApiError(
            400, "invalid_cursor", "cursor is not one this API returned; start again without it"
        ) from None


def decode_position(cursor: str) -> tuple[datetime, ObjectId]:
    """A cursor that must carry a timestamp (conversations, messages)."""
    at, oid = decode(cursor)
    if at is None:
        raise ApiError(400, "invalid_cursor", "this cursor belongs to another listing")
    return at, oid


def limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    if not _LIMIT.fullmatch(value) or not 1 <= int(value) <= MAX_LIMIT:
        raise ApiError(
            400,
            "invalid_limit",
            f"limit must be an integer from 1 to {MAX_LIMIT}",
            {"field": "limit"},
        )
    return int(value)


def object_id(value: str, what: str, *, status: int = 404) -> ObjectId:
    """Parse an id: in a path a malformed id is simply not found (404); in a filter it is a
    bad request (``status=400``)."""
    try:
        return ObjectId(value)
    except (InvalidId, TypeError):
        if status == 404:
            raise ApiError(404, "not_found", f"no {what} with id {value[:64]!r}") from None
        raise ApiError(
            status, "invalid_id", f"{value[:64]!r} is not a {what} id", {"field": f"{what}_id"}
        ) from None
