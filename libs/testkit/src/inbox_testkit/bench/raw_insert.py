"""P2's baseline, the store's raw write rate: ``insert_many`` of message-sized documents.

The documents have the fields of a stored inbound text message (wamid, conversation and
channel ids, direction, sender, type, content, timestamps, status, tenant). They are built
before the clock starts, then inserted ``--batch`` at a time into a fresh collection (only
the ``_id`` index), with the services' client (``create_client``: PyMongo's asyncio client,
w=majority, journaled), so that every P2 line has the same write concern. Each of
``--rounds`` rounds uses its own new collection; the rounds' rates are all reported and the
median is the baseline. For reference, it then times ``--upserts`` documents written as
upserts by a unique ``wamid`` (unordered ``bulk_write`` of ``UpdateOne``, the consumer's
kind of write). Prints one line ``BENCH_JSON {...}``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import uvloop
from bson import ObjectId
from pymongo import UpdateOne

from inbox_common.store.client import create_client
from inbox_sandbox.payloads import new_wamid
from inbox_testkit.bench.cli import parse_pinned, print_result


def documents(count: int, *, seed: int = 5) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    channel_id = ObjectId()
    conversations = [ObjectId() for _ in range(1000)]
    base = datetime(2026, 1, 1, tzinfo=UTC)
    words = ("hello", "order", "delivery", "tomorrow", "invoice", "refund", "price", "open")
    docs = []
    for i in range(count):
        at = base + timedelta(seconds=i)
        text = " ".join(rng.choice(words) for _ in range(rng.randrange(2, 22)))
        docs.append(
            {
                "wamid": new_wamid(),
                "conversation_id": conversations[i % len(conversations)],
                "direction": "inbound",
                "from": f"49{1_500_000_000 + i % 1000}",
                "type": "text",
                "content": {"body": text.capitalize() + "."},
                "reply_to": None,
                "timestamp": at,
                "tenant": "bench",
                "channel_id": channel_id,
                "created_at": at,
                "status": "received",
            }
        )
    return docs


async def run(
    url: str, db_name: str, count: int, batch: int, rounds: int, upserts: int
) -> dict[str, Any]:
    client = create_client(url, app_name="bench-raw-insert")
    rates: list[float] = []
    try:
        db = client[db_name]
        for r in range(rounds):
            docs = documents(count, seed=5 + r)
            name = f"bench_raw_insert_{r}"
            await db.drop_collection(name)
            collection = db[name]
            await collection.insert_one({"warm": True})  # create it outside the clock
            began = time.perf_counter()
            for start in range(0, count, batch):
                await collection.insert_many(docs[start : start + batch])
            elapsed = time.perf_counter() - began
            rates.append(count / elapsed)
            await db.drop_collection(name)
        # The other shape of write the consumer makes: upserts by a unique key, as one
        # unordered bulk write per batch (a reference for where P2's time goes).
        docs = documents(upserts, seed=99)
        name = "bench_raw_upsert"
        await db.drop_collection(name)
        collection = db[name]
        await collection.create_index("wamid", unique=True)
        began = time.perf_counter()
        for start in range(0, upserts, batch):
            await collection.bulk_write(
                [
                    UpdateOne({"wamid": d["wamid"]}, {"$set": d}, upsert=True)
                    for d in docs[start : start + batch]
                ],
                ordered=False,
            )
        upsert_rate = upserts / (time.perf_counter() - began)
        await db.drop_collection(name)
        concern = dict(client.write_concern.document)
    finally:
        await client.close()
    return {
        "upserts": upserts,
        "upsert_rate": upsert_rate,
        "documents": count,
        "batch": batch,
        "rounds": rounds,
        "rates": [round(r, 1) for r in rates],
        "rate": statistics.median(rates),
        "bytes_per_document": len(json.dumps(documents(1)[0], default=str)),
        "write_concern": concern,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("db")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--upserts", type=int, default=1000, help="documents of the bulk-upsert reference"
    )
    args = parse_pinned(parser, watch=False)
    result = uvloop.run(run(args.url, args.db, args.count, args.batch, args.rounds, args.upserts))
    print_result(result)


if __name__ == "__main__":
    main()
