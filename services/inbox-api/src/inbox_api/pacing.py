"""Pacing one number's sends to Meta's throughput limit.

Meta allows a number a configured rate (80 messages/s by default, up to 1,000) and answers
130429 above it. Each number's sends arrive on one single-active-consumer queue, so exactly
one sender in the whole deployment sends for a number at a time, and a token bucket in that
sender is the whole budget: no shared counter, no clock agreement between replicas.

When the active sender dies, RabbitMQ hands the queue to another replica, whose bucket starts
empty (never full): the overlap of the two is at most the dead sender's last in-flight calls,
which the 5% headroom below the configured rate absorbs. A 130429 anyway (Meta's own window is
not ours) pauses the number, doubling up to a bound while it repeats; other numbers go on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

# A little under the configured rate: Meta counts in its own windows.
HEADROOM = 0.95
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 30.0


class TokenBucket:
    """``rate`` sends a second, at most ``burst`` at once; waiters are served in order."""

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        # A tenth of a second's worth: smooth enough for Meta's per-second counting.
        self.burst = burst if burst is not None else max(1.0, rate / 10)
        self._clock = clock
        self._tokens = 0.0  # starts empty: a sender taking over never bursts
        self._updated = clock()
        self._paused_until = 0.0
        self._backoff = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                if now < self._paused_until:
                    await asyncio.sleep(self._paused_until - now)
                    continue
                self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
                self._updated = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self._tokens) / self.rate)

    def back_off(self) -> float:
        """Meta said the number is over its limit: pause it (longer while it repeats);
        returns the pause in seconds."""
        self._backoff = min(BACKOFF_MAX_SECONDS, max(BACKOFF_FIRST_SECONDS, self._backoff * 2))
        self._paused_until = self._clock() + self._backoff
        self._tokens = 0.0
        return self._backoff

    def succeeded(self) -> None:
        """A send went through: the back-off starts from the beginning next time."""
        self._backoff = 0.0


class Pacers:
    """One bucket per phone_number_id, at the number's configured rate."""

    def __init__(self, default_rate: float) -> None:
        self._default = default_rate
        self._buckets: dict[str, TokenBucket] = {}

    def of(self, phone_number_id: str, rate: float | None = None) -> TokenBucket:
        wanted = (rate or self._default) * HEADROOM
        bucket = self._buckets.get(phone_number_id)
        if bucket is None or bucket.rate != wanted:
            bucket = TokenBucket(wanted)
            self._buckets[phone_number_id] = bucket
        return bucket
