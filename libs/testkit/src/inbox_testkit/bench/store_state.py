"""The store of P2 and P3: a database ready for the services, what a drain left in it, and
the ledger's own account of the drain.

Every database gets the schema's migrations (``apply_migrations``, as ``db-deploy`` applies
them: the same indexes and validators as production) and one connected channel. Reading
back counts scans the collections on SecantusDB, so it is done only after a drain.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import pymongo

from inbox_common.store.client import create_client
from inbox_common.store.migrations import apply_migrations
from inbox_common.store.schema import (
    CHANNELS,
    CONTACTS,
    CONVERSATIONS,
    MESSAGES,
    WEBHOOK_EVENTS,
)
from inbox_testkit.bench.harness import BenchError

PHONE_NUMBER_ID = "109876543210001"
TENANT = "bench"
DB_NAME = "inbox_bench"


async def prepare_store(url: str, db_name: str, phone_number_id: str) -> None:
    """The schema (as ``db-deploy`` applies it) and one connected channel."""
    client = create_client(url, app_name="bench")
    try:
        db = client[db_name]
        await apply_migrations(db)
        await db[CHANNELS].insert_one(
            {
                "phone_number_id": phone_number_id,
                "tenant": TENANT,
                "status": "connected",
                "name": "Bench channel",
                "waba_id": "WABA_BENCH",
                "display_phone_number": "15550001111",
                "created_at": datetime.now(UTC),
            }
        )
    finally:
        await client.close()


async def write_concern(url: str) -> dict[str, Any]:
    """The write concern the services' client asks for on ``url``: the client's own
    setting, as inbox-api and the minimal consumer get it from ``create_client``."""
    client = create_client(url, app_name="bench")
    try:
        return dict(client.write_concern.document)
    finally:
        await client.close()


def store_counts(url: str, db_name: str) -> dict[str, int]:
    """What a drain left (counting scans on SecantusDB: only after the drain)."""
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url)
    try:
        db = client[db_name]
        unread = list(
            db[CONVERSATIONS].aggregate(
                [
                    {"$project": {"n": {"$size": {"$ifNull": ["$unread_wamids", []]}}}},
                    {"$group": {"_id": None, "n": {"$sum": "$n"}}},
                ]
            )
        )
        return {
            "ledger_processed": db[WEBHOOK_EVENTS].count_documents({"status": "processed"}),
            "ledger_failed": db[WEBHOOK_EVENTS].count_documents({"status": "failed"}),
            "ledger_total": db[WEBHOOK_EVENTS].count_documents({}),
            "messages": db[MESSAGES].count_documents({}),
            "contacts": db[CONTACTS].count_documents({}),
            "conversations": db[CONVERSATIONS].count_documents({}),
            "conversations_with_preview": db[CONVERSATIONS].count_documents(
                {"last_message_preview": {"$type": "string"}}
            ),
            "unread_wamids": int(unread[0]["n"]) if unread else 0,
        }
    finally:
        client.close()


def ledger_window(url: str, db_name: str) -> dict[str, Any]:
    """The drain as its ledger tells it: the earliest ``last_attempt_at`` (the first batch
    began) to the latest ``finished_at`` (the last batch's fate was decided), and the most
    attempts any body took (above 1: a batch was retried)."""
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url, tz_aware=True)
    try:
        found = list(
            client[db_name][WEBHOOK_EVENTS].aggregate(
                [
                    {
                        "$group": {
                            "_id": None,
                            "first": {"$min": "$last_attempt_at"},
                            "last": {"$max": "$finished_at"},
                            "attempts": {"$max": "$attempts"},
                        }
                    }
                ]
            )
        )
    finally:
        client.close()
    if not found or found[0]["first"] is None or found[0]["last"] is None:
        raise BenchError("the ledger has no last_attempt_at/finished_at to time the drain by")
    first: datetime = found[0]["first"]
    last: datetime = found[0]["last"]
    return {
        "first": first.isoformat(),
        "last": last.isoformat(),
        "seconds": round((last - first).total_seconds(), 3),
        "max_attempts": found[0]["attempts"],
    }


def processed_count(url: str, db_name: str) -> int:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url)
    try:
        return client[db_name][WEBHOOK_EVENTS].count_documents({"status": "processed"})
    finally:
        client.close()


def drop_database(url: str, db_name: str) -> None:
    """The next drain starts on a server holding only what the previous ones left: nothing."""
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url)
    try:
        client.drop_database(db_name)
    except pymongo.errors.PyMongoError as exc:
        print(f"warning: could not drop {db_name}: {exc}", file=sys.stderr)
    finally:
        client.close()
