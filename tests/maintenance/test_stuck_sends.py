"""``stuck_sends`` against the real store: each state measured from its own clock, one P2 per
tenant with the counts and the oldest ids, and resolved once the messages move on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId

from inbox_common.alerts import AlertKind
from inbox_common.store.client import Database
from inbox_common.store.collections import MESSAGES
from inbox_maintenance.service import Maintenance
from tests.maintenance.conftest import active, outbound_message, run_ok

pytestmark = pytest.mark.integration

LONG_AGO = timedelta(minutes=16)  # the bound is 15 minutes
JUST_NOW = timedelta(minutes=14)


def ago(delta: timedelta) -> datetime:
    return datetime.now(UTC) - delta


async def test_each_state_past_its_bound_counts_and_fresh_or_held_ones_do_not(
    runner: Maintenance, db: Database
) -> None:
    queued = await outbound_message(
        db, tenant="acme", send_state="queued", created_at=ago(LONG_AGO)
    )
    sending = await outbound_message(
        db, tenant="acme", send_state="sending", sending_since=ago(LONG_AGO)
    )
    retrying = await outbound_message(
        db, tenant="acme", send_state="retrying", retry_due_at=ago(LONG_AGO)
    )
    # Not stuck: younger than the bound, a retry not due yet, held (its channel's alert),
    # paused, accepted long ago.
    await outbound_message(db, tenant="acme", send_state="queued", created_at=ago(JUST_NOW))
    await outbound_message(db, tenant="acme", send_state="sending", sending_since=ago(JUST_NOW))
    await outbound_message(
        db, tenant="acme", send_state="retrying", retry_due_at=datetime.now(UTC) + LONG_AGO,
        created_at=ago(timedelta(hours=5)),
    )  # fmt: skip
    for state in ("held", "paused", "accepted", "failed"):
        await outbound_message(db, tenant="acme", send_state=state, created_at=ago(LONG_AGO * 9))

    outcome = await run_ok(runner, "stuck_sends")

    [alert] = await active(db, AlertKind.SENDS_STUCK)
    assert alert["severity"] == "P2"
    assert alert["tenant"] == "acme"
    assert alert["evidence"]["counts"] == {"queued": 1, "sending": 1, "retrying": 1}
    assert alert["evidence"]["total"] == 3
    assert {m["id"] for m in alert["evidence"]["oldest"]} == {
        str(queued),
        str(sending),
        str(retrying),
    }
    assert alert["title"].startswith("3 outbound messages stuck for over 15 minutes")
    assert "3 stuck outbound messages in 1 tenants" in outcome.summary


async def test_one_alert_per_tenant_each_with_only_its_own_messages(
    runner: Maintenance, db: Database
) -> None:
    acme = [
        await outbound_message(db, tenant="acme", send_state="queued", created_at=ago(LONG_AGO))
        for _ in range(7)
    ]
    globex = await outbound_message(
        db, tenant="globex", send_state="sending", sending_since=ago(timedelta(hours=2))
    )

    await run_ok(runner, "stuck_sends")

    alerts = {a["tenant"]: a for a in await active(db, AlertKind.SENDS_STUCK)}
    assert set(alerts) == {"acme", "globex"}
    assert alerts["acme"]["evidence"]["counts"] == {"queued": 7}
    assert len(alerts["acme"]["evidence"]["oldest"]) == 5  # the five oldest only
    assert {m["id"] for m in alerts["acme"]["evidence"]["oldest"]} <= {str(m) for m in acme}
    assert [m["id"] for m in alerts["globex"]["evidence"]["oldest"]] == [str(globex)]
    assert str(globex) not in str(alerts["acme"])


async def test_the_alert_counts_each_sighting_and_resolves_once_they_moved_on(
    runner: Maintenance, db: Database
) -> None:
    stuck = await outbound_message(db, tenant="acme", send_state="queued", created_at=ago(LONG_AGO))
    await run_ok(runner, "stuck_sends")
    await run_ok(runner, "stuck_sends")
    [alert] = await active(db, AlertKind.SENDS_STUCK)
    assert alert["count"] == 2

    await db[MESSAGES].update_one({"_id": stuck}, {"$set": {"send_state": "accepted"}})
    await run_ok(runner, "stuck_sends")

    assert await active(db, AlertKind.SENDS_STUCK) == []
    done = await db["alerts"].find_one({"_id": alert["_id"]})
    assert done is not None
    assert (done["status"], done["resolved_by"]) == ("resolved", "maintenance:stuck_sends")


async def test_a_backlog_behind_a_number_that_is_sending_is_not_stuck(
    runner: Maintenance, db: Database
) -> None:
    """A big campaign waits at its number's pace: its tail is old but moving. A number that
    has sent nothing for the whole bound while messages wait is stuck."""
    sending, silent = ObjectId(), ObjectId()
    for channel in (sending, silent):
        await outbound_message(
            db, tenant="acme", send_state="queued", created_at=ago(LONG_AGO), channel_id=channel
        )
    await outbound_message(
        db, tenant="acme", send_state="accepted", channel_id=sending,
        created_at=ago(LONG_AGO * 2), accepted_at=ago(timedelta(seconds=5)),
    )  # fmt: skip
    # Accepted long ago only: no sign of a number that sends now.
    await outbound_message(
        db, tenant="acme", send_state="accepted", channel_id=silent,
        created_at=ago(LONG_AGO * 2), accepted_at=ago(LONG_AGO),
    )  # fmt: skip

    outcome = await run_ok(runner, "stuck_sends")

    [alert] = await active(db, AlertKind.SENDS_STUCK)
    assert alert["evidence"]["counts"] == {"queued": 1}
    assert [m["channel_id"] for m in alert["evidence"]["oldest"]] == [str(silent)]
    assert "1 queued behind numbers that are sending" in outcome.summary

    # The silent number sends again: its backlog moves, and the alert resolves.
    await outbound_message(
        db, tenant="acme", send_state="accepted", channel_id=silent, accepted_at=ago(JUST_NOW)
    )
    await run_ok(runner, "stuck_sends")
    assert await active(db, AlertKind.SENDS_STUCK) == []
