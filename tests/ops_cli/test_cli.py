"""The inbox-ops command, run as the operator runs it (a real process, a real store)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import orjson
import pytest
from pymongo import AsyncMongoClient

from inbox_common.broker.topology import Names, declare, everything
from inbox_common.contracts.delivery import WebhookDelivery
from inbox_common.local.ports import free_port
from inbox_common.store.migrations import apply_migrations
from inbox_common.tokens import TOKEN_PREFIX, find_token
from inbox_testkit import backends
from inbox_testkit.store import record_webhook

pytestmark = pytest.mark.integration


def inbox_ops(
    *args: str, mongo_url: str, db: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MONGODB_URL": mongo_url,
        "MONGODB_DB": db,
        "MONGODB_TIMEOUT_MS": "1500",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "inbox_ops", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_db_deploy_check_then_apply_then_check(mongo_url: str, mongo_db_name: str) -> None:
    before = inbox_ops("db-deploy", "--check", mongo_url=mongo_url, db=mongo_db_name)
    assert before.returncode == 1
    assert "behind: migration 1" in before.stderr

    applied = inbox_ops("db-deploy", mongo_url=mongo_url, db=mongo_db_name)
    assert applied.returncode == 0, applied.stderr
    assert "applied migration 1" in applied.stdout

    again = inbox_ops("db-deploy", mongo_url=mongo_url, db=mongo_db_name)
    assert again.returncode == 0
    assert "nothing to apply" in again.stdout

    after = inbox_ops("db-deploy", "--check", mongo_url=mongo_url, db=mongo_db_name)
    assert after.returncode == 0, after.stderr
    assert "schema ok" in after.stdout


async def test_check_names_a_missing_index_and_an_unknown_migration(
    mongo_url: str, mongo_db_name: str
) -> None:
    assert inbox_ops("db-deploy", mongo_url=mongo_url, db=mongo_db_name).returncode == 0
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_url)
    try:
        db = client[mongo_db_name]
        await db["messages"].drop_index("wamid_unique")
        await db["schema_migrations"].insert_one({"_id": 999, "name": "from a newer release"})
    finally:
        await client.close()
    check = inbox_ops("db-deploy", "--check", mongo_url=mongo_url, db=mongo_db_name)
    assert check.returncode == 1
    assert "index messages.wamid_unique is missing" in check.stderr
    assert "ahead: migration 999" in check.stderr
    as_json = inbox_ops("db-deploy", "--check", "--json", mongo_url=mongo_url, db=mongo_db_name)
    assert as_json.returncode == 1
    answer = orjson.loads(as_json.stdout)
    assert (answer["ok"], answer["applied"]) == (False, [])
    assert any("wamid_unique is missing" in p for p in answer["problems"])


async def test_token_create_prints_only_the_token(mongo_url: str, mongo_db_name: str) -> None:
    result = inbox_ops(
        "token", "create", "--role", "admin", "--tenant", "acme",
        mongo_url=mongo_url, db=mongo_db_name,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert result.stdout == token + "\n"
    assert token.startswith(TOKEN_PREFIX)
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_url)
    try:
        record = await find_token(client[mongo_db_name], token)
        stored = await client[mongo_db_name]["api_tokens"].find_one({})
    finally:
        await client.close()
    assert record is not None
    assert record["role"] == "admin"
    assert record["tenant"] == "acme"
    assert stored is not None
    listed = inbox_ops("token", "list", "--json", mongo_url=mongo_url, db=mongo_db_name)
    assert listed.returncode == 0, listed.stderr
    [entry] = orjson.loads(listed.stdout)
    assert (entry["id"], entry["role"], entry["revoked_at"]) == (str(stored["_id"]), "admin", None)
    assert token not in listed.stdout
    shown = inbox_ops("token", "list", mongo_url=mongo_url, db=mongo_db_name)
    assert shown.stdout.splitlines()[0].split() == [
        "ID", "TENANT", "ROLE", "CREATED", "REVOKED", "NAME"
    ]  # fmt: skip
    assert str(stored["_id"]) in shown.stdout
    assert token not in str(stored)  # only the hash is stored


def test_bad_role_and_unreachable_store_fail_clearly(mongo_db_name: str) -> None:
    unreachable = f"mongodb://127.0.0.1:{free_port()}/?directConnection=true"
    bad_role = inbox_ops(
        "token", "create", "--role", "root", "--tenant", "acme",
        mongo_url=unreachable, db=mongo_db_name,
    )  # fmt: skip
    assert bad_role.returncode == 2
    assert "'root' is not one of 'agent', 'admin', 'superadmin'" in bad_role.stderr
    down = inbox_ops("db-deploy", mongo_url=unreachable, db=mongo_db_name)
    assert down.returncode == 3
    assert "check MONGODB_URL" in down.stderr
    bad_url = inbox_ops("db-deploy", mongo_url="postgres://x", db=mongo_db_name)
    assert bad_url.returncode == 2
    assert "MONGODB_URL" in bad_url.stderr


async def test_webhooks_replay_publishes_failed_events_again(
    mongo_url: str, mongo_db_name: str, amqp_url: str, amqp_namespace: backends.AmqpNamespace
) -> None:
    amqp_namespace.track_topology()
    names = Names(amqp_namespace.name)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await declare(channel, everything(names))
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url, tz_aware=True)
        try:
            db = client[mongo_db_name]
            await apply_migrations(db)
            bodies = [f'{{"n":{n}}}'.encode() for n in range(3)]
            for n, body in enumerate(bodies):
                delivery = WebhookDelivery(
                    sha256=hashlib.sha256(body).hexdigest(),
                    request_id=f"r{n}",
                    received_at=datetime.now(UTC),
                    body=body,
                )
                code = "unknown_channel" if n < 2 else "invalid_payload:schema"
                await record_webhook(
                    db, delivery, status="failed", phone_number_ids=["42"], error={"code": code}
                )
        finally:
            await client.close()
        env = {"RABBITMQ_URL": amqp_url, "AMQP_NAMESPACE": amqp_namespace.name}
        dry = inbox_ops(
            "webhooks", "replay", "--error-code", "unknown_channel", "--dry-run",
            mongo_url=mongo_url, db=mongo_db_name, env=env,
        )  # fmt: skip
        assert dry.returncode == 0, dry.stderr
        assert "2 event(s) match" in dry.stdout
        counted = inbox_ops(
            "webhooks", "replay", "--error-code", "unknown_channel", "--dry-run", "--json",
            mongo_url=mongo_url, db=mongo_db_name, env=env,
        )  # fmt: skip
        assert orjson.loads(counted.stdout) == {
            "matched": 2, "replayed": 0, "remaining": 2, "dry_run": True, "limit": 1000
        }  # fmt: skip
        queue = await channel.get_queue(names.webhooks_queue)
        assert await queue.get(fail=False, timeout=1) is None

        done = inbox_ops(
            "webhooks", "replay", "--error-code", "unknown_channel",
            mongo_url=mongo_url, db=mongo_db_name, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "replayed 2 event(s)" in done.stdout
        received = []
        for _ in range(2):
            message = await queue.get(timeout=5)
            await message.ack()
            received.append(WebhookDelivery.from_amqp(message.body, message.headers))
        assert [d.body for d in received] == bodies[:2]
        assert [d.request_id for d in received] == ["r0", "r1"]
        assert await queue.get(fail=False, timeout=1) is None


async def test_webhooks_replay_since_takes_a_duration_or_a_time_and_refuses_anything_else(
    mongo_url: str, mongo_db_name: str, amqp_url: str, amqp_namespace: backends.AmqpNamespace
) -> None:
    amqp_namespace.track_topology()
    names = Names(amqp_namespace.name)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await declare(channel, everything(names))
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url, tz_aware=True)
        now = datetime.now(UTC)
        try:
            db = client[mongo_db_name]
            await apply_migrations(db)
            for body, age in ((b'{"old":1}', timedelta(hours=3)), (b'{"new":1}', timedelta(0))):
                delivery = WebhookDelivery(
                    sha256=hashlib.sha256(body).hexdigest(),
                    request_id="r",
                    received_at=now - age,
                    body=body,
                )
                await record_webhook(
                    db, delivery, status="failed", phone_number_ids=[], error={"code": "x"}
                )
        finally:
            await client.close()
        env = {"RABBITMQ_URL": amqp_url, "AMQP_NAMESPACE": amqp_namespace.name}

        def replay(*args: str) -> subprocess.CompletedProcess[str]:
            return inbox_ops(
                "webhooks", "replay", *args, mongo_url=mongo_url, db=mongo_db_name, env=env
            )

        four_hours_ago = (now - timedelta(hours=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert "1 event(s) match" in replay("--since", "2h", "--dry-run").stdout
        assert "1 event(s) match" in replay("--since", "90m", "--dry-run").stdout
        assert "2 event(s) match" in replay("--since", "1d", "--dry-run").stdout
        assert "2 event(s) match" in replay("--since", four_hours_ago, "--dry-run").stdout
        for wrong in ("soon", "2 hours", "0m"):
            refused = replay("--since", wrong, "--dry-run")
            assert refused.returncode == 2, wrong
            assert "a duration back from now (30m, 2h, 7d)" in refused.stderr or (
                "a duration like 30s, 30m, 2h or 7d" in refused.stderr
            ), refused.stderr

        done = replay("--since", "2h")
        assert done.returncode == 0, done.stderr
        assert "replayed 1 event(s)" in done.stdout
        queue = await channel.get_queue(names.webhooks_queue)
        message = await queue.get(timeout=5)
        await message.ack()
        assert message.body == b'{"new":1}'
        assert await queue.get(fail=False, timeout=1) is None
