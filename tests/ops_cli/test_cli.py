"""The inbox-ops command, run as the operator runs it (a real process, a real store)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pymongo import AsyncMongoClient

from inbox_common.tokens import TOKEN_PREFIX, find_token
from tests import infra

pytestmark = pytest.mark.integration


def inbox_ops(*args: str, mongo_url: str, db: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MONGODB_URL": mongo_url, "MONGODB_DB": db, "MONGODB_TIMEOUT_MS": "1500"}
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
    assert token not in str(stored)  # only the hash is stored


def test_bad_role_and_unreachable_store_fail_clearly(mongo_db_name: str) -> None:
    unreachable = f"mongodb://127.0.0.1:{infra.free_port()}/?directConnection=true"
    bad_role = inbox_ops(
        "token", "create", "--role", "root", "--tenant", "acme",
        mongo_url=unreachable, db=mongo_db_name,
    )  # fmt: skip
    assert bad_role.returncode == 2
    assert "invalid choice: 'root'" in bad_role.stderr
    down = inbox_ops("db-deploy", mongo_url=unreachable, db=mongo_db_name)
    assert down.returncode == 3
    assert "check MONGODB_URL" in down.stderr
    bad_url = inbox_ops("db-deploy", mongo_url="postgres://x", db=mongo_db_name)
    assert bad_url.returncode == 2
    assert "MONGODB_URL" in bad_url.stderr
