"""The total-queue check itself: it must see what it is there to see.

A zero from the fault tests means something only if the checker counts a lost, doubled or
unexpected fact when there is one; this feeds it a store written by hand (no services, no
unique indexes) and checks every count.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest
from bson import ObjectId

from inbox_common.store.client import Database, create_client
from inbox_sandbox import payloads
from inbox_testkit.faults.checker import Sender, check, item_of, text_items
from inbox_testkit.faults.stack import PHONE_NUMBER_ID

pytestmark = [pytest.mark.faults]


@pytest.fixture
async def db(mongo_url: str, mongo_db_name: str) -> AsyncIterator[Database]:
    client = create_client(mongo_url, app_name="faults-checker")
    yield client[mongo_db_name]
    await client.close()


async def test_the_checker_counts_what_went_wrong(db: Database) -> None:
    kept, lost, twice, unacked = text_items(4, contacts=1)
    outbound = payloads.new_wamid()
    status_body = item_of(
        "statuses",
        payloads.webhook(
            PHONE_NUMBER_ID,
            statuses=[
                payloads.status(outbound, "sent", "4917"),
                payloads.status(outbound, "delivered", "4917"),
            ],
        ),
    )
    items = [kept, lost, twice, unacked, status_body]
    sender = Sender("http://unused")
    sender.ok = {kept.key, lost.key, twice.key, status_body.key}
    sender.never_ok = {unacked.key}

    conversation = ObjectId()
    stray = payloads.new_wamid()
    inbound = {"direction": "inbound", "conversation_id": conversation}
    await db["messages"].insert_many(
        [
            {"wamid": kept.key, **inbound},
            {"wamid": twice.key, **inbound},
            {"wamid": twice.key, **inbound},  # duplicated (1)
            {"wamid": stray, **inbound},  # unexpected (1)
            {
                "wamid": outbound,
                # "delivered" is lost (1); "sent" is doubled (1); "read" unexpected (1)
                "statuses": [{"status": "sent"}, {"status": "sent"}, {"status": "read"}],
            },
        ]
    )
    await db["conversations"].insert_one(
        {
            "_id": conversation,
            "channel_id": 1,
            "wa_id": "4917",
            # kept is missing here: lost (1); twice is here twice: duplicated (1); a ghost
            # that is no message at all: unexpected (1)
            "unread_wamids": [twice.key, twice.key, stray, payloads.new_wamid()],
        }
    )
    await db["webhook_events"].insert_many(
        [
            {"sha256": hashlib.sha256(i.body).hexdigest(), "status": "processed"}
            for i in (kept, twice, status_body)
        ]
    )

    verdict = await check(db, "self-test", items, sender)

    details = "\n".join(verdict.details)
    # lost: the message `lost`, the status "delivered", `kept` missing from unread.
    assert verdict.lost == 3, details
    # duplicated: `twice` in two documents, "sent" twice in history, `twice` twice unread.
    assert verdict.duplicated == 3, details
    # unexpected: `stray` stored, "read" in history, the ghost unread.
    assert verdict.unexpected == 3, details
    # the ledger lacks `lost`, which got a 200.
    assert verdict.unfinished == 1, details
    assert (verdict.sent, verdict.ok) == (5, 4)
    assert not verdict.clean
    assert f"never got a 200: {unacked.key}" in verdict.details
