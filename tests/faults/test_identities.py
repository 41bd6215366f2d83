"""Fault 8: customers named three ways (phone only, BSUID only, both), every body twice,
shuffled, through webhook-ingest to two inbox-api replicas at once.

Each customer's journey: a phone-only webhook (as Meta sent before business-scoped user
ids), username-only ones (a BSUID and a username, no phone), and ones that carry both. The
bodies of all customers are shuffled and posted concurrently, each twice, so the replicas
see a customer's first webhooks in any order, in the same flush or in two flushes at once.

Expected: per customer exactly one contact holding the phone and the BSUID, one visible
conversation holding every message (a conversation created under another identifier is
merged into it and kept only as an alias), and the total-queue check finds nothing lost,
doubled or unexpected.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from inbox_sandbox import payloads
from inbox_testkit.faults.checker import Item, Report, item_of
from inbox_testkit.faults.scenario import fault_run
from inbox_testkit.faults.stack import PHONE_NUMBER_ID, StackConfig

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.timeout(150)]

CUSTOMERS = 30
T0 = 1_750_000_000


def _body(n: int, step: int, *, phone: bool, bsuid: bool) -> tuple[str, dict[str, Any]]:
    wa_id, user_id = f"49170{n:07d}", f"ID.{n:019d}"
    wamid = f"wamid.C{n}S{step}"
    contact: dict[str, Any] = {"profile": {"name": f"Customer {n}"}}
    if phone:
        contact["wa_id"] = wa_id
    if bsuid:
        contact["user_id"] = user_id
        contact["profile"]["username"] = f"customer{n}"
    message = payloads.user_message(
        "text",
        wamid,
        {"body": f"{n}.{step}"},
        wa_id=wa_id if phone else None,
        user_id=user_id if bsuid else None,
        timestamp=T0 + step,
    )
    return wamid, payloads.webhook(PHONE_NUMBER_ID, contacts=[contact], messages=[message])


def workload(seed: int) -> tuple[list[Item], dict[int, set[str]]]:
    items: list[Item] = []
    wamids: dict[int, set[str]] = {}
    for n in range(CUSTOMERS):
        steps = [
            _body(n, 1, phone=True, bsuid=False),
            _body(n, 2, phone=False, bsuid=True),
            _body(n, 3, phone=True, bsuid=True),
            _body(n, 4, phone=False, bsuid=True),
        ]
        wamids[n] = {w for w, _ in steps}
        for step, (wamid, body) in enumerate(steps):
            item = item_of(wamid, body)
            items += [item, Item(f"{wamid}-again-{step}", item.body, item.messages)]
    random.Random(seed).shuffle(items)
    return items, wamids


async def test_customers_named_any_way_in_any_order_are_one_contact_each(
    stack_config: StackConfig, fault_report: Report
) -> None:
    items, wamids = workload(seed=8)
    async with fault_run(stack_config, "identities") as run:
        await run.start(replicas=2)
        await run.send(items, concurrency=24)
        verdict = await run.check(timeout=60, settle=5)
        db = run.db
        split: list[str] = []
        for n, expected in wamids.items():
            contacts = (
                await db["contacts"]
                .find({"user_id": f"ID.{n:019d}", "merged_into": {"$exists": False}})
                .to_list()
            )
            if len(contacts) != 1 or contacts[0].get("wa_id") != f"49170{n:07d}":
                split.append(f"customer {n}: contacts {contacts}")
                continue
            conversation = await db["conversations"].find_one(
                {"_id": contacts[0]["conversation_id"]}
            )
            unread = set((conversation or {}).get("unread_wamids") or [])
            if conversation is None or "merged_into" in conversation or unread != expected:
                split.append(f"customer {n}: conversation {conversation}")
        merged = await db["contacts"].count_documents({"merged_into": {"$exists": True}})
        verdict.notes["merged"] = merged
        verdict.notes["split_customers"] = len(split)
        fault_report(verdict)
        assert not split, "\n".join(split[:5])
        run.assert_clean(verdict)
        visible = await db["conversations"].count_documents({"merged_into": {"$exists": False}})
        assert visible == CUSTOMERS
