"""``inbox-ops readiness``: the go/no-go after a deploy. Every check passes on a platform that
is ready; each prerequisite that is not met fails (or warns) its own row, saying what is
wrong and what to do, and never prints a secret's value."""

from __future__ import annotations

import gc
import warnings
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from bson import ObjectId

from inbox_common.alerts import AlertKind, Alerts
from inbox_common.local.ports import free_port
from inbox_common.store.channels import Channels
from inbox_common.store.collections import JOB_LOCKS
from inbox_ops.readiness import Check, readiness, readiness_checks
from inbox_ops.report import Verdict
from inbox_retry.worker import JOB
from inbox_testkit import backends
from inbox_testkit.store import record_webhook
from inbox_testkit.tenants import ACME_NUMBER
from tests.ops_cli.conftest import (
    JOBS_TOKEN,
    VERIFY_TOKEN,
    WEBHOOK_SECRET,
    Platform,
    delivery,
    inbox_ops,
)

pytestmark = pytest.mark.integration


async def checks() -> dict[str, Check]:
    found, _ = await readiness_checks()
    return {check.name: check for check in found}


def not_passing(found: dict[str, Check]) -> dict[str, Verdict]:
    return {name: c.verdict for name, c in found.items() if c.verdict is not Verdict.PASS}


async def test_a_ready_platform_passes_every_check(platform: Platform) -> None:
    status, text = await readiness(as_json=False)
    assert status == 0, text
    found = await checks()
    assert not_passing(found) == {}
    names = platform.names
    for queue in (names.webhooks_queue, names.outbound_queue, names.maintenance_queue):
        assert found[f"queue {queue}"].detail.startswith("1 consumer(s)")
    assert f"queue {names.number_queue(ACME_NUMBER)}" in found
    assert "no consumer by design" in found[f"queue {names.retry_due_queue}"].detail
    assert found["retry lock"].detail.startswith("held by retry-worker-test")
    assert found["setting WHATSAPP_WEBHOOK_SECRET"].detail == "set"
    assert text.endswith(f"readiness: 0 fail, 0 warn, {len(found)} pass: GO")
    for secret in (WEBHOOK_SECRET, VERIFY_TOKEN, JOBS_TOKEN):
        assert secret not in text


