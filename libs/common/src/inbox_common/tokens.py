"""API tokens: random bearer strings stored only as their SHA-256, each with a role and tenant."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from inbox_common.store.client import Database
from inbox_common.store.schema import API_TOKENS

TOKEN_PREFIX = "wai_"  # noqa: S105 - a prefix, not a secret


class Role(StrEnum):
    AGENT = "agent"
    ADMIN = "admin"
    SUPERADMIN = "superadmin"

    def at_least(self, other: Role) -> bool:
        order = [Role.AGENT, Role.ADMIN, Role.SUPERADMIN]
        return order.index(self) >= order.index(other)


def hash_token(token: str) -> str:
    # Tokens carry 256 bits of randomness, so a plain digest is enough (no slow KDF needed).
    return hashlib.sha256(token.encode()).hexdigest()


async def create_token(db: Database, *, role: Role, tenant: str, name: str = "") -> str:
    """Store a new token's hash and return the token (shown once, never stored)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    await db[API_TOKENS].insert_one(
        {
            "token_hash": hash_token(token),
            "role": role.value,
            "tenant": tenant,
            "name": name,
            "created_at": datetime.now(UTC),
        }
    )
    return token


async def find_token(db: Database, token: str) -> dict[str, Any] | None:
    """The token's record (role, tenant), or None when unknown."""
    return await db[API_TOKENS].find_one(
        {"token_hash": hash_token(token)}, {"_id": 0, "role": 1, "tenant": 1, "name": 1}
    )
