"""``inbox-ops incident``: a timestamped snapshot folder (snapshot.json and snapshot.md) of
what the runbook asks for, a suggested severity by its triage with the evidence, the
communication message filled in; and no secret in it, wherever one was planted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest
from aio_pika.abc import AbstractChannel
from bson import ObjectId

from inbox_common.alerts import AlertKind, Alerts
from inbox_common.store.channels import Channels
from inbox_common.store.collections import CHANNELS, JOB_LOCKS
from inbox_ops.incident import SNAPSHOT_JSON, SNAPSHOT_MD, take_snapshot
from inbox_retry.worker import JOB
from inbox_testkit.store import cipher, record_webhook
from inbox_testkit.tenants import ACME_NUMBER
from tests.ops_cli.conftest import (
    HealthStandIn,
    Platform,
    delivery,
    inbox_ops,
    report,
    targets,
)

pytestmark = pytest.mark.integration


async def publish(channel: AbstractChannel, queue: str, count: int) -> None:
    for n in range(count):
        await channel.default_exchange.publish(aio_pika.Message(f"{n}".encode()), queue)


def only_snapshot(out: Path) -> tuple[Path, dict[str, str]]:
    """The one snapshot folder under ``out``, and its files' text by name."""
    [folder] = out.iterdir()
    return folder, {path.name: path.read_text() for path in folder.iterdir()}


async def snapshot_of(out: Path, stand_ins: dict[str, HealthStandIn]) -> tuple[Path, Any, str]:
    folder, _ = await take_snapshot(out, targets=targets(stand_ins), seconds=5, started=None)
    doc = orjson.loads((folder / SNAPSHOT_JSON).read_bytes())
    return folder, doc, (folder / SNAPSHOT_MD).read_text()


