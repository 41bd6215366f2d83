"""The alerts library: one active alert per condition, the severity from the triage rules,
racing raisers, reconciliation after a complete check, and every rule's runbook section."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from inbox_common.alerts import (
    RULES,
    AlertKind,
    Alerts,
    AlertStatus,
    Finding,
    dedupe_key,
)
from inbox_common.store.client import Database
from inbox_common.store.collections import ALERTS
from tests.deploy.test_observability import runbook_anchors

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_every_kind_has_a_rule_whose_runbook_section_exists() -> None:
    anchors = runbook_anchors(REPO)
    assert set(RULES) == set(AlertKind)
    for kind, rule in RULES.items():
        path, _, anchor = rule.runbook.partition("#")
        assert path == "docs/runbook.md", kind
        assert anchor in anchors, f"{kind}: docs/runbook.md has no #{anchor}"


@pytest.mark.parametrize("kind", list(AlertKind), ids=lambda kind: kind.value)
async def test_the_severity_is_the_rules_not_the_raisers(db: Database, kind: AlertKind) -> None:
    doc = await Alerts(db).raise_alert(kind, title="t", subject="s", tenant="acme")

    assert (doc["severity"], doc["runbook"]) == (RULES[kind].severity.value, RULES[kind].runbook)
    assert doc["dedupe_key"] == dedupe_key(kind, "acme", "s")


async def test_a_condition_that_lasts_is_one_alert_counted_and_one_that_returns_is_new(
    db: Database,
) -> None:
    alerts = Alerts(db)
    first = await alerts.raise_alert(AlertKind.SENDS_STUCK, title="3 late", tenant="acme")
    await alerts.acknowledge(first["_id"], scope=None, by="agent:1")
    again = await alerts.raise_alert(
        AlertKind.SENDS_STUCK, title="5 late", tenant="acme", evidence={"late": 5}
    )

    assert again["_id"] == first["_id"]
    assert (again["count"], again["title"], again["evidence"]) == (2, "5 late", {"late": 5})
    assert again["status"] == AlertStatus.ACKNOWLEDGED  # the acknowledgement stays
    assert again["first_seen"] == first["first_seen"]
    # Another tenant's same condition is another alert.
    other = await alerts.raise_alert(AlertKind.SENDS_STUCK, title="1 late", tenant="globex")
    assert other["_id"] != first["_id"]

    await alerts.resolve(AlertKind.SENDS_STUCK, tenant="acme", by="maintenance")
    back = await alerts.raise_alert(AlertKind.SENDS_STUCK, title="late again", tenant="acme")

    assert back["_id"] != first["_id"]
    assert (back["count"], back["status"]) == (1, AlertStatus.OPEN)
    assert await db[ALERTS].count_documents({"tenant": "acme"}) == 2


async def test_raisers_racing_on_a_new_condition_make_one_alert(db: Database) -> None:
    alerts = Alerts(db)
    raised = await asyncio.gather(
        *(
            alerts.raise_alert(AlertKind.DEAD_LETTERS, title=f"seen by {n}", subject="q")
            for n in range(8)
        )
    )

    assert len({doc["_id"] for doc in raised}) == 1
    [doc] = await db[ALERTS].find({}).to_list()
    assert doc["count"] == 8


async def test_reconcile_raises_what_holds_resolves_what_cleared_and_keeps_the_unknown(
    db: Database,
) -> None:
    alerts = Alerts(db)
    kinds = (AlertKind.CHANNEL_QUIET, AlertKind.CHANNEL_CHECK_FAILED)
    for subject in ("c1", "c2", "c3"):
        await alerts.raise_alert(AlertKind.CHANNEL_QUIET, title="quiet", subject=subject)
    unrelated = await alerts.raise_alert(AlertKind.SENDS_STUCK, title="late")
    unknown = dedupe_key(AlertKind.CHANNEL_QUIET, None, "c3")

    done = await alerts.reconcile(
        kinds,
        [Finding(AlertKind.CHANNEL_QUIET, title="still quiet", subject="c1")],
        keep=[unknown],
        by="maintenance:test",
    )

    assert done.raised == (dedupe_key(AlertKind.CHANNEL_QUIET, None, "c1"),)
    assert done.resolved == (dedupe_key(AlertKind.CHANNEL_QUIET, None, "c2"),)
    status = {doc["subject"]: doc["status"] async for doc in db[ALERTS].find({})}
    assert status == {"c1": "open", "c2": "resolved", "c3": "open", "": "open"}
    assert (await alerts.get(unrelated["_id"], scope=None) or {})["status"] == "open"
    with pytest.raises(ValueError, match="not among the reconciled kinds"):
        await alerts.reconcile(kinds, [Finding(AlertKind.SENDS_STUCK, title="x")], by="t")
