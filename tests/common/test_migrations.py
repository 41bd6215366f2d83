"""Migrations against the real MongoDB-wire server: apply, re-apply, and the schema check."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from pymongo.errors import DuplicateKeyError, WriteError

from inbox_common.store.client import Database, create_client
from inbox_common.store.migrations import applied_versions, apply_migrations, check_schema
from inbox_common.store.schema import (
    MESSAGES,
    MIGRATIONS,
    SCHEMA_MIGRATIONS,
    WEBHOOK_EVENTS,
    WEBHOOK_RETENTION_SECONDS,
    expected_indexes,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def db(mongo_url: str, mongo_db_name: str) -> AsyncIterator[Database]:
    """An empty database (the ``mongo_db_name`` fixture drops it afterwards)."""
    client = create_client(mongo_url, app_name="migration-tests")
    yield client[mongo_db_name]
    await client.close()


async def test_apply_on_an_empty_database_matches_the_code(db: Database) -> None:
    applied = await apply_migrations(db)

    assert [m.version for m in applied] == [m.version for m in MIGRATIONS]
    assert await check_schema(db) == []
    recorded = await applied_versions(db)
    assert set(recorded) == {m.version for m in MIGRATIONS}
    assert all(isinstance(r["applied_at"], datetime) for r in recorded.values())


async def test_every_expected_index_exists_after_apply(db: Database) -> None:
    await apply_migrations(db)

    for collection, name in expected_indexes():
        assert name in await db[collection].index_information(), f"{collection}.{name}"


async def test_apply_twice_applies_nothing_the_second_time(db: Database) -> None:
    await apply_migrations(db)
    first = await applied_versions(db)

    assert await apply_migrations(db) == []
    assert await applied_versions(db) == first
    assert await check_schema(db) == []


async def test_a_fresh_database_is_behind(db: Database) -> None:
    problems = await check_schema(db)

    assert any(p.startswith("behind: migration 1 ") for p in problems), problems
    assert f"collection {MESSAGES} is missing" in problems


async def test_a_dropped_index_is_named(db: Database) -> None:
    await apply_migrations(db)
    await db[MESSAGES].drop_index("wamid_unique")

    assert await check_schema(db) == ["index messages.wamid_unique is missing"]


async def test_an_index_with_other_options_differs(db: Database) -> None:
    await apply_migrations(db)
    await db[WEBHOOK_EVENTS].drop_index("received_ttl")
    await db[WEBHOOK_EVENTS].create_index(
        [("received_at", 1)], name="received_ttl", expireAfterSeconds=60
    )

    problems = await check_schema(db)

    assert len(problems) == 1
    assert problems[0].startswith(
        "index webhook_events.received_ttl differs: expireAfterSeconds=60"
    )


async def test_an_unknown_applied_migration_is_ahead(db: Database) -> None:
    await apply_migrations(db)
    await db[SCHEMA_MIGRATIONS].insert_one(
        {"_id": 999, "name": "from the future", "checksum": "x", "applied_at": datetime.now(UTC)}
    )

    problems = await check_schema(db)

    assert problems == [
        "ahead: migration 999 (from the future) is applied but unknown to this code"
    ]
    # Applying again must not touch the unknown record nor re-run known migrations.
    assert await apply_migrations(db) == []


async def test_an_edited_migration_is_detected_by_checksum(db: Database) -> None:
    await apply_migrations(db)
    await db[SCHEMA_MIGRATIONS].update_one({"_id": 1}, {"$set": {"checksum": "0" * 16}})

    assert await check_schema(db) == ["migration 1 was applied from a different definition"]


async def test_unique_wamid_rejects_a_duplicate(db: Database) -> None:
    await apply_migrations(db)
    await db[MESSAGES].insert_one({"wamid": "wamid.same"})

    with pytest.raises(DuplicateKeyError):
        await db[MESSAGES].insert_one({"wamid": "wamid.same"})
    assert await db[MESSAGES].count_documents({}) == 1


async def test_the_validator_rejects_a_message_without_wamid(db: Database) -> None:
    await apply_migrations(db)

    with pytest.raises(WriteError):
        await db[MESSAGES].insert_one({"body": "no wamid"})


async def test_webhook_events_expire_by_received_at(db: Database) -> None:
    await apply_migrations(db)

    indexes = await db[WEBHOOK_EVENTS].index_information()
    ttl = [ix for ix in indexes.values() if "expireAfterSeconds" in ix]

    assert len(ttl) == 1
    assert [tuple(k) for k in ttl[0]["key"]] == [("received_at", 1)]
    assert ttl[0]["expireAfterSeconds"] == WEBHOOK_RETENTION_SECONDS