async def test_a_snapshot_holds_what_the_runbook_asks_for_and_suggests_p1(
    platform: Platform,
    stand_ins: dict[str, HealthStandIn],
    amqp_channel: AbstractChannel,
    tmp_path: Path,
) -> None:
    names, db = platform.names, platform.db
    # The retry-worker died ten minutes ago (its lock went stale); maintenance saw it.
    await db[JOB_LOCKS].update_one(
        {"_id": JOB}, {"$set": {"heartbeatAt": datetime.now(UTC) - timedelta(minutes=10)}}
    )
    alert = await Alerts(db).raise_alert(
        AlertKind.JOB_LOCK_STALE, title="the campaign-retry lock is stale", subject=JOB
    )
    stand_ins["inbox-api"].body = report("degraded", rabbitmq=("down", "reconnecting"))
    await publish(amqp_channel, names.retry_due_queue, 2)
    await publish(amqp_channel, names.dead_letter_queue(names.webhooks_queue), 1)
    failed_ids = []
    for n, code in enumerate(["unknown_channel", "unknown_channel", "invalid_payload:schema"]):
        body = f'{{"n":{n}}}'.encode()
        await record_webhook(
            db, delivery(body), status="failed", phone_number_ids=[], error={"code": code}
        )
        entry = await db["webhook_events"].find_one({"request_id": delivery(body).request_id})
        assert entry is not None
        failed_ids.append(str(entry["_id"]))
    await Channels(db).disconnect(ObjectId(platform.channel["_id"]), reason="190", code=190)

    folder, doc, md = await snapshot_of(tmp_path, stand_ins)

    assert folder.parent == tmp_path
    assert folder.name.startswith("incident-")
    # The triage: a stale retry lock (and its alert) is P1; the degraded API is P3.
    assert doc["severity"]["suggested"] == "P1"
    evidence = doc["severity"]["evidence"]
    assert [e["severity"] for e in evidence] == sorted(e["severity"] for e in evidence)
    signals = " | ".join(e["signal"] for e in evidence)
    assert "retry lock: stale (isStaleLock)" in signals
    assert "inbox-api health is degraded: rabbitmq=down (reconnecting)" in signals
    assert f"channels: 1 of 1 disconnected: {ACME_NUMBER} (190)" in signals
    # The communication: P1 goes to the incident channel, with an update every 10 minutes.
    message = doc["communication"]
    assert message.startswith("[P1] WhatsApp inbox incident")
    first_seen = alert["first_seen"]
    assert f"Start time: {first_seen:%Y-%m-%d %H:%M} UTC" in message
    assert "Impact: failed sends are not retried" in message
    assert "ETA: <to be estimated>" in message
    assert "Next update:" in message
    assert "(every 10 minutes until resolved)" in message
    # Health and readiness as the commands give them.
    assert [s["service"] for s in doc["health"]["services"]] == [
        "webhook-ingest",
        "inbox-api",
        "retry-worker",
        "maintenance",
    ]
    assert doc["health"]["status"] == "degraded"
    assert doc["readiness"]["verdict"] == "fail"
    # Queues: depths and consumers; dead-letter queues apart.
    queues = {q["name"]: q for q in doc["queues"]["queues"]}
    assert queues[names.retry_due_queue]["messages"] == 2
    assert queues[names.webhooks_queue]["consumers"] == 1
    assert queues[names.number_queue(ACME_NUMBER)]["consumers"] == 1
    assert names.retry_tier_queue("5s") in queues
    dead = {q["name"]: q["messages"] for q in doc["queues"]["dead_letters"]}
    assert dead[names.dead_letter_queue(names.webhooks_queue)] == 1
    assert dead[names.dead_letter_queue(names.outbound_queue)] == 0
    # The last hour of webhooks: counts per reason and the newest failed ids.
    webhooks = doc["store"]["webhooks"]
    assert (webhooks["total"], webhooks["failed"]) == (4, 3)
    assert webhooks["failed_by_reason"] == {"unknown_channel": 2, "invalid_payload:schema": 1}
    assert [e["id"] for e in webhooks["latest_failed"]] == failed_ids[::-1]
    # Alerts, the lock, the channels, the versions.
    assert [a["kind"] for a in doc["store"]["alerts"]] == ["job_lock_stale"]
    lock = doc["store"]["retry_lock"]
    assert (lock["job"], lock["isStaleLock"], lock["lockedBy"]) == (
        JOB,
        True,
        "retry-worker-test",
    )
    [channel] = doc["store"]["channels"]
    assert (channel["phone_number_id"], channel["status"]) == (ACME_NUMBER, "disconnected")
    assert "access_token" not in channel
    assert doc["versions"]["packages"]["inbox-ops"] == "0.1.0"
    assert doc["versions"]["services"]["inbox-api"] == "0.1.0"
    assert doc["where"]["namespace"] == names.namespace
    # The markdown says the same for people.
    for heading in (
        "Suggested severity: **P1**",
        "## Evidence",
        "## Communication (runbook section 5)",
        "## Health",
        "## Readiness",
        "## Queues",
        "## Dead-letter queues",
        "## Webhooks, last 60 minutes",
        "## Open alerts",
        "## Retry-worker lock",
        "## Channels",
        "## Versions",
    ):
        assert heading in md, heading
    assert f"| {failed_ids[-1]} |" in md

    # A second snapshot in the same second gets a folder of its own.
    again, _, _ = await snapshot_of(tmp_path, stand_ins)
    assert again != folder


async def test_a_service_down_suggests_p0_and_a_calm_platform_none(
    platform: Platform, stand_ins: dict[str, HealthStandIn], tmp_path: Path
) -> None:
    _, calm, _ = await snapshot_of(tmp_path, stand_ins)
    assert calm["severity"] == {"suggested": None, "evidence": []}
    assert calm["communication"].startswith("No broadcast needed (no incident signal)")

    stand_ins["webhook-ingest"].body = report("down", rabbitmq=("down", "not connected"))
    stand_ins["webhook-ingest"].http_status = 503
    _, down, md = await snapshot_of(tmp_path, stand_ins)
    assert down["severity"]["suggested"] == "P0"
    assert down["severity"]["evidence"][0]["signal"] == (
        "webhook-ingest health is down: rabbitmq=down (not connected)"
    )
    assert down["communication"].startswith("[P0] WhatsApp inbox incident")
    assert "Suggested severity: **P0**" in md


