"""The group-commit coalescer: one flush per loop tick, each caller gets its own answer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from inbox_common.batching import Coalescer


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
