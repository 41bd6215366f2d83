"""The headers of a message published again (parked, requeued, moved out of a dead-letter
queue): what the broker wrote on its delivery goes, the rest is kept as pamqp will encode it.

pamqp delivers string header values as bytes (which may not even be UTF-8) but refuses to
send bytes, so every value is made sendable again, inside lists and tables too.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

# What RabbitMQ counts on a delivery: a republished message starts its count afresh.
DELIVERY_COUNT_HEADERS = frozenset({"x-delivery-count", "x-acquired-count"})
# What RabbitMQ writes when it dead-letters a message.
DEATH_HEADERS = frozenset({"x-death"})
DEATH_HEADER_PREFIXES = ("x-first-death-", "x-last-death-")


def republishable(value: Any) -> Any:
    """``value`` as pamqp will send it: bytes decoded (invalid UTF-8 replaced), in lists and
    tables too."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [republishable(v) for v in value]
    if isinstance(value, dict):
        return {k: republishable(v) for k, v in value.items()}
    return value


def republished_headers(
    headers: Mapping[str, Any] | None, *, keep_deaths: bool = False, drop: Collection[str] = ()
) -> dict[str, Any]:
    """``headers`` less the broker's delivery counts, its dead-lettering record (unless
    ``keep_deaths``: a dead letter put back where it was keeps why it died) and ``drop``."""
    gone = set(DELIVERY_COUNT_HEADERS) | set(drop)
    if not keep_deaths:
        gone |= DEATH_HEADERS
    return {
        key: republishable(value)
        for key, value in (headers or {}).items()
        if key not in gone and (keep_deaths or not key.startswith(DEATH_HEADER_PREFIXES))
    }
