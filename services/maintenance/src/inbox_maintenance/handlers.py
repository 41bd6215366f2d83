"""The broker edge: a message of ``<ns>.maintenance.tasks`` → a run of its task.

- a body that is not a :class:`TaskMessage`, or names no task: ``PermanentError``
  (dead-lettered with the reason: no later delivery can make it valid);
- a scheduled message more than two periods old (the consumers were away meanwhile): acked
  without a run, since the latest period's message runs the task anyway;
- the store unreachable: ``TransientError`` (the consumer retries, then pauses until the
  store answers; the message waits);
- otherwise the run's outcome is recorded on the task's lock (ok, failed, or skipped because
  another replica runs it) and the message is acked: a failed run is tried again at the next
  period, not by redelivering the message.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import structlog
from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError

from inbox_common.errors import PermanentError, TransientError
from inbox_common.logging import bind_message_context, get_logger
from inbox_maintenance import metrics
from inbox_maintenance.schedule import TaskMessage
from inbox_maintenance.service import Maintenance

log = get_logger(__name__)


def parse_task(body: bytes, known: set[str]) -> TaskMessage:
    """The message's task, or ``PermanentError`` saying what is wrong with it."""
    try:
        request = TaskMessage.model_validate(orjson.loads(body))
    except orjson.JSONDecodeError:
        raise PermanentError("invalid_task_message", "the body is not JSON") from None
    except ValidationError as exc:
        where = ", ".join(".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors())
        raise PermanentError(
            "invalid_task_message", f"the body is not a task message (check {where})"
        ) from None
    if request.task not in known:
        raise PermanentError(
            "unknown_task",
            f"no task named {request.task[:64]!r}; the tasks are {', '.join(sorted(known))}",
        )
    return request


class TaskHandler:
    """The consumer's handler of ``<ns>.maintenance.tasks``."""

    def __init__(self, maintenance: Maintenance) -> None:
        self._maintenance = maintenance

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        structlog.contextvars.clear_contextvars()
        bind_message_context(message_id=message.message_id)
        request = parse_task(message.body, set(self._maintenance.tasks))
        bind_message_context(task=request.task)
        if _superseded(request):
            log.info("maintenance.superseded", period=str(request.period))
            return
        outcome = await self._maintenance.run(request.task, trigger=request.trigger)
        if outcome.status == metrics.UNREACHABLE:
            raise TransientError("store_unavailable", outcome.error or "the store is unreachable")


def _superseded(request: TaskMessage) -> bool:
    if request.period is None or request.every_seconds is None:
        return False
    age = (datetime.now(UTC) - request.period).total_seconds()
    return age > 2 * request.every_seconds
