"""``account_events``: Meta's business-account webhooks (template status, number quality), one
document per change and tenant, as the consumer found them.

A document's ``_id`` is derived from the body that carried it (its sha256, the change's place
in the body, the tenant), so a body applied again (a redelivery, a replay, Meta's resend of
the same bytes) writes the same document, once: the write is an upsert that only sets fields
on insert. The ``_id`` is an ObjectId whose time part is the event's (Meta's ``time``), so
the index ``tenant_newest`` lists a tenant's events newest first, as ObjectIds do elsewhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime

from bson import ObjectId
from pymongo import UpdateOne

from inbox_common.store.bulk import bulk_upsert
from inbox_common.store.client import Database, Document
from inbox_common.store.collections import ACCOUNT_EVENTS

_MAX_SECONDS = 2**32 - 1  # an ObjectId's time is 4 bytes of unix seconds


def event_id(at: datetime, sha256: str, position: int, tenant: str | None) -> ObjectId:
    """The id of the document for the ``position``-th change of body ``sha256``, for
    ``tenant``: the time ``at`` (4 bytes), then 8 bytes of a hash of the rest."""
    seconds = min(max(int(at.timestamp()), 0), _MAX_SECONDS)
    key = f"{sha256}:{position}:{tenant or ''}".encode()
    return ObjectId(seconds.to_bytes(4, "big") + hashlib.sha256(key).digest()[:8])


class AccountEvents:
    def __init__(self, db: Database) -> None:
        self._events = db[ACCOUNT_EVENTS]

    async def record(self, docs: Iterable[Document]) -> None:
        """Store each document (with its ``_id``) unless it is stored already: one unordered
        bulk write; the first write of a document wins."""
        ops = [
            UpdateOne(
                {"_id": doc["_id"]},
                {"$setOnInsert": {k: v for k, v in doc.items() if k != "_id"}},
                upsert=True,
            )
            for doc in docs
        ]
        await bulk_upsert(self._events, ops)
