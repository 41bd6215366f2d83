"""Injected faults: the next N sends (to one number, or to any) fail a chosen way.

A fault is one of Meta's error codes, answered the way Meta reports it (synchronously, or as
an accepted send followed by a ``failed`` status webhook), or an HTTP-level failure: a 500 or
503 with Graph's transient body, or a request held past any client's patience. Faults are
taken in the order they were added; one aimed at a number goes before a general one only if
it was added first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["FAULT_CODES", "Fault", "FaultCode", "Faults", "HttpFault"]

# ``lost_answer``: the send is accepted (ledger, status webhooks) but its answer never comes,
# as when Meta took a message and the connection broke before the response.
HttpFault = Literal["http_500", "http_503", "timeout", "lost_answer"]
FaultCode = int | HttpFault
FAULT_CODES: tuple[FaultCode, ...] = (
    130429, 131056, 131047, 131026, 131000, 190, 368, 131048, 4, 80007, 132001, 132015,
    "http_500", "http_503", "timeout", "lost_answer",
)  # fmt: skip
MAX_PENDING = 1000


@dataclass(slots=True)
class Fault:
    """A pending fault and how many sends it still applies to."""

    code: FaultCode
    remaining: int
    phone_number_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "phone_number_id": self.phone_number_id,
            "code": self.code,
            "remaining": self.remaining,
        }


class Faults:
    """The pending faults, oldest first (at most ``MAX_PENDING`` of them)."""

    def __init__(self) -> None:
        self._pending: list[Fault] = []

    def add(self, code: FaultCode, count: int, phone_number_id: str | None) -> Fault:
        """Queue a fault; raise ``OverflowError`` past ``MAX_PENDING`` pending faults."""
        if len(self._pending) >= MAX_PENDING:
            raise OverflowError(f"at most {MAX_PENDING} faults may be pending")
        fault = Fault(code, count, phone_number_id)
        self._pending.append(fault)
        return fault

    def peek(self, phone_number_id: str) -> FaultCode | None:
        """The fault :meth:`take` would return, left pending."""
        for fault in self._pending:
            if fault.phone_number_id in (None, phone_number_id):
                return fault.code
        return None

    def take(self, phone_number_id: str) -> FaultCode | None:
        """The fault the next send to ``phone_number_id`` must suffer, if any."""
        for index, fault in enumerate(self._pending):
            if fault.phone_number_id in (None, phone_number_id):
                fault.remaining -= 1
                if fault.remaining == 0:
                    del self._pending[index]
                return fault.code
        return None

    def pending(self) -> list[Fault]:
        return list(self._pending)

    def clear(self) -> int:
        cleared = len(self._pending)
        self._pending.clear()
        return cleared
