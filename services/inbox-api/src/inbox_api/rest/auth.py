"""Bearer-token authentication and tenant scoping."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from inbox_common.http import ApiError, HandlerT
from inbox_common.store.client import DATABASE
from inbox_common.tokens import Role, find_token, hash_token

# /api/ws authenticates itself (a browser cannot set headers on a WebSocket); the API's
# description and the page that browses it are public.
PUBLIC_PATHS = frozenset({"/api/health", "/api/openapi.json", "/api/ws", "/livez", "/metrics"})
PUBLIC_PREFIXES = ("/api/docs",)
_CACHE_SECONDS = 5.0
_TOKEN = re.compile(r"[A-Za-z0-9_\-]{1,256}")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request (or a WebSocket session) acts as: a token's role and tenant."""

    role: Role
    tenant: str
    token_hash: str = ""
    agent_id: str | None = None

    def scope(self) -> dict[str, Any]:
        """The query filter that confines reads to this principal's tenant."""
        return {} if self.role is Role.SUPERADMIN else {"tenant": self.tenant}

    def require(self, role: Role) -> None:
        if not self.role.at_least(role):
            raise ApiError(403, "forbidden", f"this action needs the {role.value} role")


class TokenCache:
    """Known tokens for a few seconds, so the hot read path does not hit the store each time;
    a revoked token is forgotten at once on every replica (a live ``token.revoked`` event)
    and at the latest when its entry expires."""

    def __init__(self, seconds: float = _CACHE_SECONDS) -> None:
        self._seconds = seconds
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, token_hash: str) -> Principal | None:
        hit = self._entries.get(token_hash)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, principal: Principal) -> None:
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[principal.token_hash] = (time.monotonic() + self._seconds, principal)

    def forget(self, token_hash: str) -> None:
        self._entries.pop(token_hash, None)


TOKEN_CACHE = web.AppKey("token_cache", TokenCache)
PRINCIPAL = web.RequestKey("principal", Principal)

HOW_TO_AUTHENTICATE = (
    "send Authorization: Bearer <token>; create one with "
    "`inbox-ops token create --role agent --tenant <tenant>`"
)


async def authenticate(app: web.Application, token: str) -> Principal:
    """The principal of a bearer token, or a 401 saying why not."""
    token = token.strip()
    if not token:
        raise ApiError(401, "unauthorized", HOW_TO_AUTHENTICATE)
    if not _TOKEN.fullmatch(token):
        raise ApiError(401, "unauthorized", "the bearer token is not valid (malformed)")
    cache = app[TOKEN_CACHE]
    token_hash = hash_token(token)
    principal = cache.get(token_hash)
    if principal is None:
        record = await find_token(app[DATABASE], token)
        if record is None:
            raise ApiError(
                401, "unauthorized", "the bearer token is not valid (unknown or revoked)"
            )
        agent = record.get("agent_id")
        principal = Principal(
            role=Role(record["role"]),
            tenant=record["tenant"],
            token_hash=token_hash,
            agent_id=str(agent) if agent is not None else None,
        )
        cache.put(principal)
    return principal


@web.middleware
async def auth_middleware(request: web.Request, handler: HandlerT) -> web.StreamResponse:
    path = request.path
    if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES) or not path.startswith("/api/"):
        return await handler(request)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        raise ApiError(401, "unauthorized", HOW_TO_AUTHENTICATE)
    request[PRINCIPAL] = await authenticate(request.app, token)
    return await handler(request)
