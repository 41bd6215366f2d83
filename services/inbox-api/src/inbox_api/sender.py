"""The sender: consumes ``wa.outbound`` and calls the Cloud API, once per message.

A job is ``{"message_id"}`` (send a stored outbound message), ``{"kind": "read",
"channel_id", "wamid"}`` (tell Meta an inbound message was read) or ``{"kind":
"campaign_page", …}`` (queue a page of a campaign: ``inbox_api.campaigns.fanout``). Any
number of replicas consume the queue; each message is sent at most once, even when a sender
dies between the Cloud API call and its ack (the job is then delivered again):

1. The sender claims the message (``send_state`` queued/retrying/held → ``sending``, a
   compare-and-set), so two senders never call the Cloud API for it at once.
2. It sends with ``biz_opaque_callback_data = inbox:<message id>``: Meta echoes it in every
   status webhook of the message, so a status proves Meta got the message even when the
   sender never recorded the answer (the webhook consumer moves it to ``accepted``).
3. A job that finds its message still ``sending`` (a dead sender's, or a timed-out call)
   does not send: it waits in the 30 s delay tier for that proof. Only a message still
   ``sending`` past ``SENDER_STALE_SECONDS`` without any status is sent again, marked
   ``possible_duplicate`` (Meta's send API takes no idempotency key: nothing can do better).

What Meta answers decides the rest (``inbox_common.whatsapp.errors``): a wamid →
``accepted``; a retryable error → ``retrying`` in the next delay tier (the retry-worker
brings it back; never dead-lettered for a transient cause); a permanent one → ``failed``
with Meta's code, title and details; a channel stop (190, 368, 131048, 131031) → the
channel is disconnected with the reason and its messages are ``held`` until it reconnects,
and its running campaigns pause (``campaign_paused`` alert) until someone resumes them.

A campaign's message is sent only while its campaign runs: the sender reads the campaign
first, leaves the message waiting when it is paused (the resume queues it again) and cancels
it when the campaign is cancelled.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, Protocol

import orjson
from aio_pika.abc import AbstractIncomingMessage
from aiohttp import web
from bson import ObjectId
from bson.errors import InvalidId
from pymongo.errors import PyMongoError

from inbox_api.pacing import Pacers
from inbox_common.alerts import Alerts
from inbox_common.broker.topology import RETRY_TIERS
from inbox_common.errors import PermanentError, TransientError
from inbox_common.logging import get_logger
from inbox_common.store import campaigns as campaign_states
from inbox_common.store.campaigns import Campaigns
from inbox_common.store.channels import Channels
from inbox_common.store.client import Document, is_transient
from inbox_common.store.outbound import (
    ACCEPTED,
    CANCELLED,
    FAILED,
    SENDING,
    Outbound,
    callback_data,
    error_record,
)
from inbox_common.store.token_cipher import TokenCipherError
from inbox_common.whatsapp import messages
from inbox_common.whatsapp.cloud_api import CloudApiClient
from inbox_common.whatsapp.errors import Classification, CloudApiError, next_tier

log = get_logger(__name__)

# A claimed message's job comes back after this tier to see whether a status proved it sent.
WAIT_FOR_PROOF_TIER = "30s"
# Calls of the Cloud API for one message, whatever failed, before it is failed for good.
MAX_ATTEMPTS = 10
TIER_SECONDS = dict(RETRY_TIERS)
THROUGHPUT_EXCEEDED = 130429
PageHandler = Callable[[dict[str, Any]], Awaitable[None]]


class Announce(Protocol):
    """Told of every change the sender makes (the live updates show it)."""

    async def message_changed(self, message_id: ObjectId) -> None: ...

    async def channel_changed(self, channel_id: ObjectId) -> None: ...


def request_body(doc: Document) -> dict[str, Any]:
    """Meta's request for a stored outbound message."""
    recipient = doc.get("recipient") or {}
    address = messages.address(phone=recipient.get("wa_id"), user_id=recipient.get("user_id"))
    kind = doc["type"]
    content = doc["content"].get(kind) if kind == "contacts" else doc["content"]
    return messages.message(
        address,
        kind,
        content,
        reply_to=doc.get("reply_to"),
        callback_data=callback_data(doc["_id"]),
    )


