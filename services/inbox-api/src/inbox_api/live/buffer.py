"""The last events a replica received, in the order it received them, so a client that
reconnects can be sent what it missed instead of refetching everything.

Only what the replica saw without a break may be replayed: after the replica lost its
subscription (the broker connection dropped), events published meanwhile never reached it,
so the buffer is cleared and every older id becomes unknown (the client is told to reload).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Buffered:
    id: str
    tenant: str
    frame: str  # the text sent to clients, shared with the sessions that got it live


class EventBuffer:
    """A ring buffer of the newest ``size`` events."""

    def __init__(self, size: int) -> None:
        self._events: deque[Buffered] = deque(maxlen=size)

    def __len__(self) -> int:
        return len(self._events)

    def append(self, event: Buffered) -> None:
        self._events.append(event)

    def clear(self) -> None:
        self._events.clear()

    @property
    def newest_id(self) -> str | None:
        return self._events[-1].id if self._events else None

    def since(self, event_id: str, tenant: str | None) -> list[str] | None:
        """The frames after ``event_id``, oldest first, of ``tenant`` (``None``: every
        tenant's); ``None`` when ``event_id`` is not in the buffer (unknown, or too old).

        Searched from the newest end: a client that reconnects usually missed a few.
        """
        missed: list[str] = []
        for event in reversed(self._events):
            if event.id == event_id:
                missed.reverse()
                return missed
            if tenant is None or event.tenant == tenant:
                missed.append(event.frame)
        return None
