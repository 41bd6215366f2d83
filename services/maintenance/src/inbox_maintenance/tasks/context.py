"""What every task is given and returns: its context (the lock it runs under, where its
progress goes) and its result."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from inbox_common.jobs import JobLock

Progress = Callable[[str], None]


class TaskFailedError(Exception):
    """A task could not do its work (the broker is unreachable, a dependency refused): the
    run is recorded failed with this message, and the next run tries again."""


class TaskInterruptedError(Exception):
    """The service is stopping: the task stops at its next checkpoint."""


class LockLostError(Exception):
    """The task's lock went to another replica (this one stopped renewing it in time)."""


@dataclass(frozen=True, slots=True)
class TaskResult:
    """A finished run: one line for people, counts for the lock document (``lastPass``)."""

    summary: str
    counts: dict[str, Any] = field(default_factory=dict)


class TaskContext:
    """A task's run: ``say`` a progress line, ``checkpoint`` between pieces of work.

    A checkpoint renews the task's lock once a third of its stale bound has passed since the
    last renewal, so a long task keeps it; it raises :class:`TaskInterruptedError` when the
    service is stopping and :class:`LockLostError` when another replica took the lock.
    """

    def __init__(
        self,
        lock: JobLock,
        *,
        progress: Progress | None = None,
        stopping: asyncio.Event | None = None,
    ) -> None:
        self._lock = lock
        self._progress = progress
        self._stopping = stopping or asyncio.Event()
        self._renew_every = lock.stale_after.total_seconds() / 3

    def say(self, line: str) -> None:
        if self._progress is not None:
            self._progress(line)

    async def checkpoint(self) -> None:
        if self._stopping.is_set():
            raise TaskInterruptedError("interrupted: the service is stopping")
        renewed_ago = self._lock.renewed_ago
        if renewed_ago is not None and renewed_ago < self._renew_every:
            return
        if not await self._lock.renew():
            raise LockLostError(
                f"lost the {self._lock.job} lock: another replica took it over (this one did "
                f"not renew it within {self._lock.stale_after.total_seconds():g}s)"
            )


class Task(Protocol):
    """One maintenance task: its dependencies come into its constructor."""

    @property
    def name(self) -> str: ...

    @property
    def needs_broker(self) -> bool: ...

    async def run(self, ctx: TaskContext) -> TaskResult: ...