class Sender:
    def __init__(
        self,
        outbound: Outbound,
        channels: Channels,
        cloud: CloudApiClient,
        *,
        stale_after: timedelta,
        announce: Announce,
        pacers: Pacers,
        campaigns: Campaigns,
        alerts: Alerts,
        pages: PageHandler | None = None,
    ) -> None:
        self._campaigns = campaigns
        self._alerts = alerts
        self.pages = pages
        self._pacers = pacers
        self._outbound = outbound
        self._channels = channels
        self._cloud = cloud
        self._stale_after = stale_after
        self._announce = announce

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        try:
            await self._handle(message)
        except PyMongoError as exc:
            if is_transient(exc):
                # The consumer retries, then parks the job and pauses until the store is back.
                raise TransientError("store_unavailable", f"MongoDB: {exc}") from exc
            raise PermanentError("store_rejected", f"MongoDB refused the write: {exc}") from exc

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        try:
            job = orjson.loads(message.body)
        except orjson.JSONDecodeError as exc:
            raise PermanentError("invalid_job", f"the job is not JSON ({exc})") from None
        if not isinstance(job, dict):
            raise PermanentError("invalid_job", "the job is not a JSON object")
        if job.get("kind") == "read":
            await self.mark_read(_object_id(job.get("channel_id")), str(job.get("wamid") or ""))
        elif job.get("kind") == "campaign_page":
            if self.pages is None:
                raise PermanentError("invalid_job", "this sender takes no campaign pages")
            await self.pages(job)
        else:
            await self.send(_object_id(job.get("message_id")))

    async def send(self, message_id: ObjectId) -> None:
        doc = await self._outbound.get(message_id)
        if doc is None:
            raise PermanentError(
                "unknown_message", f"no outbound message {message_id}: nothing to send"
            )
        state = doc.get("send_state")
        if state in (ACCEPTED, FAILED, CANCELLED):
            log.info("sender.skipped", message_id=str(message_id), reason=f"already_{state}")
            return  # done already: a duplicate job sends nothing
        if state == SENDING and not self._stale(doc):
            _await_proof(message_id)
        # A stopped campaign's job takes no turn of the number's rate.
        if doc.get("campaign_id") is not None and not await self._campaign_runs(doc):
            return
        channel = await self._channels.get(doc["channel_id"], None)
        if channel is None or channel.get("status") != "connected":
            reason = (channel or {}).get("disconnected_reason") or "the channel is gone"
            await self._hold(message_id, reason)
            return
        try:
            token = self._channels.access_token(channel)
        except TokenCipherError as exc:
            log.error("sender.token_unreadable", channel_id=str(channel["_id"]), error=str(exc))
            await self._hold(message_id, str(exc))
            return
        # Paced before the claim: a sender that dies while waiting for its turn has claimed
        # nothing, so the message is not left "sending" for a call that never happened.
        bucket = self._pacers.of(channel["phone_number_id"], channel.get("messages_per_second"))
        await bucket.acquire()
        # After the wait for a turn: a campaign paused meanwhile starts no new call.
        if doc.get("campaign_id") is not None and not await self._campaign_runs(doc):
            return
        claimed = await self._outbound.begin_sending(message_id, stale_after=self._stale_after)
        if claimed is None:
            # Claimed by another job meanwhile: this job stays until the message is settled,
            # since that claim may be a dead sender's (its write can land after its jobs were
            # delivered again), and then no other job would ever send it.
            current = await self._outbound.get(message_id)
            now = None if current is None else current.get("send_state")
            if now == SENDING:
                _await_proof(message_id)
            log.info("sender.skipped", message_id=str(message_id), reason=f"now_{now}")
            return
        if state == SENDING:
            log.warning("sender.resending_unproven", message_id=str(message_id))
            await self._outbound.possible_duplicate(message_id)
        await self._call(claimed, channel, token)

    async def _campaign_runs(self, doc: Document) -> bool:
        """Whether the message's campaign lets it go now: paused → it waits (the resume
        queues it again); cancelled (or gone) → it is cancelled."""
        status = await self._campaigns.status(doc["campaign_id"], doc.get("tenant"))
        if status == campaign_states.PAUSED:
            # Marked paused, so that the resume queues it again (whatever state it waited
            # in); the scheduler requeues one a resume raced past.
            if await self._outbound.pause(doc["_id"]):
                await self._changed(doc["_id"])
            log.info("sender.campaign_paused", message_id=str(doc["_id"]))
            return False
        if status in (campaign_states.CANCELLED, None):
            if await self._outbound.cancel(doc["_id"]):
                await self._changed(doc["_id"])
            return False
        return True

    def _stale(self, doc: Document) -> bool:
        since = doc.get("sending_since")
        if since is None:
            return True
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        return bool(datetime.now(UTC) - since > self._stale_after)

    async def _hold(self, message_id: ObjectId, reason: str) -> None:
        await self._outbound.held(message_id, reason=reason)
        await self._changed(message_id)

    async def _call(self, doc: Document, channel: Document, token: str) -> None:
        message_id = doc["_id"]
        try:
            body = request_body(doc)
        except PermanentError as exc:
            await self._outbound.failed(
                message_id, error={"code": None, "title": exc.reason, "message": str(exc)}
            )
            await self._changed(message_id)
            return
        bucket = self._pacers.of(channel["phone_number_id"], channel.get("messages_per_second"))
        try:
            result = await self._cloud.send(channel["phone_number_id"], token, body)
        except CloudApiError as error:
            if error.code == THROUGHPUT_EXCEEDED:
                paused = bucket.back_off()
                log.warning(
                    "sender.throughput_exceeded",
                    phone_number_id=channel["phone_number_id"],
                    paused_s=paused,
                )
            await self._refused(doc, channel, error)
            return
        bucket.succeeded()
        await self._outbound.accepted(message_id, result.wamid)
        log.info("sender.accepted", message_id=str(message_id), attempts=doc.get("attempts"))
        await self._changed(message_id)

    async def _refused(self, doc: Document, channel: Document, error: CloudApiError) -> None:
        message_id = doc["_id"]
        record = error_record(error)
        if error.classification is Classification.RETRY:
            tier = next_tier(doc.get("next_tier"), error.tier or WAIT_FOR_PROOF_TIER)
            if tier is None or doc.get("attempts", 0) >= MAX_ATTEMPTS:
                await self._exhausted(doc, error, record)
            if error.maybe_sent:
                # Meta may have it: keep "sending", and the job comes back for the proof.
                await self._outbound.still_sending(message_id, error=record)
                tier = WAIT_FOR_PROOF_TIER
            else:
                due = datetime.now(UTC) + timedelta(seconds=TIER_SECONDS[tier])
                await self._outbound.retrying(message_id, tier=tier, due_at=due, error=record)
            await self._changed(message_id)
            raise TransientError(error.reason, str(error), tier=tier) from error
        if error.classification is Classification.STOP_CHANNEL:
            await self._channels.disconnect(channel["_id"], reason=str(error), code=error.code)
            await self._outbound.held(message_id, reason=str(error))
            await self._announce.channel_changed(channel["_id"])
            await self._campaigns.auto_pause(
                {"channel_id": channel["_id"]},
                signal=str(error.code),
                reason=str(error),
                alerts=self._alerts,
            )
            log.error(
                "sender.channel_stopped",
                channel_id=str(channel["_id"]),
                reason=error.reason,
                code=error.code,
            )
        else:
            await self._outbound.failed(message_id, error=record)
            log.warning("sender.failed", message_id=str(message_id), reason=error.reason)
            if doc.get("campaign_id") is not None and _template_refused(error.code):
                # Every other recipient would meet the same refusal: stop the campaign.
                await self._campaigns.auto_pause(
                    {"_id": doc["campaign_id"]},
                    signal=str(error.code),
                    reason=str(error),
                    alerts=self._alerts,
                )
        await self._changed(message_id)

    async def _exhausted(
        self, doc: Document, error: CloudApiError, record: dict[str, Any]
    ) -> NoReturn:
        """Every tier waited out (or every attempt made): the message fails with Meta's last
        error, and the job goes to the dead-letter queue, counted."""
        message_id = doc["_id"]
        await self._outbound.failed(message_id, error={**record, "exhausted": True})
        await self._changed(message_id)
        log.warning(
            "sender.retries_exhausted",
            message_id=str(message_id),
            attempts=doc.get("attempts"),
            reason=error.reason,
        )
        raise PermanentError(
            "retries_exhausted",
            f"message {message_id} failed after {doc.get('attempts')} attempts and every delay "
            f"tier; the last error: {error}",
        ) from error

    async def mark_read(self, channel_id: ObjectId, wamid: str) -> None:
        channel = await self._channels.get(channel_id, None)
        if channel is None or channel.get("status") != "connected" or not wamid:
            return  # a read receipt is a courtesy: nothing to hold
        try:
            await self._cloud.mark_read(
                channel["phone_number_id"], self._channels.access_token(channel), wamid
            )
        except CloudApiError as error:
            if error.classification is Classification.RETRY:
                raise TransientError(error.reason, str(error), tier=error.tier) from error
            if error.classification is Classification.STOP_CHANNEL:
                await self._channels.disconnect(channel_id, reason=str(error), code=error.code)
                await self._announce.channel_changed(channel_id)
            log.warning("sender.read_refused", channel_id=str(channel_id), reason=error.reason)

    async def _changed(self, message_id: ObjectId) -> None:
        await self._announce.message_changed(message_id)


def _template_refused(code: int | str | None) -> bool:
    """Meta's template errors (132000-132999: missing, paused, wrong parameters...)."""
    return isinstance(code, int) and 132000 <= code <= 132999


def _await_proof(message_id: ObjectId) -> NoReturn:
    """Another sender holds the message, or one died mid-call: wait for a status webhook to
    prove Meta got it before anything is sent again."""
    raise TransientError(
        "awaiting_proof",
        f"message {message_id} is being sent (or its sender died); checking again once a "
        "status could have arrived",
        tier=WAIT_FOR_PROOF_TIER,
    )


def _object_id(value: Any) -> ObjectId:
    try:
        return ObjectId(value)
    except (InvalidId, TypeError):
        raise PermanentError(
            "invalid_job", f"the job names no valid id ({value!r}); it cannot be sent"
        ) from None


SENDER = web.AppKey("sender", Sender)
