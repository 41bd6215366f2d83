"""What becomes of a due retry job: decided against the store, whose side is written first.

A due job is the AMQP message a consumer moved to a delay tier after a retryable failure,
back from its tier through ``<ns>.retry.due``. Its body is that consumer's job: for the
sender, ``{"message_id": …}`` (a send) or ``{"kind": "read", …}`` (a read receipt).

- a read receipt: requeue;
- no outbound message has its id: drop (``dropped_missing``);
- its message is ``accepted``, ``failed`` or ``cancelled``: drop (``dropped_done``);
- its message's campaign is ``cancelled``: the message becomes ``cancelled`` (its status
  too); drop (``dropped_cancelled``);
- its message's campaign is ``paused``: the message becomes ``paused`` (the campaign's resume
  queues it again); drop (``dropped_paused``);
- anything else: requeue.

A message that is ``sending`` is never cancelled nor paused (Meta may have it): its job is
requeued, and the sender settles it first. Every write is conditional or idempotent, so a job
decided twice (the worker died before its ack) ends the same way. The broker side (publish,
ack) is the worker's (``inbox_retry.worker``); nothing here imports aio-pika.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from bson import ObjectId
from bson.errors import InvalidId

from inbox_common.errors import PermanentError
from inbox_common.logging import get_logger
from inbox_common.store import campaigns
from inbox_common.store.campaigns import Campaigns
from inbox_common.store.client import Document
from inbox_common.store.outbound import ACCEPTED, CANCELLED, FAILED, Outbound
from inbox_retry import metrics

log = get_logger(__name__)

DONE = frozenset({ACCEPTED, FAILED, CANCELLED})


@dataclass(frozen=True, slots=True)
class Decision:
    """``outcome`` is a ``retry_jobs_total`` outcome (``requeued`` or ``dropped_…``);
    ``reason`` a short code (the log line's, and ``retry_dropped.reason``)."""

    outcome: str
    reason: str
    wamid: str | None = None

    @property
    def requeue(self) -> bool:
        return self.outcome == metrics.REQUEUED


def parse_job(body: bytes) -> ObjectId | None:
    """The message id of a send job, or None for a read receipt; a body that is no job
    raises :class:`PermanentError` (it is dead-lettered with the reason)."""
    try:
        job = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PermanentError("invalid_job", f"the job is not JSON ({exc})") from None
    if not isinstance(job, dict):
        raise PermanentError("invalid_job", "the job is not a JSON object")
    if job.get("kind") == "read":
        return None
    value = job.get("message_id")
    try:
        return ObjectId(value)
    except (InvalidId, TypeError):
        raise PermanentError(
            "invalid_job", f"the job names no valid message id ({str(value)[:100]!r})"
        ) from None


class RetryDecisions:
    def __init__(self, outbound: Outbound, campaigns: Campaigns) -> None:
        self._outbound = outbound
        self._campaigns = campaigns

    async def decide(self, message_id: ObjectId | None) -> Decision:
        """Decide the job of ``message_id`` (None: a read receipt) and write the store side
        of a drop; see the module docstring."""
        if message_id is None:
            return Decision(metrics.REQUEUED, "read_receipt")
        doc = await self._outbound.get(message_id)
        if doc is None:
            return Decision(metrics.DROPPED_MISSING, "no_such_message")
        wamid = doc.get("wamid")
        state = doc.get("send_state")
        if state in DONE:
            return await self._drop(doc, metrics.DROPPED_DONE, "already_done")
        campaign_id = doc.get("campaign_id")
        if campaign_id is None:
            return Decision(metrics.REQUEUED, "due", wamid)
        status = await self._campaigns.status(campaign_id, doc.get("tenant"))
        if status == campaigns.CANCELLED:
            if await self._outbound.cancel(message_id):
                return await self._drop(doc, metrics.DROPPED_CANCELLED, "campaign_cancelled")
            return await self._after_race(message_id, wamid)
        if status == campaigns.PAUSED:
            if await self._outbound.pause(message_id):
                return await self._drop(doc, metrics.DROPPED_PAUSED, "campaign_paused")
            return await self._after_race(message_id, wamid)
        if status is None:
            log.warning(
                "retry.campaign_missing", campaign_id=str(campaign_id), wamid=wamid, state=state
            )
        return Decision(metrics.REQUEUED, "due", wamid)

    async def _after_race(self, message_id: ObjectId, wamid: str | None) -> Decision:
        """The message left the states a campaign can stop: done meanwhile, or being sent
        (then its job goes back, and the sender settles it first)."""
        doc = await self._outbound.get(message_id)
        if doc is None:
            return Decision(metrics.DROPPED_MISSING, "no_such_message", wamid)
        if doc.get("send_state") in DONE:
            return await self._drop(doc, metrics.DROPPED_DONE, "already_done")
        return Decision(metrics.REQUEUED, "being_sent", wamid)

    async def _drop(self, doc: Document, outcome: str, reason: str) -> Decision:
        await self._outbound.retry_dropped(doc["_id"], reason=reason)
        return Decision(outcome, reason, doc.get("wamid"))
