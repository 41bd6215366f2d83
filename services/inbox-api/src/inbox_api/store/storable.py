"""Make webhook content storable in BSON whatever Meta (or a forger with the secret) sent.

JSON allows what BSON refuses: integers beyond 64 bits, NUL in a key, unbounded nesting
(MongoDB stops at 100 levels); keys starting with ``$`` or holding ``.`` are refused by
update operators. Such values are rewritten, not dropped: the raw body stays in the ledger.
"""

from __future__ import annotations

from typing import Any

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_DEPTH = 32
TOO_DEEP = "[nested too deeply to store; the raw body is in the webhook ledger]"


def storable(value: Any, depth: int = 0) -> Any:
    """``value`` with every part BSON and update operators refuse rewritten."""
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            return TOO_DEEP
        return {_key(k): storable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        if depth >= MAX_DEPTH:
            return TOO_DEEP
        return [storable(v, depth + 1) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return value if INT64_MIN <= value <= INT64_MAX else str(value)
    return value


def _key(key: object) -> str:
    text = str(key).replace("\x00", "\ufffd").replace(".", "\uff0e")
    return "\uff04" + text[1:] if text.startswith("$") else text
