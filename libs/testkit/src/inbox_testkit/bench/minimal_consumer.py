"""P2's ceiling: a hand-written consumer doing the least work the webhook contract needs.

It reads what inbox-api reads (``<ns>.inbox.webhooks``, either message shape, split with
``deliveries_from_amqp``, every body checked against its sha256) and leaves the store P2's
check asks for: per event one message and one ledger entry ``processed``, per contact one
contact and one conversation. In batches of up to ``--batch`` (64) events, one batch at a
time:

1. each body is parsed with orjson and only the stored fields are read (the backlog holds
   inbound text messages; statuses, reactions and the rest are not its concern);
2. one unordered bulk write per collection, the three at once: the messages inserted
   (``insert_many``); the contacts upserted by (channel_id, wa_id); the conversations
   upserted by the id the contract derives (``conversation_id``), with ``$max`` of the last
   message time, a ``$set`` of the newest message's preview and ``$addToSet`` of the
   unread wamids: plain update operators where inbox-api runs pipelines;
3. then the ledger: one ``insert_many`` of the entries, each written once with its final
   status ``processed``. After the content, so that ``processed`` still means "applied"
   (inbox-api skips a body its ledger marks processed);
4. one ack (``multiple``) for the batch's messages, after the writes.

``--in-flight N`` (default 1) lets N batches be written at once instead, each acked on its
own: not part of the ceiling's definition, a probe of how much overlapping writes buys.

The store client is the services' (``create_client``: w=majority, journaled), on the same
server, database schema and indexes. A redelivered body is written again: an insert that hits
its unique key (E11000) is skipped, and the upserts are idempotent. Left out by design: dedupe
through the ledger, the ``received`` state, statuses, reactions, unknown channels, a
preview that is right in any arrival order (the ``$set`` trusts queue order), retries and
dead-lettering.

It stops after ``--events`` events and prints one line ``BENCH_JSON {...}``: its timing (first
delivery to last ack), where that time went, its CPU and that of the ``--watch`` processes
over the same window, its store's write concern and its peak resident set.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
import orjson
import uvloop
from aio_pika.abc import AbstractIncomingMessage
from bson import ObjectId
from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection

from inbox_common.contracts.delivery import BATCH_HEADER, WebhookDelivery, deliveries_from_amqp
from inbox_common.store.bulk import insert_new
from inbox_common.store.client import Database, Document, create_client
from inbox_common.store.identities import conversation_id
from inbox_common.store.ledger import PROCESSED
from inbox_common.store.schema import CHANNELS, CONTACTS, CONVERSATIONS, MESSAGES, WEBHOOK_EVENTS
from inbox_testkit.bench.cli import parse_pinned, print_result
from inbox_testkit.bench.harness import memory_of
from inbox_testkit.bench.loadgen import CpuWatch

BATCH = 64
PREVIEW_CHARS = 200


class ContractError(RuntimeError):
    """A delivery this consumer does not handle (the bench's backlog never holds one)."""


@dataclass(slots=True)
class _Conversation:
    channel: Document
    wa_id: str
    name: str | None
    newest: tuple[datetime, str, str]  # (time, wamid, preview)
    unread: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Batch:
    """One batch's documents and operations, one bulk write per collection."""

    ledger: list[Document] = field(default_factory=list)
    messages: list[Document] = field(default_factory=list)
    contacts: dict[tuple[ObjectId, str], UpdateOne] = field(default_factory=dict)
    conversations: dict[ObjectId, _Conversation] = field(default_factory=dict)

    def conversation_ops(self, now: datetime) -> list[UpdateOne]:
        ops = []
        for key, c in self.conversations.items():
            at, wamid, preview = c.newest
            update: dict[str, Any] = {
                "$setOnInsert": {
                    "channel_id": c.channel["_id"],
                    "wa_id": c.wa_id,
                    "tenant": c.channel["tenant"],
                    "status": "open",
                    "created_at": now,
                },
                "$set": {"last_message_wamid": wamid, "last_message_preview": preview},
                "$max": {"last_message_at": at, "last_inbound_at": at},
                "$addToSet": {"unread_wamids": {"$each": c.unread}},
            }
            if c.name:
                update["$set"]["contact_name"] = c.name
            ops.append(UpdateOne({"_id": key}, update, upsert=True))
        return ops


class MinimalConsumer:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._channels: dict[str, Document] = {}

    async def channel(self, phone_number_id: str) -> Document:
        channel = self._channels.get(phone_number_id)
        if channel is None:
            channel = await self._db[CHANNELS].find_one(
                {"phone_number_id": phone_number_id}, {"_id": 1, "tenant": 1}
            )
            if channel is None:
                raise ContractError(f"no channel has phone_number_id {phone_number_id}")
            self._channels[phone_number_id] = channel
        return channel

    async def plan(self, deliveries: list[WebhookDelivery], now: datetime) -> Batch:
        batch = Batch()
        for delivery in deliveries:
            if not delivery.intact():
                raise ContractError(f"body does not hash to its sha256 {delivery.sha256}")
            numbers = await self._plan_body(orjson.loads(delivery.body), batch, now)
            batch.ledger.append(
                {
                    "sha256": delivery.sha256,
                    "request_id": delivery.request_id,
                    "received_at": delivery.received_at,
                    "body": delivery.body,
                    "body_bytes": len(delivery.body),
                    "status": PROCESSED,
                    "attempts": 1,
                    "last_attempt_at": now,
                    "phone_number_ids": numbers,
                    "error": None,
                }
            )
        return batch

    async def _plan_body(self, envelope: Any, batch: Batch, now: datetime) -> list[str]:
        numbers: list[str] = []
        for entry in envelope.get("entry") or []:
            for change in entry.get("changes") or []:
                value = change.get("value") or {}
                number = (value.get("metadata") or {}).get("phone_number_id")
                if change.get("field") != "messages" or not number:
                    continue
                if number not in numbers:
                    numbers.append(number)
                channel = await self.channel(number)
                names = self._contacts(channel, value.get("contacts") or [], batch, now)
                for message in value.get("messages") or []:
                    self._message(channel, message, names, batch, now)
                if value.get("statuses"):
                    raise ContractError("statuses are outside the minimal consumer's scope")
        return numbers

    @staticmethod
    def _contacts(
        channel: Document, contacts: list[Any], batch: Batch, now: datetime
    ) -> dict[str, str | None]:
        names: dict[str, str | None] = {}
        for contact in contacts:
            wa_id = contact.get("wa_id") or contact.get("user_id")
            if not wa_id:
                continue
            name = (contact.get("profile") or {}).get("name")
            names[wa_id] = name
            update: dict[str, Any] = {
                "$setOnInsert": {"tenant": channel["tenant"], "created_at": now}
            }
            fields = {k: v for k, v in (("name", name), ("user_id", contact.get("user_id"))) if v}
            if fields:
                update["$set"] = fields
            batch.contacts[(channel["_id"], wa_id)] = UpdateOne(
                {"channel_id": channel["_id"], "wa_id": wa_id}, update, upsert=True
            )
        return names

    @staticmethod
    def _message(
        channel: Document,
        message: dict[str, Any],
        names: dict[str, str | None],
        batch: Batch,
        now: datetime,
    ) -> None:
        kind = message.get("type") or "unknown"
        if kind == "reaction":
            raise ContractError("reactions are outside the minimal consumer's scope")
        sender = message.get("from") or message.get("from_user_id") or ""
        wamid = message["id"]
        at = datetime.fromtimestamp(int(message["timestamp"]), UTC)
        content = message.get(kind) or {}
        text = content.get("body") if kind == "text" else None
        preview = text[:PREVIEW_CHARS] if isinstance(text, str) and text else f"[{kind}]"
        key = conversation_id(channel["_id"], sender)
        batch.messages.append(
            {
                "wamid": wamid,
                "conversation_id": key,
                "direction": "inbound",
                "from": sender,
                "type": kind,
                "content": content,
                "reply_to": (message.get("context") or {}).get("id"),
                "timestamp": at,
                "status": "received",
                "tenant": channel["tenant"],
                "channel_id": channel["_id"],
                "created_at": now,
            }
        )
        conversation = batch.conversations.get(key)
        if conversation is None:
            conversation = _Conversation(channel, sender, names.get(sender), (at, wamid, preview))
            batch.conversations[key] = conversation
        conversation.name = names.get(sender) or conversation.name
        conversation.newest = max(conversation.newest, (at, wamid, preview))
        conversation.unread.append(wamid)

    async def write_content(self, batch: Batch, now: datetime) -> None:
        db = self._db
        await asyncio.gather(
            insert_new(db[MESSAGES], batch.messages),
            bulk(db[CONTACTS], list(batch.contacts.values())),
            bulk(db[CONVERSATIONS], batch.conversation_ops(now)),
        )

    async def write_ledger(self, batch: Batch) -> None:
        finished = datetime.now(UTC)
        for entry in batch.ledger:
            entry["finished_at"] = finished
        await insert_new(self._db[WEBHOOK_EVENTS], batch.ledger)


async def bulk(collection: AsyncCollection[Document], ops: list[UpdateOne]) -> None:
    if ops:
        await collection.bulk_write(ops, ordered=False)


def events_in(message: AbstractIncomingMessage) -> int:
    entries = (message.headers or {}).get(BATCH_HEADER)
    return len(entries) if isinstance(entries, list) else 1


@dataclass
class Timing:
    """Seconds spent in each step, summed over the batches."""

    waiting: float = 0.0  # for the next message, with nothing buffered
    parsing: float = 0.0  # split, checksum, parse, build the documents
    content: float = 0.0  # messages + contacts + conversations, at once
    ledger: float = 0.0
    ack: float = 0.0

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in vars(self).items()}


