"""Meta's two send limits, as token buckets.

- Throughput: each business number sends at most ``throughput`` messages per second (130429).
- Pair rate: one message every ``interval`` seconds to the same user, with bursts of up to
  ``burst`` messages that "borrow" from the future: after a burst of 20 at 6 s each the pair
  waits about 2 minutes (131056). A bucket of ``burst`` tokens refilled at ``1/interval`` per
  second is exactly that.

A send consumes a token of each only when both allow it, so a refused send costs nothing. The
pair buckets are bounded (least recently used first out); a forgotten pair starts full again,
which errs on the side of accepting.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["MAX_PAIRS", "SendLimits", "TokenBucket"]

MAX_PAIRS = 100_000


class TokenBucket:
    """``capacity`` tokens, refilled continuously at ``rate`` per second."""

    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.updated = now

    def ready(self, now: float) -> bool:
        """Whether one token is available at ``now``."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        return self.tokens >= 1

    def take(self) -> None:
        """Consume the token :meth:`ready` found."""
        self.tokens -= 1


class SendLimits:
    """The throughput and pair-rate buckets of every number and pair."""

    def __init__(
        self,
        *,
        pair_interval: float,
        pair_burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_pairs: int = MAX_PAIRS,
    ) -> None:
        self._pair_rate = 1 / pair_interval
        self._pair_burst = pair_burst
        self._clock = clock
        self._max_pairs = max_pairs
        self._numbers: dict[str, TokenBucket] = {}
        self._pairs: OrderedDict[tuple[str, str], TokenBucket] = OrderedDict()

    def check(self, phone_number_id: str, throughput: int, recipient: str) -> int | None:
        """Take one send from both limits, or return the code of the one that refuses."""
        now = self._clock()
        number = self._numbers.get(phone_number_id)
        if number is None or number.rate != throughput:
            number = TokenBucket(throughput, throughput, now)
            self._numbers[phone_number_id] = number
        if not number.ready(now):
            return 130429
        key = (phone_number_id, recipient)
        pair = self._pairs.get(key)
        if pair is None:
            pair = TokenBucket(self._pair_rate, self._pair_burst, now)
            self._pairs[key] = pair
            if len(self._pairs) > self._max_pairs:
                self._pairs.popitem(last=False)
        else:
            self._pairs.move_to_end(key)
        if not pair.ready(now):
            return 131056
        number.take()
        pair.take()
        return None
