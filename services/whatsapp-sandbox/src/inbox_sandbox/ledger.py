"""The ledger of accepted sends: what "Meta" received, in the order it accepted it.

Tests and benchmarks read it as the ground truth of what was sent, so an entry is appended
exactly once per accepted send, before the send is answered, and never for a refused one.
Meta has no idempotency key, and neither has the sandbox: a client that sends twice finds two
entries, which is how duplicates are counted. Memory is bounded by dropping the oldest
entries; ``dropped`` says how many, so a reader knows when the ledger is no longer whole.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["Ledger", "LedgerEntry"]


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One accepted send."""

    seq: int
    wamid: str
    phone_number_id: str
    to: str | None
    recipient: str | None
    type: str
    request: dict[str, Any]
    biz_opaque_callback_data: str | None
    accepted_at: datetime

    def as_json(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "seq": self.seq,
            "wamid": self.wamid,
            "phone_number_id": self.phone_number_id,
        }
        if self.to is not None:
            item["to"] = self.to
        if self.recipient is not None:
            item["recipient"] = self.recipient
        item["type"] = self.type
        item["request"] = self.request
        if self.biz_opaque_callback_data is not None:
            item["biz_opaque_callback_data"] = self.biz_opaque_callback_data
        item["accepted_at"] = self.accepted_at
        return item


class Ledger:
    """Accepted sends, oldest first, at most ``limit`` of them."""

    def __init__(self, limit: int) -> None:
        self._entries: deque[LedgerEntry] = deque(maxlen=limit)
        self._seq = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._entries)

    def append(
        self,
        *,
        wamid: str,
        phone_number_id: str,
        to: str | None,
        recipient: str | None,
        type_: str,
        request: dict[str, Any],
        biz_opaque_callback_data: str | None,
        accepted_at: datetime,
    ) -> LedgerEntry:
        self._seq += 1
        if len(self._entries) == self._entries.maxlen:
            self.dropped += 1
        entry = LedgerEntry(
            self._seq,
            wamid,
            phone_number_id,
            to,
            recipient,
            type_,
            request,
            biz_opaque_callback_data,
            accepted_at,
        )
        self._entries.append(entry)
        return entry

    def query(
        self,
        *,
        phone_number_id: str | None = None,
        to: str | None = None,
        since: datetime | None = None,
        after: int = 0,
        limit: int,
    ) -> tuple[list[LedgerEntry], int]:
        """The first ``limit`` matching entries, oldest first, and how many match in all.

        ``to`` matches either recipient field (a phone number, compared by its digits, or a
        BSUID); ``since`` keeps
        entries accepted at or after it; ``after`` keeps entries whose ``seq`` is greater.
        """
        items: list[LedgerEntry] = []
        total = 0
        for entry in self._matching(phone_number_id, to, since, after):
            total += 1
            if len(items) < limit:
                items.append(entry)
        return items, total

    def _matching(
        self, phone_number_id: str | None, to: str | None, since: datetime | None, after: int
    ) -> Iterator[LedgerEntry]:
        wanted = _digits(to) if to is not None else None
        for entry in self._entries:
            if entry.seq <= after:
                continue
            if phone_number_id is not None and entry.phone_number_id != phone_number_id:
                continue
            if (
                to is not None
                and to != entry.recipient
                and (entry.to is None or _digits(entry.to) != wanted)
            ):
                continue
            if since is not None and entry.accepted_at < since:
                continue
            yield entry


def _digits(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit())