async def run(args: argparse.Namespace, watch: CpuWatch) -> dict[str, Any]:
    client = create_client(args.store, app_name="bench-minimal")
    consumer = MinimalConsumer(client[args.db])
    arrived: deque[AbstractIncomingMessage] = deque()
    signal = asyncio.Event()

    async def on_message(message: AbstractIncomingMessage) -> None:
        arrived.append(message)
        signal.set()

    timing = Timing()
    sizes: list[int] = []
    done = 0
    # --in-flight 1 (the default): the next batch is taken only once this one is acked.
    slots = asyncio.Semaphore(args.in_flight)

    async def apply(taken: list[AbstractIncomingMessage]) -> None:
        nonlocal done
        try:
            began = time.perf_counter()
            items = [d for m in taken for d in deliveries_from_amqp(m.body, m.headers)]
            now = datetime.now(UTC)
            batch = await consumer.plan(items, now)
            step = time.perf_counter()
            timing.parsing += step - began
            await consumer.write_content(batch, now)
            timing.content += time.perf_counter() - step
            step = time.perf_counter()
            await consumer.write_ledger(batch)
            timing.ledger += time.perf_counter() - step
            step = time.perf_counter()
            if args.in_flight == 1:  # every earlier delivery is acked already
                await taken[-1].ack(multiple=True)
            else:
                for message in taken:
                    await message.ack()
            timing.ack += time.perf_counter() - step
            done += len(items)
            sizes.append(len(items))
        finally:
            slots.release()

    connection = await aio_pika.connect(
        args.amqp, client_properties={"connection_name": "bench-minimal"}
    )
    try:
        async with connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=args.prefetch)
            queue = await channel.get_queue(args.queue, ensure=False)
            await queue.consume(on_message)
            deadline = time.monotonic() + args.timeout
            batches: set[asyncio.Task[None]] = set()
            first = 0.0
            taken_events = messages = 0
            while taken_events < args.events:
                await slots.acquire()
                began = time.perf_counter()
                while not arrived:
                    signal.clear()
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"{done} of {args.events} events after {args.timeout}s")
                    await asyncio.wait_for(signal.wait(), left)
                if not first:
                    first = time.monotonic()
                    watch.start()
                else:
                    timing.waiting += time.perf_counter() - began
                taken: list[AbstractIncomingMessage] = []
                count = 0
                # Whole messages, up to --batch events (a message larger than that alone).
                while arrived and (not taken or count + events_in(arrived[0]) <= args.batch):
                    taken.append(arrived.popleft())
                    count += events_in(taken[-1])
                taken_events += count
                messages += len(taken)
                task = asyncio.create_task(apply(taken))
                batches.add(task)
                task.add_done_callback(batches.discard)
            await asyncio.gather(*batches)
            last = time.monotonic()
            cpu = watch.stop()
        write_concern = client.write_concern.document
    finally:
        await client.close()
    seconds = last - first
    return {
        "events": done,
        "messages": messages,
        "batches": len(sizes),
        "batch_events": {"min": min(sizes), "mean": done / len(sizes), "max": max(sizes)},
        "batch_limit": args.batch,
        "in_flight": args.in_flight,
        "prefetch": args.prefetch,
        "seconds": round(seconds, 3),
        "rate": done / seconds if seconds > 0 else 0.0,
        "timing_s": timing.rounded(),
        "cpu_cores": cpu,
        "write_concern": write_concern,
        **(memory_of(os.getpid()) or {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("amqp", help="the broker's URL")
    parser.add_argument("queue", help="the webhook queue, <namespace>.inbox.webhooks")
    parser.add_argument("store", help="the store's URL (the services' write concern applies)")
    parser.add_argument("db")
    parser.add_argument("--events", type=int, required=True, help="stop after this many")
    parser.add_argument("--batch", type=int, default=BATCH, help="events per batch (at most)")
    parser.add_argument(
        "--in-flight",
        type=int,
        default=1,
        help="batches written at once (1: one at a time, the ceiling as defined)",
    )
    parser.add_argument(
        "--prefetch",
        type=int,
        default=None,
        help="AMQP messages (default: room for one more "
        "batch of one-body messages than --in-flight)",
    )
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parse_pinned(parser)
    args.prefetch = args.prefetch or (args.in_flight + 1) * args.batch
    watch = CpuWatch.of_self("minimal consumer", args.watch)
    try:
        result = uvloop.run(run(args, watch))
    except (ContractError, TimeoutError) as exc:
        print(f"minimal consumer: {exc}", file=sys.stderr)
        sys.exit(1)
    print_result(result, default=str)


if __name__ == "__main__":
    main()
