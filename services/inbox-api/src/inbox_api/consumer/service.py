"""Applies webhook deliveries to the store: their content, then their ledger entry.

Knows nothing of AMQP: it takes :class:`WebhookDelivery` objects and the stores, so it is
tested directly against a real MongoDB-wire server. Every write is idempotent, so running
it again for the same body (a redelivery, a replay) changes nothing that one run did not.

:meth:`WebhookProcessor.process` calls (the bodies of every AMQP message the consumer holds,
one-body or micro-batch alike) are grouped into one :meth:`~WebhookProcessor.process_many`
per flush, with a bounded number of flushes in flight (adaptive: the number that moves the
most bodies per second on this store); bodies that arrive while the store is busy wait and
go together in the next flush. A flush costs: one indexed read of the ledger (which bodies
were processed already), the messages and the contacts, then the conversations (after the
messages: a conversation never shows the preview or unread mark of a message whose write
failed), then one insert of the ledger entries with their fates. An entry says
``processed`` only once its content was written.

Business-account changes (template status, number quality) are written after the inbox
content and before the ledger: their ``account_events`` documents (one upsert each, keyed by
the body), then the campaign pauses their risk signals call for (compare-and-sets, each
raising its alert). A flush that fails between the two is applied again whole, and finds the
documents written and the campaigns paused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from bson.errors import BSONError
from pymongo.errors import PyMongoError

from inbox_api.consumer.accounts import AccountWrites
from inbox_api.consumer.planning import Planner
from inbox_api.store.account_events import AccountEvents
from inbox_api.store.inbox import Inbox, Writes
from inbox_common import tracing
from inbox_common.alerts import Alerts
from inbox_common.batching import AdaptiveConcurrency, Coalescer, Concurrency
from inbox_common.contracts.delivery import WebhookDelivery
from inbox_common.logging import get_logger
from inbox_common.store.campaigns import Campaigns
from inbox_common.store.channels import Channels
from inbox_common.store.client import Database, is_transient
from inbox_common.store.identities import Identities
from inbox_common.store.ledger import FAILED, PROCESSED, Fate, Ledger

log = get_logger(__name__)

MAX_BATCH = 128


# What the store (or BSON) raises for data it will not take: such a body is recorded as
# failed, alone, and its batch goes on. BSON raises OverflowError for an integer beyond 64
# bits. Anything else (TypeError, KeyError, ValueError...) is a bug: it is not the input's
# fault, so it never marks a body failed; its batch-mates are applied without it, and it is
# raised for the consumer to log, count and requeue.
REFUSALS = (PyMongoError, BSONError, OverflowError)


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, PyMongoError) and is_transient(exc)


# Told of each flush's writes once they are stored (the live updates announce them).
Written = Callable[[Writes], Awaitable[None]]


class Outcome(StrEnum):
    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Stores:
    ledger: Ledger
    channels: Channels
    inbox: Inbox
    identities: Identities
    account_events: AccountEvents
    campaigns: Campaigns
    alerts: Alerts

    @classmethod
    def of(cls, db: Database) -> Stores:
        return cls(
            Ledger(db),
            Channels(db),
            Inbox(db),
            Identities(db),
            AccountEvents(db),
            Campaigns(db),
            Alerts(db),
        )


class WebhookProcessor:
    def __init__(
        self,
        stores: Stores,
        *,
        max_batch: int = MAX_BATCH,
        concurrency: Concurrency | None = None,
        on_written: Written | None = None,
    ) -> None:
        self._stores = stores
        self._on_written = on_written
        self._planner = Planner(stores.channels, stores.identities)
        self._batches: Coalescer[WebhookDelivery, Outcome] = Coalescer(
            self._flush,
            max_items=max_batch,
            concurrency=concurrency or AdaptiveConcurrency(1, 4),
        )

    async def process(self, delivery: WebhookDelivery) -> Outcome:
        """Apply ``delivery`` and record it in the ledger, together with the deliveries
        waiting at the same time; see the module docstring."""
        return await self._batches.submit(delivery)

    async def _flush(self, deliveries: Sequence[WebhookDelivery]) -> list[Outcome | BaseException]:
        """Process a batch; a body the store refuses (or that trips a bug) must not hold back
        the others."""
        try:
            # One span per flush, linked to the requests that brought its bodies.
            with tracing.span(
                "webhook store flush",
                parent=tracing.new_trace(),
                links=tracing.links_to([d.traceparent for d in deliveries]),
                attributes={"inbox.batch_size": len(deliveries)},
            ):
                return list(await self.process_many(deliveries))
        except REFUSALS as exc:
            if _transient(exc):
                raise  # the store is down: every body of the batch waits for it
            if len(deliveries) == 1:
                return [await self._refused(deliveries[0], exc)]
        except Exception as exc:
            if len(deliveries) == 1:
                _log_crash(deliveries[0], exc)
                raise  # a bug: the consumer logs it with its traceback and requeues
        results: list[Outcome | BaseException] = []
        for delivery in deliveries:  # find the body at fault: each on its own
            try:
                results.extend(await self.process_many([delivery]))
            except REFUSALS as exc:
                results.append(exc if _transient(exc) else await self._refused(delivery, exc))
            except Exception as exc:
                _log_crash(delivery, exc)
                results.append(exc)
        return results

    async def _refused(self, delivery: WebhookDelivery, exc: Exception) -> Outcome:
        """Record a body the store cannot take as failed (it stays in the ledger, raw)."""
        log.warning(
            "webhook.store_refused",
            sha256=delivery.sha256,
            request_id=delivery.request_id,
            error=f"{type(exc).__name__}: {exc}"[:500],
        )
        error = {"code": "store_refused", "message": f"{type(exc).__name__}: {exc}"[:500]}
        # If not even the ledger takes it, this raises: the consumer dead-letters the message.
        await self._stores.ledger.record([Fate(delivery, FAILED, [], error)])
        return Outcome.FAILED

    async def process_many(self, deliveries: Sequence[WebhookDelivery]) -> list[Outcome]:
        """Record and apply ``deliveries``; one outcome each, in order.

        A store error fails the whole batch (raised); running it again is safe.
        """
        stores = self._stores
        processed = await stores.ledger.processed_among([d.sha256 for d in deliveries])
        outcomes: list[Outcome] = []
        seen: set[str] = set()
        writes = Writes()
        accounts = AccountWrites()
        duplicates: list[str] = []
        todo: list[WebhookDelivery] = []
        for delivery in deliveries:
            if delivery.sha256 in seen or delivery.sha256 in processed:
                duplicates.append(delivery.sha256)
            else:
                seen.add(delivery.sha256)
                todo.append(delivery)
        fates = await self._planner.plan(todo, writes, accounts)
        fate_of = {fate.sha256: fate.status for fate in fates}
        for delivery in deliveries:
            status = fate_of.pop(delivery.sha256, None)
            if status is None:
                outcomes.append(Outcome.DUPLICATE)
            else:
                outcomes.append(Outcome.PROCESSED if status == PROCESSED else Outcome.FAILED)
        if writes:
            await stores.inbox.write(writes)
            # Another replica may have merged a conversation this flush wrote to.
            await stores.identities.refold(writes.conversations)
        for channel_id, (reason, code) in writes.stopped_channels.items():
            if await stores.channels.disconnect(channel_id, reason=reason, code=code):
                log.error("channel.stopped_by_status", channel_id=str(channel_id), code=code)
            # Its campaigns pause too (a send refused by a failed status, as by an answer).
            await stores.campaigns.auto_pause(
                {"channel_id": channel_id}, signal=str(code), reason=reason, alerts=stores.alerts
            )
        if accounts:
            await self._apply_accounts(accounts)
        if fates:
            await stores.ledger.record(fates)
        await stores.ledger.count_attempts(duplicates)
        if writes and self._on_written is not None:
            await self._on_written(writes)
        return outcomes

    async def _apply_accounts(self, accounts: AccountWrites) -> None:
        """Store the business-account events, then pause the campaigns their risk signals
        name (nothing is paused twice: a pause moves only scheduled or running ones)."""
        stores = self._stores
        await stores.account_events.record(accounts.events.values())
        for pause in accounts.pauses:
            paused = await stores.campaigns.auto_pause(
                pause.query, signal=pause.signal, reason=pause.reason, alerts=stores.alerts
            )
            if paused:
                log.warning(
                    "campaigns.auto_paused",
                    signal=pause.signal,
                    tenant=pause.tenant,
                    waba_id=pause.waba_id,
                    campaign_ids=[str(c["_id"]) for c in paused][:20],
                    count=len(paused),
                    sha256=pause.sha256,
                    request_id=pause.request_id,
                )


def _log_crash(delivery: WebhookDelivery, exc: Exception) -> None:
    """Name the body a bug hit (the consumer logs the traceback, with the AMQP message's ids)."""
    log.error(
        "webhook.crashed",
        sha256=delivery.sha256,
        request_id=delivery.request_id,
        exception=type(exc).__name__,
        error=str(exc)[:300],
    )
