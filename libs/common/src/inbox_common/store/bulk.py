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


async def insert_new(collection: AsyncCollection[Document], docs: list[Document]) -> list[int]:
    """Insert ``docs`` in one unordered write; returns the indexes of those whose key already
    existed (E11000), for the caller to handle as updates. Inserting is the cheap common case:
    a new webhook, a new message."""
    if not docs:
        return []
    try:
        await collection.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if not errors or any(e.get("code") != _DUPLICATE_KEY for e in errors):
            raise
        return sorted(e["index"] for e in errors)
    return []
