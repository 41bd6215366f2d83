"""What the Cloud API does with a send, a read receipt and a customer's message.

A send to ``/{version}/{phone_number_id}/messages`` goes through Meta's checks in this order:
the number must exist (100), the token must be the number's (190), the body must be valid
(100/131008/131009; done at the edge), then an injected fault if one is pending, then the
number's throughput (130429) and the pair rate to that user (131056). What passes is
accepted: it gets a fresh wamid, is appended to the ledger before the answer leaves, and its
status webhooks are scheduled. A non-template message to a user whose 24-hour window is closed
is accepted too and then fails with a ``failed`` status carrying 131047, as the Cloud API
reports it (asynchronously, not in the send's answer).

All state lives in memory, in the event loop's thread, bounded (see each store).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from inbox_common.logging import get_logger
from inbox_sandbox import payloads
from inbox_sandbox.customers import Customer, Customers, derived_bsuid
from inbox_sandbox.errors import (
    ASYNC_CODES,
    bad_token,
    meta_error,
    token_expired,
    transient,
    unknown_object,
)
from inbox_sandbox.faults import FaultCode, Faults
from inbox_sandbox.inbound import CustomerMessage, inbound_webhook
from inbox_sandbox.ledger import Ledger
from inbox_sandbox.limits import SendLimits
from inbox_sandbox.metrics import SandboxMetrics
from inbox_sandbox.numbers import BusinessNumber, NumberRegistry
from inbox_sandbox.receipts import ReadReceipts
from inbox_sandbox.schema import MarkRead, SendRequest
from inbox_sandbox.settings import SandboxSettings
from inbox_sandbox.statuses import AcceptedSend, status_webhooks
from inbox_sandbox.webhooks import FIRST_RETRY_SECONDS, IngestUnreachableError, WebhookSender

log = get_logger(__name__)

__all__ = ["HoldRequestError", "Sandbox"]

_BEARER = "Bearer "


class HoldRequestError(Exception):
    """The ``timeout`` fault: hold the request ``seconds`` without a useful answer."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"holding the request for {seconds:g}s")
        self.seconds = seconds


@dataclass(frozen=True, slots=True)
class _Recipient:
    customer: Customer | None
    user_id: str
    wa_id: str | None
    by_phone: bool


