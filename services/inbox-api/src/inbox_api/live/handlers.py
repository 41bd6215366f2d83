"""``GET /api/ws``: the WebSocket edge of the live updates (the protocol is in ``protocol``).

The path is public in the auth middleware because the handler authenticates the session
itself: a browser cannot set headers on a WebSocket, and a token in the URL would end up in
proxies' access logs. So a client sends ``Authorization: Bearer <token>`` on the upgrade
request, or an ``auth`` message first. The token is never logged, and a refusal's reason is
the authentication error's message, which names what was wrong and never the token.
"""

from __future__ import annotations

from aiohttp import WSMsgType, hdrs, web
from pydantic import ValidationError
from pymongo.errors import PyMongoError

from inbox_api.live.hub import LIVE
from inbox_api.live.protocol import (
    PONG,
    TRY_AGAIN_LATER,
    UNAUTHORIZED,
    AuthMessage,
    close_reason,
    is_ping,
)
from inbox_api.live.sessions import CLOSE_SECONDS
from inbox_api.rest.auth import Principal, authenticate
from inbox_common.http import ApiError
from inbox_common.logging import get_logger

log = get_logger(__name__)

PATH = "/api/ws"
AUTH_SECONDS = 5.0
# Under the idle timeout of common proxies (60 s), so they never cut a quiet session.
HEARTBEAT_SECONDS = 25.0
# A client only sends its auth message and pings.
MAX_CLIENT_MESSAGE = 8 * 1024

FIRST_MESSAGE = (
    'the first message must be {"type":"auth","token":"..."}, '
    "or send Authorization: Bearer <token> on the upgrade request"
)
_ENDED = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)


class LiveHandler:
    """The ``GET /api/ws`` handler; see the module docstring."""

    def __init__(self, *, auth_timeout: float, heartbeat: float) -> None:
        self._auth_timeout = auth_timeout
        self._heartbeat = heartbeat

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if LIVE not in request.app:
            raise ApiError(503, "live_updates_unavailable", "live updates are not running")
        hub = request.app[LIVE]
        ws = web.WebSocketResponse(
            heartbeat=self._heartbeat,
            timeout=CLOSE_SECONDS,
            max_msg_size=MAX_CLIENT_MESSAGE,
            # A deflate context per connection costs hundreds of KiB; events are small.
            compress=False,
        )
        await ws.prepare(request)
        try:
            hello = await self._hello(request, ws)
        except _RefusedError as refused:
            log.info("live.refused", code=refused.code, reason=refused.reason)
            hub.count_refused(refused.label)
            await ws.close(code=refused.code, message=close_reason(refused.reason))
            return ws
        if hello is None:  # the client left first
            return ws
        principal, last_event_id = hello
        session = hub.attach(ws, request.transport, principal, last_event_id)
        log.debug("live.session_started", tenant=principal.tenant, role=principal.role.value)
        try:
            async for message in ws:
                if message.type is WSMsgType.TEXT and is_ping(message.data):
                    session.offer(PONG)
        finally:
            await hub.detach(session)
        return ws

    async def _hello(
        self, request: web.Request, ws: web.WebSocketResponse
    ) -> tuple[Principal, str | None] | None:
        """Who the client is and where it resumes from; ``None`` when it left first."""
        last_event_id = request.query.get("last_event_id") or None
        header = request.headers.get(hdrs.AUTHORIZATION)
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer":
                raise _RefusedError("the Authorization header must be Bearer <token>")
        else:
            try:
                message = await ws.receive(timeout=self._auth_timeout)
            except TimeoutError:
                raise _RefusedError(
                    f"no auth message within {self._auth_timeout:g}s; send "
                    '{"type":"auth","token":"..."} first, or the Authorization header'
                ) from None
            if message.type in _ENDED:
                return None
            if message.type is not WSMsgType.TEXT:
                raise _RefusedError(FIRST_MESSAGE)
            try:
                auth = AuthMessage.model_validate_json(message.data)
            except ValidationError:  # its text quotes the input: the token
                raise _RefusedError(FIRST_MESSAGE) from None
            token = auth.token
            last_event_id = auth.last_event_id or last_event_id
        try:
            principal = await authenticate(request.app, token)
        except ApiError as exc:
            raise _RefusedError(exc.message) from None
        except PyMongoError as exc:
            log.warning("live.token_store_unavailable", error=type(exc).__name__)
            raise _RefusedError(
                "the token store is unreachable; try again later",
                code=TRY_AGAIN_LATER,
                label="store_unavailable",
            ) from None
        return principal, last_event_id


class _RefusedError(Exception):
    """The session is refused before it starts: closed with ``code`` and ``reason``."""

    def __init__(
        self, reason: str, *, code: int = UNAUTHORIZED, label: str = "unauthorized"
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.label = label


async def _goodbye(app: web.Application) -> None:
    if LIVE in app:
        await app[LIVE].close_sessions()


def add_live_routes(
    app: web.Application,
    *,
    auth_timeout: float = AUTH_SECONDS,
    heartbeat: float = HEARTBEAT_SECONDS,
) -> None:
    """``GET /api/ws``, and the goodbye (1001) to its sessions when the app shuts down.

    The goodbye runs in ``on_shutdown``, before aiohttp waits for open requests to end:
    otherwise every open WebSocket would hold the shutdown for its whole grace period.
    (``live_ctx`` says goodbye again at cleanup, to any session still open.) Needs
    ``live_ctx`` among the app's resources.
    """
    handler = LiveHandler(auth_timeout=auth_timeout, heartbeat=heartbeat)
    app.router.add_get(PATH, handler.handle)
    app.on_shutdown.append(_goodbye)
