"""``inbox-ops token create``: a new API token on stdout (and nothing else on stdout)."""

from __future__ import annotations

import sys

from inbox_common.store.client import Database
from inbox_common.tokens import Role, create_token


async def token_create(db: Database, *, role: str, tenant: str, name: str) -> int:
    token = await create_token(db, role=Role(role), tenant=tenant, name=name)
    print(token)
    print(f"created a {role} token for tenant {tenant!r}; it is shown only once", file=sys.stderr)
    return 0
