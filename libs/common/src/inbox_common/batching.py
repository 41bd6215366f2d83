"""Group commit: concurrent calls share one flush.

Under load many requests (or deliveries) become ready close together; each submits its item
and a flush carries all of them (one AMQP message, one bulk write per collection). Without a
limit on flushes in flight, the flush is scheduled with ``call_soon`` and takes what became
ready in the same loop iteration: no timer, so no added waiting, and under light load a batch
holds one item. With a limit (a :class:`Concurrency`), items that arrive while the limit's
worth of flushes are running wait, and the next flush takes all of them (up to
``max_items``): batches grow with the load, whatever the callers' own batching was.

:class:`AdaptiveConcurrency` finds the number of flushes in flight that moves the most items
per second: one at a time is best on some stores, a few at once on others.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, Protocol, TypeVar

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

Flush = Callable[[Sequence[ItemT]], Awaitable[Sequence[ResultT | BaseException]]]


class Concurrency(Protocol):
    """How many flushes may run at once; told how each went."""

    @property
    def limit(self) -> int: ...

    def record(self, items: int, *, saturated: bool) -> None:
        """A flush of ``items`` finished; ``saturated``: items were waiting for a slot."""


class FixedConcurrency:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("at least one flush must be allowed")
        self._limit = limit

    @property
    def limit(self) -> int:
        return self._limit

    def record(self, items: int, *, saturated: bool) -> None:
        pass


class AdaptiveConcurrency:
    """Hill climbing on throughput, between ``low`` and ``high`` flushes in flight.

    Throughput is only measured while saturated (items waited for a slot): otherwise it is
    the arrival rate, not what the store can take. Each window of ``window`` seconds at the
    current limit gives a rate; every ``probe_every`` windows one window tries a neighbour
    (one more, then one fewer, in turn) and the limit moves there only when it was at
    least ``margin`` faster, so noise does not make it wander.
    """

    def __init__(
        self,
        low: int = 1,
        high: int = 4,
        *,
        window: float = 2.0,
        probe_every: int = 4,
        margin: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= low <= high:
            raise ValueError("need 1 <= low <= high")
        self._low, self._high = low, high
        self._window, self._probe_every, self._margin = window, probe_every, margin
        self._clock = clock
        self._settled = low
        self._trying: int | None = None
        self._settled_rate = 0.0
        self._windows = 0
        self._next_step = 1
        self._started: float | None = None
        self._items = 0

    @property
    def limit(self) -> int:
        return self._trying if self._trying is not None else self._settled

    def record(self, items: int, *, saturated: bool) -> None:
        now = self._clock()
        if not saturated:
            self._started, self._items = None, 0  # the rate would be the arrival rate
            return
        if self._started is None:
            self._started, self._items = now, 0
            return
        self._items += items
        elapsed = now - self._started
        if elapsed < self._window:
            return
        self._close_window(self._items / elapsed)
        self._started, self._items = now, 0

    def _close_window(self, rate: float) -> None:
        if self._trying is not None:
            if rate > self._settled_rate * (1 + self._margin):
                self._settled, self._settled_rate = self._trying, rate
            self._trying = None
            return
        self._settled_rate = rate
        self._windows += 1
        if self._windows % self._probe_every == 0:
            neighbour = self._settled + self._next_step
            self._next_step = -self._next_step
            if self._low <= neighbour <= self._high:
                self._trying = neighbour


class Coalescer(Generic[ItemT, ResultT]):
    """Batches :meth:`submit` calls and hands each caller its own result (or exception).

    ``flush`` gets the items in submission order and returns one result or exception per
    item, in the same order; if ``flush`` itself raises, every caller of that batch gets the
    exception. ``concurrency`` bounds the flushes in flight (``None``: no bound).
    """

    def __init__(
        self,
        flush: Flush[ItemT, ResultT],
        *,
        max_items: int = 64,
        concurrency: Concurrency | None = None,
    ) -> None:
        self._flush = flush
        self._max_items = max_items
        self._concurrency = concurrency
        self._items: list[ItemT] = []
        self._waiters: list[asyncio.Future[ResultT]] = []
        self._scheduled = False
        self._running: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._running)

    async def submit(self, item: ItemT) -> ResultT:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[ResultT] = loop.create_future()
        self._items.append(item)
        self._waiters.append(waiter)
        if len(self._items) >= self._max_items:
            self._start()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._start)
        return await waiter

    def _start(self) -> None:
        self._scheduled = False
        while self._items and (
            self._concurrency is None or len(self._running) < self._concurrency.limit
        ):
            items, self._items = self._items[: self._max_items], self._items[self._max_items :]
            waiters = self._waiters[: len(items)]
            self._waiters = self._waiters[len(items) :]
            # A fresh context: the batch must not log with its first caller's bound ids.
            task = asyncio.get_running_loop().create_task(
                self._run(items, waiters), context=contextvars.Context()
            )
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._items:
            self._start()

    async def _run(self, items: list[ItemT], waiters: list[asyncio.Future[ResultT]]) -> None:
        try:
            results = await self._flush(items)
        except BaseException as exc:  # handed to every caller, who re-raises it
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        finally:
            if self._concurrency is not None:
                self._concurrency.record(len(items), saturated=bool(self._items))
        if len(results) != len(items):
            error = RuntimeError(f"flush returned {len(results)} results for {len(items)} items")
            results = [error] * len(items)
        for waiter, result in zip(waiters, results, strict=True):
            if waiter.done():  # the caller was cancelled; nobody to tell
                continue
            if isinstance(result, BaseException):
                waiter.set_exception(result)
            else:
                waiter.set_result(result)
