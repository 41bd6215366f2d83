"""Apply the schema's migrations (``db-deploy``) and compare the live database with it
(``db-deploy --check``)."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

import orjson
from pymongo.errors import CollectionInvalid, OperationFailure

from inbox_common.store.client import Database
from inbox_common.store.schema import (
    MIGRATIONS,
    SCHEMA_MIGRATIONS,
    Index,
    Migration,
    expected_indexes,
    expected_validators,
)


def checksum(migration: Migration) -> str:
    """A digest of what ``migration`` does, so an edited applied migration is detected."""
    spec: dict[str, Any] = {
        "collections": migration.collections,
        "indexes": [(ix.collection, ix.name, ix.keys, ix.options()) for ix in migration.indexes],
        "validators": migration.validators,
    }
    if migration.data is not None or migration.drop_indexes:
        spec["data"] = migration.data.__qualname__ if migration.data else None
        spec["drop_indexes"] = migration.drop_indexes
    return hashlib.sha256(orjson.dumps(spec, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


async def _ensure_collection(db: Database, name: str) -> None:
    with contextlib.suppress(CollectionInvalid):  # already there: migrations are idempotent
        await db.create_collection(name)


async def _apply(db: Database, migration: Migration) -> None:
    for name in migration.collections:
        await _ensure_collection(db, name)
    for collection, name in migration.drop_indexes:
        with contextlib.suppress(OperationFailure):  # already gone: idempotent
            await db[collection].drop_index(name)
    if migration.data is not None:
        await migration.data(db)
    for index in migration.indexes:
        await db[index.collection].create_index(list(index.keys), **index.options())
    for collection, validator in migration.validators.items():
        await _ensure_collection(db, collection)
        await db.command(
            {"collMod": collection, "validator": validator, "validationLevel": "moderate"}
        )


async def applied_versions(db: Database) -> dict[int, dict[str, Any]]:
    """The migrations recorded in the database, by version."""
    return {doc["_id"]: doc async for doc in db[SCHEMA_MIGRATIONS].find({})}


async def apply_migrations(db: Database, *, up_to: int | None = None) -> list[Migration]:
    """Apply every migration not recorded yet (up to version ``up_to``), in order; returns
    those applied now."""
    done = await applied_versions(db)
    applied = []
    for migration in MIGRATIONS:
        if migration.version in done or (up_to is not None and migration.version > up_to):
            continue
        await _apply(db, migration)
        await db[SCHEMA_MIGRATIONS].update_one(
            {"_id": migration.version},
            {
                "$setOnInsert": {
                    "name": migration.name,
                    "checksum": checksum(migration),
                    "applied_at": datetime.now(UTC),
                }
            },
            upsert=True,
        )
        applied.append(migration)
    return applied


def _index_differs(live: dict[str, Any], want: Index) -> str | None:
    keys = tuple((k, int(v)) for k, v in live.get("key", []))
    if keys != want.keys:
        return f"keys {keys} != {want.keys}"
    if bool(live.get("unique")) != want.unique:
        return f"unique={bool(live.get('unique'))}, expected {want.unique}"
    if live.get("expireAfterSeconds") != want.expire_after_seconds:
        return (
            f"expireAfterSeconds={live.get('expireAfterSeconds')}, "
            f"expected {want.expire_after_seconds}"
        )
    partial = live.get("partialFilterExpression")
    if (dict(partial) if partial is not None else None) != want.partial:
        return f"partialFilterExpression={partial}, expected {want.partial}"
    return None


async def check_schema(db: Database) -> list[str]:
    """What differs between the live database and the code; empty when they match."""
    problems: list[str] = []
    done = await applied_versions(db)
    known = {m.version: m for m in MIGRATIONS}
    for version, migration in known.items():
        record = done.get(version)
        if record is None:
            problems.append(f"behind: migration {version} ({migration.name}) is not applied")
        elif record.get("checksum") != checksum(migration):
            problems.append(f"migration {version} was applied from a different definition")
    problems.extend(
        f"ahead: migration {v} ({done[v].get('name')}) is applied but unknown to this code"
        for v in sorted(set(done) - set(known))
    )
    live_collections = {c["name"]: c.get("options", {}) async for c in await db.list_collections()}
    missing = sorted({c for c, _ in expected_indexes()} - set(live_collections))
    problems.extend(f"collection {c} is missing" for c in missing)
    live_indexes: dict[str, MutableMapping[str, Any]] = {}
    for (collection, name), index in expected_indexes().items():
        if collection in missing:
            continue
        if collection not in live_indexes:
            live_indexes[collection] = await db[collection].index_information()
        live = live_indexes[collection].get(name)
        if live is None:
            problems.append(f"index {collection}.{name} is missing")
        elif (why := _index_differs(live, index)) is not None:
            problems.append(f"index {collection}.{name} differs: {why}")
    for collection, validator in expected_validators().items():
        if collection in missing:
            continue
        live_validator = live_collections[collection].get("validator")
        if _normal(live_validator) != _normal(validator):
            problems.append(f"collection {collection} has a different validator")
    return sorted(set(problems), key=problems.index)


def _normal(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=dict)
