"""The built-in schedule: each task published to ``<ns>.maintenance`` once per period, however
many replicas run it.

Time is cut into periods of each task's length, aligned on the Unix epoch (a daily task's
period starts at 00:00 UTC). Every replica looks at the clock every tick; the task's document
in ``maintenance_schedule`` (``{_id: task, period: <start of the last period published>}``)
is the arbiter. **Only the replica whose compare-and-set moves ``period`` forward publishes**:
the update's filter is ``period < this period's start`` (an upsert creates the document the
first time, and a racer's upsert fails on the ``_id``), so two replicas, or the same replica
twice, can never both win a period. Clocks that disagree only shift when within its period a
task is published, never how often.

A publish that fails hands the period back (the document returns to the previous period,
only if it still says this replica's), so the next tick tries again. A crash between the two
loses that period's run: the next period's comes as usual, and the health check says when a
task is overdue.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError, PyMongoError

from inbox_common.broker.publisher import ConfirmedPublisher, PublishFailedError
from inbox_common.broker.topology import MAINTENANCE_ROUTING_KEY, Names
from inbox_common.logging import get_logger
from inbox_common.store.client import Database
from inbox_common.store.collections import MAINTENANCE_SCHEDULE
from inbox_maintenance.metrics import MaintenanceMetrics

log = get_logger(__name__)

Clock = Callable[[], float]


class TaskMessage(BaseModel):
    """The body of a message on ``<ns>.maintenance.tasks``: run this task now."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    task: str = Field(min_length=1, max_length=64)
    period: datetime | None = Field(
        default=None, description="the start of the period it was scheduled for"
    )
    every_seconds: float | None = Field(default=None, gt=0, description="the task's period")
    trigger: Literal["schedule", "manual"] = "schedule"


def period_start(now: float, every: float) -> datetime:
    """The start of the period of length ``every`` (seconds) that ``now`` falls in."""
    return datetime.fromtimestamp(math.floor(now / every) * every, tz=UTC)


class Schedule:
    """Publishes every scheduled task once per period (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        publisher: ConfirmedPublisher,
        names: Names,
        periods: Mapping[str, float | None],
        metrics_: MaintenanceMetrics,
        *,
        owner: str,
        clock: Clock = time.time,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        self._schedule = db[MAINTENANCE_SCHEDULE]
        self._publisher = publisher
        self._names = names
        self._periods = {task: every for task, every in periods.items() if every is not None}
        self._metrics = metrics_
        self._owner = owner
        self._clock = clock
        self._ready = ready
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def tick(self) -> list[str]:
        """Publish the tasks whose current period nobody has published yet; returns them."""
        now = self._clock()
        published = []
        for task, every in self._periods.items():
            start = period_start(now, every)
            claimed, previous = await self._claim(task, start, every)
            if not claimed:
                continue
            message = TaskMessage(task=task, period=start, every_seconds=every)
            try:
                await self._publisher.publish(
                    self._names.maintenance_exchange,
                    MAINTENANCE_ROUTING_KEY,
                    orjson.dumps(message.model_dump(mode="json")),
                    message_id=f"{task}@{start.isoformat()}",
                    content_type="application/json",
                    timestamp=datetime.now(UTC),
                )
            except PublishFailedError as exc:
                log.warning("maintenance.publish_failed", task=task, reason=exc.reason)
                await self._hand_back(task, start, previous)
                continue
            self._metrics.published.labels(task).inc()
            log.info("maintenance.published", task=task, period=start.isoformat())
            published.append(task)
        return published

    async def _claim(
        self, task: str, start: datetime, every: float
    ) -> tuple[bool, datetime | None]:
        """Move the task's period to ``start`` if it is behind; (won, the previous period)."""
        try:
            before = await self._schedule.find_one_and_update(
                {"_id": task, "period": {"$lt": start}},
                {
                    "$set": {
                        "period": start,
                        "every_seconds": every,
                        "published_by": self._owner,
                        "published_at": datetime.now(UTC),
                    }
                },
                upsert=True,
                return_document=ReturnDocument.BEFORE,
            )
        except DuplicateKeyError:
            return False, None  # the document says this period (or a later one) is taken
        return True, None if before is None else before.get("period")

    async def _hand_back(self, task: str, start: datetime, previous: datetime | None) -> None:
        mine = {"_id": task, "period": start, "published_by": self._owner}
        try:
            if previous is None:
                await self._schedule.delete_one(mine)
            else:
                await self._schedule.update_one(mine, {"$set": {"period": previous}})
        except PyMongoError as exc:
            log.warning("maintenance.hand_back_failed", task=task, error=type(exc).__name__)

    def start(
        self, interval: float, *, also: Callable[[], Awaitable[object]] | None = None
    ) -> None:
        """Tick every ``interval`` seconds in the background, awaiting ``also`` after each
        tick (the service refreshes its gauges there)."""
        self._task = asyncio.create_task(self._loop(interval, also), name="maintenance-schedule")

    async def _loop(self, interval: float, also: Callable[[], Awaitable[object]] | None) -> None:
        # Not ``while True``: a cancellation can be lost inside a store call (Python 3.11's
        # ``asyncio.wait_for``, which PyMongo's socket writes use, swallows one that arrives as
        # its awaitable completes), and the loop goes on from whatever the call raised; the
        # flag ends it at the next turn instead of never.
        while not self._closing:
            try:
                # While the broker is away nothing could be published: no claim either.
                if self._ready is None or self._ready():
                    await self.tick()
                if also is not None:
                    await also()
            except PyMongoError as exc:
                log.warning("maintenance.schedule_store_failed", error=type(exc).__name__)
            except Exception:  # a bug: loud, and the schedule keeps ticking
                log.exception("maintenance.schedule_crashed")
            await asyncio.sleep(interval)

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
