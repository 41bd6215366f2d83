"""Group commit: concurrent calls that arrive in the same event-loop tick share one flush.

Under load many requests (or deliveries) become ready in the same loop iteration; each
submits its item and the flush scheduled with ``call_soon`` runs after all of them, so they
travel together (one AMQP message, one bulk write) without any added waiting. Under light
load a batch holds one item and costs what a single call would. Several flushes may be in
flight at once (pipelining); nothing here holds a lock across I/O.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

Flush = Callable[[Sequence[ItemT]], Awaitable[Sequence[ResultT | BaseException]]]


class Coalescer(Generic[ItemT, ResultT]):
    """Batches :meth:`submit` calls and hands each caller its own result (or exception).

    ``flush`` gets the items in submission order and returns one result or exception per
    item, in the same order; if ``flush`` itself raises, every caller of that batch gets the
    exception.
    """

    def __init__(self, flush: Flush[ItemT, ResultT], *, max_items: int = 64) -> None:
        self._flush = flush
        self._max_items = max_items
        self._items: list[ItemT] = []
        self._waiters: list[asyncio.Future[ResultT]] = []
        self._scheduled = False
        self._running: set[asyncio.Task[None]] = set()

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
        if not self._items:
            return
        items, waiters = self._items, self._waiters
        self._items, self._waiters = [], []
        # A fresh context: the batch must not log with its first caller's bound ids.
        task = asyncio.get_running_loop().create_task(
            self._run(items, waiters), context=contextvars.Context()
        )
        self._running.add(task)
        task.add_done_callback(self._running.discard)

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
