"""Bearer-token authentication and tenant scoping."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from inbox_common.http import ApiError, HandlerT
from inbox_common.store.client import DATABASE
from inbox_common.tokens import Role, find_token

PUBLIC_PATHS = frozenset({"/api/health", "/api/openapi.json", "/livez", "/metrics"})
_CACHE_SECONDS = 30.0
_TOKEN = re.compile(r"[A-Za-z0-9_\-]{1,256}")


@dataclass(frozen=True, slots=True)
class Principal:
    role: Role
    tenant: str

    def scope(self) -> dict[str, Any]:
        """The query filter that confines reads to this principal's tenant."""
        return {} if self.role is Role.SUPERADMIN else {"tenant": self.tenant}

    def require(self, role: Role) -> None:
        if not self.role.at_least(role):
            raise ApiError(403, "forbidden", f"this action needs the {role.value} role")


class TokenCache:
    """Known tokens for a short while, so the hot read path does not hit the store each time."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, token: str) -> Principal | None:
        hit = self._entries.get(token)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, token: str, principal: Principal) -> None:
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[token] = (time.monotonic() + _CACHE_SECONDS, principal)


TOKEN_CACHE = web.AppKey("token_cache", TokenCache)
PRINCIPAL = web.RequestKey("principal", Principal)


@web.middleware
async def auth_middleware(request: web.Request, handler: HandlerT) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS or not request.path.startswith("/api/"):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "unauthorized",
            "send Authorization: Bearer <token>; create one with "
            "`inbox-ops token create --role agent --tenant <tenant>`",
        )
    token = token.strip()
    if not _TOKEN.fullmatch(token):
        raise ApiError(401, "unauthorized", "the bearer token is not valid (malformed)")
    cache = request.app[TOKEN_CACHE]
    principal = cache.get(token)
    if principal is None:
        record = await find_token(request.app[DATABASE], token)
        if record is None:
            raise ApiError(
                401, "unauthorized", "the bearer token is not valid (unknown or revoked)"
            )
        principal = Principal(role=Role(record["role"]), tenant=record["tenant"])
        cache.put(token, principal)
    request[PRINCIPAL] = principal
    return await handler(request)
