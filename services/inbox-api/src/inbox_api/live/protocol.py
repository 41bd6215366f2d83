"""The WebSocket protocol of ``GET /api/ws``: what a client sends, what it receives, and the
close codes that tell it what to do next.

Client → server (text frames, JSON):

- ``{"type": "auth", "token": "...", "last_event_id": "..."?}``: the first message, within a
  few seconds, unless the upgrade request carried ``Authorization: Bearer <token>``
  (browsers cannot set that header, and a token in the URL ends up in access logs).
- ``{"type": "ping"}``: answered with ``{"type": "pong"}`` (a browser cannot see the
  WebSocket pings the server sends, so it needs its own way to notice a dead connection).

Server → client: ``{"type": "ready", "last_event_id": <id or null>}`` once authenticated;
``{"type": "event", "event": {...}}`` for each event of the client's tenant;
``{"type": "reload", "reason": "..."}`` when the client may have missed events and should
refetch over REST.

Close codes: 4001 not authenticated (the reason says why; get a valid token), 1013 try again
later (too slow to keep up, or the token store is unreachable), 1001 the server is going
away (reconnect, with ``last_event_id``).
"""

from __future__ import annotations

from typing import Literal

import orjson
from aiohttp import WSCloseCode
from pydantic import BaseModel, Field

from inbox_api.live.events import LiveEvent

UNAUTHORIZED = 4001
TRY_AGAIN_LATER = int(WSCloseCode.TRY_AGAIN_LATER)
GOING_AWAY = int(WSCloseCode.GOING_AWAY)
# RFC 6455: a close frame's reason is at most 123 bytes of UTF-8.
_MAX_REASON_BYTES = 123

PONG = '{"type":"pong"}'


class AuthMessage(BaseModel):
    """The first message of a browser client. Its validation errors quote their input (the
    token), so they are never logged or echoed; the client gets a fixed explanation."""

    type: Literal["auth"]
    token: str = Field(max_length=512)
    last_event_id: str | None = Field(default=None, max_length=64)


def is_ping(text: str) -> bool:
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return isinstance(message, dict) and message.get("type") == "ping"


def ready_frame(last_event_id: str | None) -> str:
    return orjson.dumps({"type": "ready", "last_event_id": last_event_id}).decode()


def reload_frame(reason: str) -> str:
    return orjson.dumps({"type": "reload", "reason": reason}).decode()


def event_frame(event: LiveEvent) -> str:
    """Serialized once per event and shared by every session that gets it."""
    return orjson.dumps({"type": "event", "event": event.model_dump()}).decode()


def close_reason(text: str) -> bytes:
    """``text`` as a close frame's reason: cut to what the frame may carry, on a character
    boundary."""
    raw = text.encode()
    if len(raw) <= _MAX_REASON_BYTES:
        return raw
    return raw[: _MAX_REASON_BYTES - 3].decode(errors="ignore").encode() + b"..."
