"""What the retry-worker reads of the campaigns (the campaigns service owns the collection).

The contract: ``campaigns`` documents are ``{_id, tenant, channel_id, status}`` with
``status`` one of ``scheduled``, ``running``, ``paused``, ``cancelled``, ``completed``; a
campaign's outbound messages carry its ``_id`` as ``campaign_id``.
"""

from __future__ import annotations

from typing import Any

from inbox_common.store.client import Database
from inbox_common.store.collections import CAMPAIGNS

PAUSED = "paused"
CANCELLED = "cancelled"


class Campaigns:
    def __init__(self, db: Database) -> None:
        self._campaigns = db[CAMPAIGNS]

    async def status(self, campaign_id: Any, tenant: str | None) -> str | None:
        """The campaign's status, or None when the tenant has no such campaign."""
        query: dict[str, Any] = {"_id": campaign_id}
        if tenant is not None:
            query["tenant"] = tenant  # a message never follows another tenant's campaign
        doc = await self._campaigns.find_one(query, {"status": 1})
        return None if doc is None else doc.get("status")
