"""``inbox-ops token create|list|revoke``: API tokens. A new token goes to stdout and nothing
else does; a revoked token stops working on every inbox-api replica within seconds (their
token caches keep an entry 5 s at most)."""

from __future__ import annotations

import sys
from typing import Any

import orjson
from bson import ObjectId
from bson.errors import InvalidId

from inbox_common.store.client import Database, Document
from inbox_common.tokens import Role, create_token, list_tokens, revoke_token
from inbox_ops.report import table


async def token_create(db: Database, *, role: str, tenant: str, name: str) -> int:
    token = await create_token(db, role=Role(role), tenant=tenant, name=name)
    print(token)
    print(f"created a {role} token for tenant {tenant!r}; it is shown only once", file=sys.stderr)
    return 0


async def token_list(db: Database, *, tenant: str | None, as_json: bool = False) -> int:
    """One row per token (never the token or its hash), oldest first."""
    records = await list_tokens(db, tenant)
    if as_json:
        print(orjson.dumps([_listed(r) for r in records]).decode())
        return 0
    rows = [
        (
            str(record["_id"]),
            record["tenant"],
            record["role"],
            f"{record['created_at']:%Y-%m-%d %H:%M:%S}",
            f"{revoked:%Y-%m-%d %H:%M:%S}" if (revoked := record.get("revoked_at")) else "-",
            record.get("name", ""),
        )
        for record in records
    ]
    print(table(("ID", "TENANT", "ROLE", "CREATED", "REVOKED", "NAME"), rows))
    print(f"{len(records)} token(s)", file=sys.stderr)
    return 0


def _listed(record: Document) -> dict[str, Any]:
    revoked = record.get("revoked_at")
    return {
        "id": str(record["_id"]),
        "tenant": record["tenant"],
        "role": record["role"],
        "name": record.get("name", ""),
        "agent_id": str(record["agent_id"]) if record.get("agent_id") else None,
        "created_at": record["created_at"].isoformat(),
        "revoked_at": revoked.isoformat() if revoked else None,
    }


async def token_revoke(db: Database, *, token_id: str, tenant: str | None) -> int:
    try:
        oid = ObjectId(token_id)
    except (InvalidId, TypeError):
        print(f"{token_id!r} is not a token id; `inbox-ops token list` shows them", file=sys.stderr)
        return 2
    if await revoke_token(db, oid, tenant) is None:
        print(
            f"no live token {token_id}{f' in tenant {tenant!r}' if tenant else ''}: unknown or "
            "revoked already (`inbox-ops token list` shows them)",
            file=sys.stderr,
        )
        return 1
    print(f"revoked token {token_id}; every replica refuses it within 5 seconds", file=sys.stderr)
    return 0
