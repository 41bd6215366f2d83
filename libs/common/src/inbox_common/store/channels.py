"""``channels``: the WhatsApp numbers the inbox serves, one per phone_number_id.

The documents include the Cloud API access token: the sender needs it. Keeping it out of
every answer is the REST view's job (``inbox_api.rest.views.channel``), not this module's.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from inbox_common.store.client import Database, Document
from inbox_common.store.schema import CHANNELS


class Channels:
    def __init__(self, db: Database, *, cache_seconds: float = 30.0) -> None:
        self._channels = db[CHANNELS]
        self._cache_seconds = cache_seconds
        self._by_number: dict[str, tuple[float, Document]] = {}

    async def create(self, *, tenant: str, fields: dict[str, Any]) -> Document:
        """Insert a channel; raises DuplicateKeyError when the phone_number_id is taken."""
        doc = {**fields, "tenant": tenant, "status": "connected", "created_at": datetime.now(UTC)}
        result = await self._channels.insert_one(doc)
        doc["_id"] = result.inserted_id
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

    async def by_phone_number_id(self, phone_number_id: str) -> Document | None:
        """The channel of a number (id and tenant); found channels are cached briefly (the
        webhook hot path)."""
        now = time.monotonic()
        hit = self._by_number.get(phone_number_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        doc = await self._channels.find_one(
            {"phone_number_id": phone_number_id}, {"_id": 1, "tenant": 1}
        )
        if doc is not None:
            # Misses are not cached: a channel created now must be found by the next replay.
            self._by_number[phone_number_id] = (now + self._cache_seconds, doc)
        return doc
