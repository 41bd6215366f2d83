"""``inbox-ops channels rotate-tokens``: every channel token encrypted with the first key of
``CHANNEL_TOKEN_KEYS``.

Rotating a key: put the new key first (``inbox-ops channels new-key``) and keep the old one
after it, restart inbox-api, run ``rotate-tokens``, then drop the old key.
"""

from __future__ import annotations

import sys

from pydantic import ValidationError

from inbox_common.store.channels import Channels
from inbox_common.store.client import Database
from inbox_common.store.token_cipher import TokenCipherError, TokenCipherSettings


async def rotate_channel_tokens(db: Database) -> int:
    try:
        cipher = TokenCipherSettings().token_cipher()
    except ValidationError as exc:
        print(f"CHANNEL_TOKEN_KEYS: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    try:
        changed = await Channels(db, cipher=cipher).rotate_tokens()
    except TokenCipherError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(f"re-encrypted {changed} channel token(s) with the first key", file=sys.stderr)
    return 0
