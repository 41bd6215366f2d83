"""Agents and their tokens: an admin creates an agent (and its first token), lists agents
and tokens, and revokes a token; a revoked token stops working within seconds on every
replica (the token caches forget it on a live ``token.revoked`` event, and their entries
last a few seconds anyway)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo.errors import DuplicateKeyError

from inbox_api.errors import ConflictError, NotFoundError
from inbox_common.store.client import Database, Document
from inbox_common.store.schema import AGENTS
from inbox_common.tokens import Role, create_token, list_tokens, revoke_token


class AgentService:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._agents = db[AGENTS]

    async def create(self, *, tenant: str, name: str, role: Role) -> tuple[Document, str]:
        """A new agent of ``tenant`` and its first token (returned once, never stored)."""
        doc = {"tenant": tenant, "name": name, "role": role.value, "created_at": datetime.now(UTC)}
        try:
            result = await self._agents.insert_one(doc)
        except DuplicateKeyError:
            raise ConflictError(f"an agent named {name!r} exists", {"field": "name"}) from None
        doc["_id"] = result.inserted_id
        token = await create_token(
            self._db, role=role, tenant=tenant, name=f"agent {name}", agent_id=str(doc["_id"])
        )
        return doc, token

    async def for_tenant(self, tenant: str | None) -> list[Document]:
        query = {} if tenant is None else {"tenant": tenant}
        return await self._agents.find(query).sort("created_at", 1).to_list()

    async def known_id(self, agent_id: str, tenant: str) -> str | None:
        """``agent_id`` as the store spells it, if it names an agent of ``tenant``.

        An ObjectId is hex, and ``ObjectId()`` reads hex in either case: the id in capitals
        names the same agent, but assignments are compared as text (``assignee=me``), so
        only the canonical spelling may be stored.
        """
        try:
            oid = ObjectId(agent_id)
        except (InvalidId, TypeError):
            return None
        found = await self._agents.count_documents({"_id": oid, "tenant": tenant}, limit=1)
        return str(oid) if found == 1 else None

    async def tokens(self, tenant: str | None) -> list[dict[str, Any]]:
        return await list_tokens(self._db, tenant)

    async def revoke(self, token_id: ObjectId, tenant: str | None) -> str:
        """Revoke a token; returns its hash for the replicas' caches."""
        token_hash = await revoke_token(self._db, token_id, tenant)
        if token_hash is None:
            raise NotFoundError("token", token_id)
        return token_hash