async def test_a_missing_secret_fails_its_row(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WHATSAPP_WEBHOOK_SECRET")
    found = await checks()
    assert not_passing(found) == {"setting WHATSAPP_WEBHOOK_SECRET": Verdict.FAIL}
    assert found["setting WHATSAPP_WEBHOOK_SECRET"].detail == (
        "missing: webhook-ingest cannot start without it; set it"
    )


async def test_a_malformed_setting_fails_without_printing_its_value(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHANNEL_TOKEN_KEYS", "not-a-fernet-key-but-a-secret")
    monkeypatch.setenv("JOBS_API_TOKEN", "   ")
    status, text = await readiness(as_json=True)
    assert status == 2
    rows = {c["check"]: c for c in orjson.loads(text)["checks"]}
    keys = rows["setting CHANNEL_TOKEN_KEYS"]
    assert keys["verdict"] == "fail"
    assert keys["detail"] == (
        "malformed: each key must be 32 url-safe base64-encoded bytes (a Fernet key) "
        "(inbox-api, maintenance)"
    )
    assert rows["setting JOBS_API_TOKEN"]["detail"] == "malformed: must not be empty (retry-worker)"
    assert "not-a-fernet-key-but-a-secret" not in text


async def test_migrations_not_applied_fail_with_what_to_run(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, mongo_url: str, mongo_db_name: str
) -> None:
    bare = f"{mongo_db_name}_bare"
    monkeypatch.setenv("MONGODB_DB", bare)
    try:
        found = await checks()
    finally:
        backends.drop_database(mongo_url, bare)
    migrations = found["migrations"]
    assert migrations.verdict is Verdict.FAIL
    assert "behind: migration 1" in migrations.detail
    assert "run `inbox-ops db-deploy`" in migrations.detail
    assert found["store"].verdict is Verdict.PASS


async def test_a_work_queue_without_consumer_fails(platform: Platform) -> None:
    queue = platform.names.maintenance_queue
    await platform.stop_consuming(queue)
    found = await checks()
    assert not_passing(found) == {f"queue {queue}": Verdict.FAIL}
    assert found[f"queue {queue}"].detail == (
        "no consumer (0 messages wait): maintenance is down, paused or cut off from RabbitMQ; "
        "check maintenance's /api/health"
    )


async def test_a_channel_queue_never_declared_fails(platform: Platform) -> None:
    other = "106540352242933"  # tracked by the namespace: deleted at teardown
    await Channels(platform.db).create(
        tenant="acme", fields={"phone_number_id": other, "name": "Sales"}
    )
    found = await checks()
    row = found[f"queue {platform.names.number_queue(other)}"]
    assert row.verdict is Verdict.FAIL
    assert row.detail.startswith(
        "not declared: inbox-api declares it within seconds of the channel's creation"
    )


async def test_a_stale_retry_lock_fails(platform: Platform) -> None:
    # The worker holding the lock died ten minutes ago: its heartbeat stopped then.
    ten_minutes_ago = datetime.now(UTC) - timedelta(minutes=10)
    await platform.db[JOB_LOCKS].update_one(
        {"_id": JOB}, {"$set": {"heartbeatAt": ten_minutes_ago}}
    )
    found = await checks()
    assert not_passing(found) == {"retry lock": Verdict.FAIL}
    detail = found["retry lock"].detail
    assert detail.startswith("stale (isStaleLock): retry-worker-test has not renewed it for 6")
    assert "restart the retry-worker, then run `inbox-ops job campaign-retry` once" in detail


async def test_repeated_retry_failures_warn(platform: Platform) -> None:
    for _ in range(3):
        assert await platform.lock.record(ok=False, error="MongoDB timed out")
    status, _ = await readiness(as_json=False)
    assert status == 1
    found = await checks()
    assert not_passing(found) == {"retry lock": Verdict.WARN}
    assert found["retry lock"].detail.startswith(
        "3 passes failed in a row (last error: MongoDB timed out)"
    )


async def test_an_open_p1_alert_fails_and_a_p2_warns(platform: Platform) -> None:
    alerts = Alerts(platform.db)
    await alerts.raise_alert(
        AlertKind.CHANNEL_DISCONNECTED, title="channel 42 is disconnected", subject="c42"
    )
    found = await checks()
    assert not_passing(found) == {"alerts": Verdict.WARN}
    assert found["alerts"].detail == "open: 1 P2: [P2] channel 42 is disconnected"

    await alerts.raise_alert(AlertKind.JOB_FAILING, title="campaign-retry failed 5 times")
    found = await checks()
    assert not_passing(found) == {"alerts": Verdict.FAIL}
    assert found["alerts"].detail.startswith(
        "open: 1 P1, 1 P2: [P1] campaign-retry failed 5 times; follow each alert's runbook"
    )


async def test_a_disconnected_channel_warns_with_its_number(platform: Platform) -> None:
    channel_id = ObjectId(platform.channel["_id"])
    assert await Channels(platform.db).disconnect(channel_id, reason="token expired", code=190)
    found = await checks()
    assert not_passing(found) == {"channels": Verdict.WARN}
    assert found["channels"].detail.startswith(
        f"1 of 1 disconnected: {ACME_NUMBER} (token expired); their sends are held"
    )


async def test_a_high_webhook_failure_rate_warns_with_the_reasons(platform: Platform) -> None:
    for n in range(3):
        await record_webhook(
            platform.db,
            delivery(f'{{"n":{n}}}'.encode()),
            status="failed",
            phone_number_ids=["42"],
            error={"code": "unknown_channel"},
        )
    old = delivery(b'{"old":1}', age=timedelta(hours=2))  # outside the hour: not counted
    await record_webhook(
        platform.db, old, status="failed", phone_number_ids=[], error={"code": "x"}
    )
    found = await checks()
    assert not_passing(found) == {"webhook failures": Verdict.WARN}
    assert found["webhook failures"].detail.startswith(
        "3 of 4 failed in the last hour (75.0%), above 5.0% (READINESS_WEBHOOK_FAILURE_RATE); "
        "reasons: unknown_channel (3)"
    )


async def test_unreachable_store_and_broker_fail_and_skip_what_needs_them(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MONGODB_URL", f"mongodb://127.0.0.1:{free_port()}/?directConnection=true")
    monkeypatch.setenv("MONGODB_TIMEOUT_MS", "300")
    monkeypatch.setenv("RABBITMQ_URL", f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    try:
        found = await checks()
    finally:
        with warnings.catch_warnings():
            # PyMongo can leave the socket of a refused connect to the collector; collect it
            # here rather than let its ResourceWarning fail whichever test runs next.
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
    assert found["store"].verdict is Verdict.FAIL
    assert found["store"].detail.startswith("MongoDB at mongodb://127.0.0.1:")
    assert found["store"].detail.endswith("check MONGODB_URL and that the database is reachable")
    assert found["retry lock"].detail == "not checked: the store is unreachable"
    assert found["broker"].verdict is Verdict.FAIL
    assert "amqp://guest:***@127.0.0.1" in found["broker"].detail
    assert found["broker"].detail.endswith("check RABBITMQ_URL and that the broker is running")


async def test_the_command_prints_the_table_and_exits_with_the_worst(platform: Platform) -> None:
    await platform.stop_consuming(platform.names.webhooks_queue)
    done = await inbox_ops("readiness", env={})
    assert done.returncode == 2, done.stderr
    assert done.stdout.splitlines()[0].split() == ["CHECK", "RESULT", "DETAIL"]
    assert f"queue {platform.names.webhooks_queue}" in done.stdout
    assert "NO-GO" in done.stdout
    for secret in (WEBHOOK_SECRET, VERIFY_TOKEN, JOBS_TOKEN):
        assert secret not in done.stdout + done.stderr
