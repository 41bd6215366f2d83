"""When each business number last heard from Meta: the newest webhook ledger entry naming it.

Read by inbox-api's channel list for admins and by maintenance's channel health. One indexed
read per number (``phone_number_received``: the number, then the newest receipt), whatever
the size of the ledger; entries older than the ledger's retention are gone, so a number
silent for longer reads as never heard from.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from inbox_common.store.client import Database
from inbox_common.store.collections import WEBHOOK_EVENTS


async def last_webhook_at(db: Database, phone_number_id: str) -> datetime | None:
    """When the newest webhook that carried a change for the number was received."""
    doc = await db[WEBHOOK_EVENTS].find_one(
        {"phone_number_ids": phone_number_id},
        {"_id": 0, "received_at": 1},
        sort=[("received_at", -1)],
    )
    return None if doc is None else doc.get("received_at")


async def last_webhooks(db: Database, numbers: Sequence[str]) -> dict[str, datetime | None]:
    """:func:`last_webhook_at` of each number, read concurrently."""
    found = await asyncio.gather(*(last_webhook_at(db, number) for number in numbers))
    return dict(zip(numbers, found, strict=True))
