"""Fault 6 (with 7): duplicated and reordered deliveries of the same statuses and messages.

Meta delivers at least once and in no particular order. This test sends, through
webhook-ingest to two inbox-api replicas, the statuses of outbound messages in every order
the rule must absorb (read before delivered, failed then delivered, delivered then failed,
everything reversed), each status several times: alone, batched with other messages'
statuses in different combinations and orders (different bodies, so the ledger cannot
dedupe them), and the very same body twice at once (both copies may pass the ledger before
either finished). For some wamids the statuses arrive before the message itself (an inbound
message with that wamid, the only message the webhook path stores): the status is kept on
a placeholder and the message fills it in.

Expected: per wamid, the final status is the highest of the rule (pending < sent < failed <
delivered < read), every status is in the history exactly once, and the total-queue check
finds nothing lost, doubled or unexpected.
"""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from inbox_sandbox import payloads
from inbox_testkit.faults.checker import Item, Report, item_of
from inbox_testkit.faults.scenario import fault_run
from inbox_testkit.faults.stack import PHONE_NUMBER_ID, StackConfig

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.timeout(150)]

RANK = {"pending": 0, "sent": 1, "failed": 2, "delivered": 3, "read": 4}
PATTERNS: tuple[tuple[str, ...], ...] = (
    ("read", "delivered", "sent"),
    ("failed", "delivered"),
    ("delivered", "failed"),
    ("sent", "failed"),
    ("delivered", "read", "sent", "failed"),
    ("sent", "delivered"),
)
OUTBOUND = 48
INBOUND = 24
RECIPIENT = "4917055500"


def _status(wamid: str, status: str, base: int) -> dict[str, Any]:
    # The same (wamid, status) is the same object in every body that carries it.
    return payloads.status(wamid, status, RECIPIENT, timestamp=base + RANK[status])


def _body(statuses: list[dict[str, Any]], rng: random.Random) -> dict[str, Any]:
    """One webhook with the statuses spread over one to three entries."""
    entries = []
    chunks = rng.randint(1, min(3, len(statuses)))
    for n in range(chunks):
        part = statuses[n::chunks]
        entries.extend(payloads.webhook(PHONE_NUMBER_ID, statuses=part)["entry"])
    return {"object": "whatsapp_business_account", "entry": entries}


def workload(seed: int) -> tuple[list[Item], list[Item], dict[str, str]]:
    """Status bodies (phase 1), message bodies with more statuses (phase 2), and the final
    status each wamid must end with."""
    rng = random.Random(seed)
    base = int(time.time()) - 600
    outbound = [payloads.new_wamid() for _ in range(OUTBOUND)]
    inbound = [payloads.new_wamid() for _ in range(INBOUND)]
    sequences = {w: PATTERNS[i % len(PATTERNS)] for i, w in enumerate([*outbound, *inbound])}
    expected = {w: max(seq, key=RANK.__getitem__) for w, seq in sequences.items()}
    pairs = [_status(w, s, base) for w, seq in sequences.items() for s in seq]

    phase1: list[Item] = []
    # Each status alone, in its pattern's (wrong) order...
    for n, status in enumerate(pairs):
        phase1.append(item_of(f"single-{n}", _body([status], rng)))
    # ... batched with others' in two different shuffles...
    for round_ in range(2):
        shuffled = pairs[:]
        rng.shuffle(shuffled)
        for n in range(0, len(shuffled), 7):
            body = _body(shuffled[n : n + 7], rng)
            phase1.append(item_of(f"batch{round_}-{n}", body))
    # ... and some bodies twice, byte for byte.
    phase1.extend(
        Item(f"{item.key}-again", item.body, item.messages, item.statuses)
        for item in rng.sample(phase1, len(phase1) // 4)
    )
    rng.shuffle(phase1)

    phase2: list[Item] = []
    for n, wamid in enumerate(inbound):
        wa_id = f"4917066{n:04d}"
        message = payloads.text_webhook(
            PHONE_NUMBER_ID, wa_id, f"Late {n}", f"arrives after its statuses {n}", wamid=wamid
        )
        phase2.append(item_of(f"message-{n}", message))
        phase2.append(Item(f"message-{n}-again", phase2[-1].body, phase2[-1].messages))
    # Late duplicates of statuses, after the messages.
    late = rng.sample(pairs, len(pairs) // 3)
    for n in range(0, len(late), 5):
        phase2.append(item_of(f"late-{n}", _body(late[n : n + 5], rng)))
    rng.shuffle(phase2)
    return phase1, phase2, expected


async def test_duplicated_and_reordered_deliveries_converge(
    stack_config: StackConfig, fault_report: Report
) -> None:
    phase1, phase2, expected = workload(seed=6)
    async with fault_run(stack_config, "reorder-duplicate") as run:
        await run.start(replicas=2)
        await run.send(phase1, concurrency=24)
        # The statuses are stored (on placeholders) before any message arrives.
        await run.settle(timeout=45, settle=5)
        await run.send(phase2, concurrency=24)
        verdict = await run.check(timeout=45, settle=5)
        docs = (
            await run.db["messages"].find({}, {"wamid": 1, "status": 1, "direction": 1}).to_list()
        )
        final = {d["wamid"]: d.get("status") for d in docs}
        wrong = {w: (final.get(w), want) for w, want in expected.items() if final.get(w) != want}
        verdict.notes["wrong_final_status"] = len(wrong)
        inbound = {str(d["wamid"]) for d in docs if d.get("direction") == "inbound"}
        verdict.notes["messages_filled"] = len(inbound)
        fault_report(verdict)
        run.assert_clean(verdict)
        assert not wrong, f"final status (got, expected) differs for {wrong}\n{run.context()}"
        assert len(inbound) == INBOUND, run.context()
