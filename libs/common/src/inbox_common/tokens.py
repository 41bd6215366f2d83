"""API tokens: random bearer strings stored only as their SHA-256, each with a role and a
tenant (and, for an agent's token, the agent). A revoked token keeps its record
(``revoked_at``) and stops authenticating."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from bson import ObjectId

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


async def create_token(
    db: Database, *, role: Role, tenant: str, name: str = "", agent_id: Any = None
) -> str:
    """Store a new token's hash and return the token (shown once, never stored)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record: dict[str, Any] = {
        "token_hash": hash_token(token),
        "role": role.value,
        "tenant": tenant,
        "name": name,
        "created_at": datetime.now(UTC),
    }
    if agent_id is not None:
        record["agent_id"] = agent_id
    await db[API_TOKENS].insert_one(record)
    return token


async def list_tokens(db: Database, tenant: str | None) -> list[dict[str, Any]]:
    """Every token's record but its hash, oldest first; ``None``: every tenant's."""
    query = {} if tenant is None else {"tenant": tenant}
    cursor = db[API_TOKENS].find(query, {"token_hash": 0}).sort("created_at", 1)
    return await cursor.to_list()


async def revoke_token(db: Database, token_id: ObjectId, tenant: str | None) -> str | None:
    """Revoke a token (of ``tenant``; ``None``: any); returns its hash (for the replicas'
    caches), or None when there is no such live token."""
    query: dict[str, Any] = {"_id": token_id, "revoked_at": {"$exists": False}}
    if tenant is not None:
        query["tenant"] = tenant
    record = await db[API_TOKENS].find_one_and_update(
        query, {"$set": {"revoked_at": datetime.now(UTC)}}, projection={"token_hash": 1}
    )
    return None if record is None else str(record["token_hash"])


async def find_token(db: Database, token: str) -> dict[str, Any] | None:
    """The token's record (role, tenant), or None when unknown."""
    return await db[API_TOKENS].find_one(
        {"token_hash": hash_token(token), "revoked_at": {"$exists": False}},
        {"_id": 0, "role": 1, "tenant": 1, "name": 1, "agent_id": 1},
    )
