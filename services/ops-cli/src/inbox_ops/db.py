"""``inbox-ops db-deploy [--check]``: apply the migrations, or verify the live schema."""

from __future__ import annotations

import sys

import orjson

from inbox_common.store.client import Database
from inbox_common.store.migrations import apply_migrations, check_schema
from inbox_common.store.schema import MIGRATIONS


async def db_deploy(db: Database, *, check: bool, as_json: bool = False) -> int:
    """Exit status 0 when the schema matches the code (after applying, unless ``check``)."""
    applied = [] if check else await apply_migrations(db)
    problems = await check_schema(db)
    if as_json:
        answer = {
            "version": MIGRATIONS[-1].version,
            "applied": [{"version": m.version, "name": m.name} for m in applied],
            "ok": not problems,
            "problems": problems,
        }
        print(orjson.dumps(answer).decode())
        return 1 if problems else 0
    for migration in applied:
        print(f"applied migration {migration.version}: {migration.name}")
    if not check and not applied:
        print(f"nothing to apply: the database is at migration {MIGRATIONS[-1].version}")
    if problems:
        print("the live schema does not match this code:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        hint = "run `inbox-ops db-deploy`" if check else "inspect the differences above"
        print(f"fix: {hint}", file=sys.stderr)
        return 1
    print(f"schema ok: migration {MIGRATIONS[-1].version}, every collection and index matches")
    return 0
