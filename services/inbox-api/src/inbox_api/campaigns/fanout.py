"""A campaign's fan-out, one page per job, and the scheduler that starts and watches it.

**A page** is a job on the senders' shared queue (``wa.outbound``)::

    {"kind": "campaign_page", "campaign_id": …, "cursor": <last recipient id done> | null}

The sender that takes it reads the next :data:`PAGE_SIZE` recipients after the cursor,
stores their messages (``queued``, one per recipient: the idempotency key
``<tenant>:campaign:<campaign id>:<wa_id>`` makes a page done twice store nothing new),
publishes a send job per message still ``queued`` to the number's queue, moves the cursor
with a compare-and-set on the cursor it read, and publishes the next page's job. A
redelivered job, or a second chain of jobs, finds the cursor moved and stops. A campaign that
is not ``running`` stops its chain: the resume publishes it again. So 100,000 recipients are
never held at once, and a sender killed mid-page leaves a page that the next one redoes.

**The scheduler** runs in every inbox-api replica, every few seconds (each step is a
compare-and-set, so replicas racing do it once): it starts the scheduled campaigns whose time
came, publishes again the page job of a fan-out that has not moved for a while (its job was
lost: a publish the broker refused), queues again the messages of a running campaign left
``paused`` (a retry decided just as the campaign resumed), and completes the campaigns whose
messages have all left the queues.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from bson import ObjectId
from bson.errors import InvalidId
from pymongo.errors import BulkWriteError, PyMongoError

from inbox_api.campaigns.recipients import render
from inbox_api.campaigns.service import CampaignService
from inbox_common.broker.publisher import PublishFailedError
from inbox_common.errors import PermanentError, TransientError
from inbox_common.logging import get_logger
from inbox_common.store import campaigns as states
from inbox_common.store.client import Database, Document
from inbox_common.store.collections import CONVERSATIONS, MESSAGES
from inbox_common.store.outbound import QUEUED, local_wamid

log = get_logger(__name__)

PAGE_SIZE = 200
DUPLICATE_KEY = 11000
# Publishes of one page's send jobs in flight at once.
PUBLISH_CONCURRENCY = 32


def idempotency_key(campaign: Document, wa_id: str) -> str:
    return f"{campaign['tenant']}:campaign:{campaign['_id']}:{wa_id}"


def campaign_message(
    campaign: Document, recipient: Document, conversation_id: ObjectId | None, now: datetime
) -> Document:
    """The outbound message of one recipient: the template with its values filled in."""
    template = campaign["template"]
    message_id = ObjectId()
    return {
        "_id": message_id,
        "wamid": local_wamid(message_id),
        "conversation_id": conversation_id,
        "channel_id": campaign["channel_id"],
        "phone_number_id": campaign["phone_number_id"],
        "tenant": campaign["tenant"],
        "campaign_id": campaign["_id"],
        "direction": "outbound",
        "type": "template",
        "content": {
            "name": template["name"],
            "language": template["language"],
            "components": render(template.get("components", []), recipient["variables"]),
        },
        "reply_to": None,
        "recipient": {"wa_id": recipient["wa_id"], "user_id": None},
        "timestamp": now,
        "status": "pending",
        "status_rank": 0,
        "send_state": QUEUED,
        "attempts": 0,
        "idempotency_key": idempotency_key(campaign, recipient["wa_id"]),
        "sent_by": f"campaign:{campaign['_id']}",
        "created_at": now,
    }


class CampaignPages:
    """The handler of ``campaign_page`` jobs (see the module docstring)."""

    def __init__(self, db: Database, service: CampaignService, page_size: int = PAGE_SIZE):
        self._messages = db[MESSAGES]
        self._conversations = db[CONVERSATIONS]
        self._service = service
        self._page_size = page_size

    async def __call__(self, job: dict[str, Any]) -> None:
        campaign_id = _object_id(job.get("campaign_id"))
        cursor = None if job.get("cursor") is None else _object_id(job.get("cursor"))
        campaign = await self._service.campaigns.get(campaign_id, scope=None)
        if campaign is None:
            raise PermanentError("unknown_campaign", f"no campaign {campaign_id}: nothing to send")
        fanout = campaign.get("fanout") or {}
        if campaign["status"] != states.RUNNING or fanout.get("done"):
            return  # paused (the resume goes on), cancelled, or done
        if fanout.get("cursor") != cursor:
            return  # this page was done: another job moved the cursor
        recipients = await self._service.recipients.after(campaign_id, cursor, self._page_size)
        try:
            queued = await self._queue(campaign, recipients) if recipients else 0
        except PublishFailedError as exc:
            # The page is redone once the broker takes publishes again (its messages stored
            # now are found by their keys, and queued then).
            raise TransientError("broker_unavailable", f"a send job was refused: {exc}") from exc
        last = recipients[-1]["_id"] if recipients else None
        if not await self._service.campaigns.advance(
            campaign_id, cursor=cursor, to=last, queued=queued
        ):
            return
        log.info(
            "campaign.page_queued",
            campaign_id=str(campaign_id),
            recipients=len(recipients),
            queued=queued,
        )
        if last is not None:
            await self._service.kick({**campaign, "fanout": {"cursor": last, "done": False}})

    async def _queue(self, campaign: Document, recipients: list[Document]) -> int:
        """Store the page's messages and publish a send job for each one still queued;
        returns how many jobs were published."""
        now = datetime.now(UTC)
        conversations = await self._conversations_of(campaign, [r["wa_id"] for r in recipients])
        docs = [
            campaign_message(campaign, r, conversations.get(r["wa_id"]), now) for r in recipients
        ]
        try:
            await self._messages.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                raise
        # The page's messages as stored (this time's or an earlier attempt's), still queued.
        stored = self._messages.find(
            {
                "idempotency_key": {"$in": [d["idempotency_key"] for d in docs]},
                "send_state": QUEUED,
            },
            {"_id": 1},
        )
        ids = [doc["_id"] async for doc in stored]
        limit = asyncio.Semaphore(PUBLISH_CONCURRENCY)

        async def publish(message_id: ObjectId) -> None:
            async with limit:
                await self._service.send_job(message_id, campaign["phone_number_id"])

        await asyncio.gather(*(publish(i) for i in ids))
        return len(ids)

    async def _conversations_of(self, campaign: Document, wa_ids: list[str]) -> dict[str, Any]:
        """The existing conversation of each number on the campaign's channel: a customer
        who answers the template sees it there."""
        docs = self._conversations.find(
            {
                "tenant": campaign["tenant"],
                "channel_id": campaign["channel_id"],
                "wa_id": {"$in": wa_ids},
                "merged_into": {"$exists": False},
            },
            {"_id": 1, "wa_id": 1},
        )
        return {doc["wa_id"]: doc["_id"] async for doc in docs}


class Scheduler:
    """The campaigns' periodic duties (see the module docstring)."""

    def __init__(
        self,
        service: CampaignService,
        *,
        stalled_after: timedelta,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._service = service
        self._stalled_after = stalled_after
        self._clock = clock

    async def tick(self) -> dict[str, int]:
        now = self._clock()
        done = {"started": 0, "rekicked": 0, "requeued": 0, "completed": 0}
        campaigns = self._service.campaigns
        for doc in await campaigns.due(now):
            done["started"] += await self._service.start_due(doc["_id"])
        for doc in await campaigns.stalled(now - self._stalled_after):
            await self._service.kick(doc)
            done["rekicked"] += 1
        for doc in await campaigns.page(scope=None, status=states.RUNNING, limit=200):
            done["requeued"] += await self._service.requeue_paused(doc)
        for doc in await campaigns.fanned_out():
            done["completed"] += await self._service.complete_if_done(doc)
        return done


def scheduler_ctx(
    service: Callable[[web.Application], Scheduler], every: float
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Runs the scheduler every ``every`` seconds while the app runs (a failed tick is
    logged and the next one tries again)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        scheduler = service(app)
        stopping = asyncio.Event()

        async def loop() -> None:
            # Until told to stop, not ``while True``: a cancellation can be lost inside a
            # store call (Python 3.11's ``asyncio.wait_for``, which PyMongo's socket writes
            # use, swallows one that arrives as its awaitable completes).
            while not stopping.is_set():
                await asyncio.sleep(every)
                try:
                    await scheduler.tick()
                except (PyMongoError, ConnectionError) as exc:
                    log.warning("campaign.scheduler_failed", error=str(exc)[:300])
                except Exception:
                    log.exception("campaign.scheduler_crashed")

        task = asyncio.create_task(loop())
        yield
        stopping.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return ctx


def _object_id(value: Any) -> ObjectId:
    try:
        return ObjectId(value)
    except (InvalidId, TypeError):
        raise PermanentError(
            "invalid_job", f"the job names no valid campaign or cursor ({value!r})"
        ) from None
