"""Unordered bulk writes that absorb upsert races."""

from __future__ import annotations

from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from inbox_common.store.client import Document

_DUPLICATE_KEY = 11000


async def bulk_upsert(collection: AsyncCollection[Document], ops: list[UpdateOne]) -> None:
    """One unordered bulk write; upserts that lost a race (E11000) are sent once more.

    Two writers upserting the same new key at once: one inserts, the other fails with a
    duplicate key; sent again, it finds the document and updates it.
    """
    if not ops:
        return
    try:
        await collection.bulk_write(ops, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if not errors or any(e.get("code") != _DUPLICATE_KEY for e in errors):
            raise
        await collection.bulk_write([ops[e["index"]] for e in errors], ordered=False)
