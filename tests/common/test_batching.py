"""The group-commit coalescer: one flush per loop tick, each caller gets its own answer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from inbox_common.batching import AdaptiveConcurrency, Coalescer, FixedConcurrency


class Recorder:
    def __init__(self) -> None:
        self.flushes: list[list[int]] = []

    async def flush(self, items: Sequence[int]) -> list[int | BaseException]:
        self.flushes.append(list(items))
        await asyncio.sleep(0)
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]


async def test_calls_of_one_tick_share_a_flush_and_get_their_own_results() -> None:
    recorder = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(recorder.flush, max_items=100)
    results = await asyncio.gather(*(coalescer.submit(i) for i in range(6)), return_exceptions=True)
    assert recorder.flushes == [[0, 1, 2, 3, 4, 5]]
    assert results[0::2] == [0, 20, 40]
    assert [str(r) for r in results[1::2]] == ["odd 1", "odd 3", "odd 5"]


async def test_a_full_batch_flushes_at_once_and_sequential_calls_go_alone() -> None:
    recorder = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(recorder.flush, max_items=4)
    await asyncio.gather(*(coalescer.submit(i) for i in (0, 2, 4, 6, 8, 10)))
    assert recorder.flushes == [[0, 2, 4, 6], [8, 10]]
    assert await coalescer.submit(12) == 120
    assert await coalescer.submit(14) == 140
    assert recorder.flushes[2:] == [[12], [14]]


async def test_a_failing_flush_fails_every_caller_of_its_batch_only() -> None:
    calls = 0

    async def flush(items: Sequence[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("store down")
        return list(items)

    coalescer: Coalescer[int, int] = Coalescer(flush)
    first = await asyncio.gather(coalescer.submit(1), coalescer.submit(2), return_exceptions=True)
    assert [type(r) for r in first] == [ConnectionError, ConnectionError]
    assert await coalescer.submit(3) == 3


async def test_a_flush_with_the_wrong_number_of_results_is_an_error() -> None:
    async def flush(items: Sequence[int]) -> list[int]:
        return [1]

    coalescer: Coalescer[int, int] = Coalescer(flush)
    with pytest.raises(RuntimeError, match="1 results for 2 items"):
        await asyncio.gather(coalescer.submit(1), coalescer.submit(2))


async def test_with_one_flush_in_flight_waiting_calls_form_the_next_batch() -> None:
    release = asyncio.Event()
    flushes: list[list[int]] = []

    async def flush(items: Sequence[int]) -> list[int]:
        flushes.append(list(items))
        if len(flushes) == 1:
            await release.wait()
        return list(items)

    coalescer: Coalescer[int, int] = Coalescer(flush, max_items=3, concurrency=FixedConcurrency(1))
    first = asyncio.ensure_future(coalescer.submit(0))
    await asyncio.sleep(0.01)  # the first flush is running alone
    rest = [asyncio.ensure_future(coalescer.submit(i)) for i in range(1, 6)]
    for _ in range(3):
        await asyncio.sleep(0)
    # One at a time: nothing else started while the first flush runs, however many wait.
    assert flushes == [[0]]
    assert coalescer.in_flight == 1
    release.set()
    assert await first == 0
    assert await asyncio.gather(*rest) == [1, 2, 3, 4, 5]
    # Those that waited went together, max_items at a time.
    assert flushes[1:] == [[1, 2, 3], [4, 5]]


class FakeStore:
    """A store whose throughput depends on how many flushes run at once (best at ``best``)."""

    def __init__(self, best: int) -> None:
        self.best = best
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def items_per_second(self, in_flight: int) -> float:
        return 1000.0 - 200.0 * abs(in_flight - self.best)


@pytest.mark.parametrize("best", [1, 3])
def test_adaptive_concurrency_settles_where_the_store_is_fastest(best: int) -> None:
    store = FakeStore(best)
    limit = AdaptiveConcurrency(1, 4, window=1.0, probe_every=2, clock=store.clock)
    seen: list[int] = []
    for _ in range(400):
        rate = store.items_per_second(limit.limit)
        store.now += 0.1
        limit.record(int(rate * 0.1), saturated=True)
        seen.append(limit.limit)
    settled = seen[-100:]
    # It settles on the best limit and leaves it only for the occasional probe.
    assert max(set(settled), key=settled.count) == best
    assert settled.count(best) >= 60


def test_adaptive_concurrency_ignores_windows_without_a_backlog() -> None:
    store = FakeStore(3)
    limit = AdaptiveConcurrency(1, 4, window=1.0, probe_every=1, clock=store.clock)
    for _ in range(200):
        store.now += 0.1
        limit.record(10, saturated=False)  # the arrival rate, not the store's capacity
    assert limit.limit == 1
