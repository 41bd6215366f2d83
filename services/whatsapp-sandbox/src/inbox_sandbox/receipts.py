"""The read receipts "Meta" answered: which inbound message a business marked as read, and when.

A read receipt is not a send, so it never enters the ledger of sends; tests read these to
check that a client told Meta what was read. One entry per answered request, in the order they
were answered (a client that marks the same message twice finds two entries); a refused
request (unknown number, wrong token, invalid body) leaves none. Memory is bounded by dropping
the oldest entries; ``dropped`` says how many.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["ReadReceipt", "ReadReceipts"]

# Receipts kept in memory; a test or a benchmark reads far fewer.
LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class ReadReceipt:
    phone_number_id: str
    message_id: str
    at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "phone_number_id": self.phone_number_id,
            "message_id": self.message_id,
            "at": self.at,
        }


class ReadReceipts:
    """Answered read receipts, oldest first, at most ``limit`` of them."""

    def __init__(self, limit: int = LIMIT) -> None:
        self._entries: deque[ReadReceipt] = deque(maxlen=limit)
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._entries)

    def append(self, *, phone_number_id: str, message_id: str, at: datetime) -> ReadReceipt:
        if len(self._entries) == self._entries.maxlen:
            self.dropped += 1
        receipt = ReadReceipt(phone_number_id, message_id, at)
        self._entries.append(receipt)
        return receipt

    def query(
        self, *, phone_number_id: str | None = None, limit: int
    ) -> tuple[list[ReadReceipt], int]:
        """The first ``limit`` receipts for ``phone_number_id`` (``None``: any), oldest first,
        and how many match in all."""
        matching = [
            r
            for r in self._entries
            if phone_number_id is None or r.phone_number_id == phone_number_id
        ]
        return matching[:limit], len(matching)
