"""The message status rule: a status only moves forward.

pending < sent < delivered < read; ``failed`` applies unless the message already reached
delivered or read, and a later delivered/read wins over failed. Ranking failed between
sent and delivered expresses exactly that as one monotonic order, so the store can apply
any arrival order with a single "keep the highest rank" update.
"""

from __future__ import annotations

STATUS_RANK: dict[str, int] = {
    "pending": 0,
    "sent": 1,
    "failed": 2,
    "delivered": 3,
    "read": 4,
}


def rank(status: str) -> int | None:
    """The rank of ``status``; None for statuses kept in history only (e.g. ``deleted``)."""
    return STATUS_RANK.get(status)


def resolve(current: str | None, incoming: str) -> str | None:
    """The status a message has after ``incoming`` arrives while it is ``current``."""
    new = rank(incoming)
    if new is None:
        return current
    old = rank(current) if current is not None else None
    if old is None or new > old:
        return incoming
    return current
