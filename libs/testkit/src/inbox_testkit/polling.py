"""Waiting for a condition in a test, with a deadline that names what was awaited."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


# The deadline is this helper's whole job, and its error names what was awaited.
async def wait_until(
    condition: Callable[[], Awaitable[bool]],
    what: str,
    timeout: float = 5.0,  # noqa: ASYNC109
) -> None:
    """Poll ``condition`` every 20 ms until it holds; fail naming ``what`` after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.02)