class Sandbox:
    """The Cloud API's state and rules: numbers, customers, limits, faults and the ledger."""

    def __init__(
        self,
        settings: SandboxSettings,
        webhooks: WebhookSender,
        metrics: SandboxMetrics,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.numbers = NumberRegistry(settings.numbers)
        self.customers = Customers(window_seconds=settings.sandbox_window_seconds)
        self.limits = SendLimits(
            pair_interval=settings.sandbox_pair_interval_seconds,
            pair_burst=settings.sandbox_pair_burst,
        )
        self.ledger = Ledger(settings.sandbox_ledger_limit)
        self.read_receipts = ReadReceipts()
        self.faults = Faults()
        self.metrics = metrics
        self.default_throughput = settings.sandbox_throughput
        self.hold_seconds = settings.sandbox_timeout_hold_seconds
        self._webhooks = webhooks
        self._delays = settings.status_delays
        self._read = settings.sandbox_read
        self._shuffle = settings.sandbox_webhook_shuffle
        self._rng = rng or random.Random()
        metrics.ledger_entries.set_function(lambda: len(self.ledger))

    # --- the Graph API ------------------------------------------------------------------

    def number(self, phone_number_id: str, *, method: str) -> BusinessNumber:
        """The number behind a Graph path, or Graph's unknown-object error."""
        number = self.numbers.get(phone_number_id)
        if number is None:
            raise unknown_object(phone_number_id, method)
        return number

    @staticmethod
    def authorize(number: BusinessNumber, authorization: str | None) -> None:
        """Check ``Authorization: Bearer <token>`` against the number's token (190 if not)."""
        if not authorization or not authorization.startswith(_BEARER):
            raise bad_token()
        if not number.accepts(authorization[len(_BEARER) :].strip()):
            raise bad_token()

    def send(
        self, number: BusinessNumber, request: SendRequest, raw: dict[str, Any], api_version: int
    ) -> dict[str, Any]:
        """Accept ``request`` (return Meta's answer) or raise Meta's error for it."""
        pnid = number.phone_number_id
        lost_answer = self.faults.peek(pnid) == "lost_answer"
        failure = self._injected_failure(pnid)
        to = self._recipient(pnid, request)
        refused = self.limits.check(pnid, number.throughput, to.user_id)
        if refused is not None:
            log.info("sandbox.send_refused", phone_number_id=pnid, code=refused)
            raise meta_error(refused)
        if (
            failure is None
            and not request.is_template
            and not self.customers.window_open(to.customer)
        ):
            failure = 131047
        wamid = payloads.new_wamid()
        self.ledger.append(
            wamid=wamid,
            phone_number_id=pnid,
            to=request.to,
            recipient=None if to.by_phone else request.recipient,
            type_=request.type,
            request=raw,
            biz_opaque_callback_data=request.biz_opaque_callback_data,
            accepted_at=datetime.now(UTC),
        )
        if failure is None:
            self.metrics.accepted.inc()
        else:
            self.metrics.sends.labels("failed_later", str(failure)).inc()
        log.debug(
            "sandbox.send_accepted",
            wamid=wamid,
            phone_number_id=pnid,
            type=request.type,
            fails_with=failure,
        )
        customer = to.customer
        self._schedule_statuses(
            AcceptedSend(
                wamid=wamid,
                number=number,
                user_id=to.user_id,
                wa_id=to.wa_id,
                to_phone=to.by_phone,
                template=request.is_template,
                api_version=api_version,
                biz_opaque_callback_data=request.biz_opaque_callback_data,
                name=customer.name if customer else None,
                username=customer.username if customer else None,
                failure=failure,
            )
        )
        if lost_answer:
            raise HoldRequestError(self.hold_seconds)
        return _answer(request, wamid)

    def mark_read(self, number: BusinessNumber, request: MarkRead) -> dict[str, Any]:
        """Meta's answer to a read receipt (and typing indicator) for an inbound message;
        recorded for ``GET /sandbox/read-receipts``."""
        self.read_receipts.append(
            phone_number_id=number.phone_number_id,
            message_id=request.message_id,
            at=datetime.now(UTC),
        )
        self.metrics.marked_read.inc()
        log.debug(
            "sandbox.marked_read", wamid=request.message_id, phone_number_id=number.phone_number_id
        )
        return {"success": True}

    def phone_number_info(self, number: BusinessNumber) -> dict[str, Any]:
        """The node ``GET /{version}/{phone_number_id}`` reads its fields from."""
        return {
            "verified_name": number.verified_name,
            "code_verification_status": "VERIFIED",
            "display_phone_number": number.display_phone_number,
            "quality_rating": "GREEN",
            "platform_type": "CLOUD_API",
            "throughput": {"level": number.throughput_level},
            "id": number.phone_number_id,
            "name_status": "APPROVED",
            "status": "CONNECTED",
            "account_mode": "LIVE",
            "is_official_business_account": False,
            "messaging_limit_tier": "TIER_UNLIMITED",
        }

    # --- the customer's side ------------------------------------------------------------

    async def inbound(self, number: BusinessNumber, message: CustomerMessage) -> tuple[str, int]:
        """Deliver a customer's message to the ingest; return its wamid and the ingest's status.

        It opens that customer's service window first: Meta does so whether or not the
        webhook arrives. A non-200 answer or no answer is retried in the background, as Meta
        retries; no answer raises :class:`IngestUnreachableError` as well.
        """
        pnid = number.phone_number_id
        customer = self.customers.wrote(
            pnid,
            wa_id=message.from_,
            user_id=message.user_id,
            name=message.name,
            username=message.username,
        )
        wamid = payloads.new_wamid()
        body = orjson.dumps(inbound_webhook(number, message, customer, wamid))
        self.metrics.inbound_type(message.type)
        try:
            status = await self._webhooks.post(body)
        except IngestUnreachableError:
            self._retry_inbound(body, wamid, pnid)
            raise
        if status == 200:
            self.metrics.webhooks.labels("inbound", "delivered").inc()
            self._webhooks.echo(body, kind="inbound", delay=0.0, wamid=wamid, phone_number_id=pnid)
        else:
            self._retry_inbound(body, wamid, pnid)
        log.info("sandbox.inbound", wamid=wamid, phone_number_id=pnid, ingest_status=status)
        return wamid, status

    # --- internals ----------------------------------------------------------------------

    def _recipient(self, phone_number_id: str, request: SendRequest) -> _Recipient:
        """Who the send is for. Meta takes ``to`` over ``recipient`` when both are given."""
        wa_id = request.wa_id
        if wa_id is not None:
            customer = self.customers.find(phone_number_id, wa_id=wa_id)
            user_id = customer.user_id if customer else derived_bsuid(wa_id)
            return _Recipient(customer, user_id, wa_id, by_phone=True)
        bsuid = str(request.recipient)
        customer = self.customers.find(phone_number_id, user_id=bsuid)
        # A BSUID send reports the phone number only when Meta may share it (the user wrote).
        return _Recipient(customer, bsuid, customer.wa_id if customer else None, by_phone=False)

    def _injected_failure(self, phone_number_id: str) -> int | None:
        """Apply a pending fault: raise the synchronous ones, return an asynchronous code."""
        fault: FaultCode | None = self.faults.take(phone_number_id)
        if fault is None:
            return None
        log.info("sandbox.fault_injected", phone_number_id=phone_number_id, fault=fault)
        if isinstance(fault, str):
            if fault == "lost_answer":
                return None  # sent; :meth:`send` then withholds the answer
            if fault == "timeout":
                raise HoldRequestError(self.hold_seconds)
            raise transient(500 if fault == "http_500" else 503)
        if fault == 190:
            raise token_expired()
        if fault in ASYNC_CODES:
            return fault
        raise meta_error(fault)

    def _schedule_statuses(self, accepted: AcceptedSend) -> None:
        scheduled = status_webhooks(accepted, delays=self._delays, read=self._read, now=time.time())
        arrivals = [status.at for status in scheduled]
        if self._shuffle:
            self._rng.shuffle(arrivals)
        for status, at in zip(scheduled, arrivals, strict=True):
            self._webhooks.deliver(
                status.body,
                kind="status",
                delay=at,
                wamid=accepted.wamid,
                phone_number_id=accepted.number.phone_number_id,
            )

    def _retry_inbound(self, body: bytes, wamid: str, phone_number_id: str) -> None:
        self.metrics.webhooks.labels("inbound", "retried").inc()
        self._webhooks.deliver(
            body,
            kind="inbound",
            delay=FIRST_RETRY_SECONDS,
            wamid=wamid,
            phone_number_id=phone_number_id,
            may_duplicate=False,
        )


def _answer(request: SendRequest, wamid: str) -> dict[str, Any]:
    """Meta's answer to an accepted send (BSUID sends answer with ``user_id``, no ``wa_id``)."""
    if request.wa_id is not None:
        contact = {"input": request.to, "wa_id": request.wa_id}
    else:
        contact = {"input": request.recipient, "user_id": request.recipient}
    message: dict[str, Any] = {"id": wamid}
    if request.is_template:
        message["message_status"] = "accepted"
    return {"messaging_product": "whatsapp", "contacts": [contact], "messages": [message]}
