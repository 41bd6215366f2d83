"""``channels``: the WhatsApp numbers the inbox serves, one per phone_number_id.

The documents include the Cloud API access token, encrypted (``token_cipher``): the sender
needs it, and :meth:`Channels.access_token` decrypts it. Keeping it out of every answer is
the REST view's job (``inbox_api.rest.views.channel``), not this module's.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument

from inbox_common.store.client import Database, Document
from inbox_common.store.schema import CHANNELS
from inbox_common.store.token_cipher import TokenCipher


class Channels:
    def __init__(
        self, db: Database, *, cipher: TokenCipher | None = None, cache_seconds: float = 30.0
    ) -> None:
        self._channels = db[CHANNELS]
        self._cipher = cipher
        self._cache_seconds = cache_seconds
        self._by_number: dict[str, tuple[float, Document]] = {}

    def _sealed(self, token: str) -> str:
        if self._cipher is None:
            raise RuntimeError("storing a channel token needs CHANNEL_TOKEN_KEYS (a TokenCipher)")
        return self._cipher.encrypt(token)

    async def create(self, *, tenant: str, fields: dict[str, Any]) -> Document:
        """Insert a channel (its token encrypted); raises DuplicateKeyError when the
        phone_number_id is taken."""
        doc = {**fields, "tenant": tenant, "status": "connected", "created_at": datetime.now(UTC)}
        if "access_token" in doc:
            doc["access_token"] = self._sealed(doc["access_token"])
        result = await self._channels.insert_one(doc)
        doc["_id"] = result.inserted_id
        return doc

    def access_token(self, channel: Document) -> str:
        """The channel's Cloud API token, decrypted (never log it)."""
        if self._cipher is None:
            raise RuntimeError("reading a channel token needs CHANNEL_TOKEN_KEYS (a TokenCipher)")
        return self._cipher.decrypt(channel.get("access_token") or "")

    async def rotate_tokens(self) -> int:
        """Encrypt every token with the first key (plain ones too); returns how many changed."""
        if self._cipher is None:
            raise RuntimeError("rotating channel tokens needs CHANNEL_TOKEN_KEYS (a TokenCipher)")
        changed = 0
        async for doc in self._channels.find({"access_token": {"$exists": True}}):
            stored = doc["access_token"]
            rotated = self._cipher.rotate(stored)
            if rotated != stored:
                await self._channels.update_one(
                    {"_id": doc["_id"], "access_token": stored}, {"$set": {"access_token": rotated}}
                )
                changed += 1
        return changed

    async def disconnect(self, channel_id: Any, *, reason: str, code: int | None) -> bool:
        """Mark a channel disconnected with the reason (a 190, 368...); True if it was
        connected until now."""
        result = await self._channels.update_one(
            {"_id": channel_id, "status": "connected"},
            {
                "$set": {
                    "status": "disconnected",
                    "disconnected_at": datetime.now(UTC),
                    "disconnected_reason": reason,
                    "disconnected_code": code,
                }
            },
        )
        self._by_number.clear()
        return result.modified_count == 1

    async def reconnect(
        self, channel_id: ObjectId, tenant: str | None, access_token: str
    ) -> Document | None:
        """A new token (encrypted) for a channel, connected again; None when there is no
        such channel (of ``tenant``; ``None``: any)."""
        query: dict[str, Any] = {"_id": channel_id}
        if tenant is not None:
            query["tenant"] = tenant
        doc = await self._channels.find_one_and_update(
            query,
            {
                "$set": {
                    "access_token": self._sealed(access_token),
                    "status": "connected",
                    "reconnected_at": datetime.now(UTC),
                },
                "$unset": {"disconnected_reason": "", "disconnected_code": ""},
            },
            return_document=ReturnDocument.AFTER,
        )
        self._by_number.clear()
        return doc

    async def for_tenant(self, tenant: str | None) -> list[Document]:
        """A tenant's channels, oldest first; ``None``: every tenant's."""
        query = {} if tenant is None else {"tenant": tenant}
        return await self._channels.find(query).sort("created_at", 1).to_list()

    async def get(self, channel_id: ObjectId, tenant: str | None) -> Document | None:
        query: dict[str, Any] = {"_id": channel_id}
        if tenant is not None:
            query["tenant"] = tenant
        return await self._channels.find_one(query)

    async def phone_number_ids(self, tenant: str) -> list[str]:
        docs = await self._channels.find({"tenant": tenant}, {"phone_number_id": 1}).to_list()
        return [d["phone_number_id"] for d in docs]

    async def of_waba(self, waba_id: str) -> list[Document]:
        """The channels of a WhatsApp Business Account (id, tenant, number and display
        number), oldest first: what its business-account webhooks concern. Not cached: those
        webhooks are rare, and a channel created now must be found by the next one."""
        cursor = self._channels.find(
            {"waba_id": waba_id},
            {"_id": 1, "tenant": 1, "phone_number_id": 1, "display_phone_number": 1},
        )
        return await cursor.sort("created_at", 1).to_list()

    async def by_phone_number_id(self, phone_number_id: str) -> Document | None:
        """The channel of a number (id and tenant); found channels are cached briefly (the
        webhook hot path)."""
        now = time.monotonic()
        hit = self._by_number.get(phone_number_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        doc = await self._channels.find_one(
            {"phone_number_id": phone_number_id},
            {"_id": 1, "tenant": 1, "phone_number_id": 1, "status": 1},
        )
        if doc is not None:
            # Misses are not cached: a channel created now must be found by the next replay.
            self._by_number[phone_number_id] = (now + self._cache_seconds, doc)
        return doc