async def test_no_secret_reaches_the_snapshot(
    platform: Platform,
    stand_ins: dict[str, HealthStandIn],
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    db = platform.db
    planted = {
        "WHATSAPP_WEBHOOK_SECRET": "PLANTED-app-secret-new-5b1e9d,PLANTED-app-secret-old-77c2aa",
        "WHATSAPP_WEBHOOK_VERIFY_TOKEN": "PLANTED-verify-token-c0ffee",
        "JOBS_API_TOKEN": "PLANTED-jobs-token-9e8d7c",
    }
    access_token = "EAAG-PLANTED-access-token-31337"
    body_secret = "PLANTED-body-secret-4f4f4f"
    lock_password = "PLANTED-lock-password-1a2b"
    # A channel with its access token (encrypted at rest, as inbox-api stores it).
    channel = await Channels(db, cipher=cipher()).create(
        tenant="acme",
        fields={"phone_number_id": "106540352242933", "access_token": access_token},
    )
    stored = await db[CHANNELS].find_one({"_id": channel["_id"]})
    assert stored is not None
    # A failed webhook whose body (and error message) carry a secret.
    body = f'{{"entry":[{{"secret":"{body_secret}"}}]}}'.encode()
    await record_webhook(
        db,
        delivery(body),
        status="failed",
        phone_number_ids=[],
        error={"code": "invalid_payload:schema", "message": f"bad input {body_secret}"},
    )
    # Secrets where they should never be: a bug that put the app secret into an alert's
    # evidence, and a password inside a URL in the lock's last error.
    new_secret, old_secret = planted["WHATSAPP_WEBHOOK_SECRET"].split(",")
    await Alerts(db).raise_alert(
        AlertKind.HEALTH_DOWN,
        title="webhook-ingest is down",
        evidence={"leaked": f"secret={old_secret}"},
    )
    await platform.lock.record(
        ok=False, error=f"amqp://ops:{lock_password}@rabbit:5672/ refused the connection"
    )

    done = await inbox_ops(
        "incident",
        "--out",
        str(tmp_path),
        *(f"--url={service}={url}" for service, url in targets(stand_ins).items()),
        env=planted,
    )
    assert done.returncode == 0, done.stderr
    assert "suggested severity: P0" in done.stdout  # the open P0 alert
    folder, written = only_snapshot(tmp_path)
    assert str(folder / SNAPSHOT_MD) in done.stdout
    assert set(written) == {SNAPSHOT_JSON, SNAPSHOT_MD}

    secrets = [
        new_secret,
        old_secret,
        planted["WHATSAPP_WEBHOOK_VERIFY_TOKEN"],
        planted["JOBS_API_TOKEN"],
        env["CHANNEL_TOKEN_KEYS"],
        access_token,
        stored["access_token"],  # not even encrypted
        body_secret,
        lock_password,
        "guest:guest",  # the broker's password, in RABBITMQ_URL
    ]
    for name, text in [*written.items(), ("stdout", done.stdout), ("stderr", done.stderr)]:
        for secret in secrets:
            assert secret not in text, f"{secret!r} in {name}"
    snapshot = orjson.loads(written[SNAPSHOT_JSON])
    [leaked] = [a for a in snapshot["store"]["alerts"] if a["kind"] == "health_down"]
    assert leaked["evidence"] == {"leaked": "secret=***"}
    assert snapshot["where"]["rabbitmq"].startswith("amqp://guest:***@")
    assert "ops:***@rabbit" in snapshot["store"]["retry_lock"]["lastError"]
    settings = {c["check"]: c["detail"] for c in snapshot["readiness"]["checks"]}
    assert settings["setting WHATSAPP_WEBHOOK_SECRET"] == "set"
