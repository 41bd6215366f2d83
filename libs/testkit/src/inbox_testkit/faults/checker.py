"""The total-queue check, Jepsen style, over the services as black boxes.

A workload is a list of :class:`Item`: signed webhook bodies, each carrying known facts
(inbound message wamids, ``(wamid, status)`` pairs). The :class:`Sender` posts them to
webhook-ingest at a steady rate while a fault happens, records every attempt (start, end,
HTTP status) and, like Meta, re-sends every body that did not get a 200 until it does or a
deadline passes. Then :func:`wait_quiet` lets the system settle and :func:`check` reads
the store and counts:

- ``lost``: facts of a body that got a 200 but are not in the store (a message without its
  document, a status missing from its message's history, an inbound message missing from
  its conversation's unread set);
- ``duplicated``: anything stored more than once (a wamid in several documents, a status
  twice in one history, a wamid twice in an unread set, two conversations or contacts for
  one user);
- ``unexpected``: anything stored that no body carried (a wamid nobody sent, a status that
  was not sent for that wamid, an unread wamid that is not a message of the conversation).

A body that was stored although its POST never got a 200 is not an error (the broker may
confirm after the publish timed out); it is counted as ``recovered``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiohttp
import orjson

from inbox_common.store.client import Database
from inbox_common.whatsapp.signature import SIGNATURE_HEADER, sign
from inbox_sandbox import payloads
from inbox_testkit.faults.stack import PHONE_NUMBER_ID, SECRET

WEBHOOK_PATH = "/webhooks/whatsapp"
QueueDepth = Callable[[], Awaitable[int]]
NO_ANSWER = 0  # the attempt's "status" when the connection failed or timed out


@dataclass(frozen=True, slots=True)
class Item:
    """One webhook body and the facts it carries."""

    key: str
    body: bytes
    messages: tuple[str, ...] = ()
    statuses: tuple[tuple[str, str], ...] = ()


def item_of(key: str, payload: dict[str, Any]) -> Item:
    """An :class:`Item` of a webhook body, its facts read from the body itself."""
    messages: list[str] = []
    statuses: list[tuple[str, str]] = []
    for entry in payload["entry"]:
        for change in entry["changes"]:
            value = change["value"]
            messages.extend(m["id"] for m in value.get("messages", []))
            statuses.extend((s["id"], s["status"]) for s in value.get("statuses", []))
    return Item(key, orjson.dumps(payload), tuple(messages), tuple(statuses))


def text_items(count: int, *, contacts: int = 25, label: str = "m") -> list[Item]:
    """``count`` text webhooks from ``contacts`` users, each with its own wamid."""
    items = []
    for i in range(count):
        wa_id = f"49170{i % contacts:07d}"
        wamid = payloads.new_wamid()
        payload = payloads.text_webhook(
            PHONE_NUMBER_ID, wa_id, f"User {i % contacts}", f"{label} {i}", wamid=wamid
        )
        items.append(item_of(wamid, payload))
    return items


@dataclass(frozen=True, slots=True)
class Attempt:
    key: str
    started: float
    ended: float
    status: int
    error: str = ""

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass
class Sender:
    """Posts items to webhook-ingest, re-sending every non-200 (see the module docstring)."""

    ingest_url: str
    concurrency: int = 16
    rate: float | None = None
    retry_deadline: float = 90.0
    request_timeout: float = 15.0
    attempts: list[Attempt] = field(default_factory=list)
    ok: set[str] = field(default_factory=set)
    never_ok: set[str] = field(default_factory=set)
    started: int = 0
    _progress: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def run(self, items: Sequence[Item]) -> None:
        """Send every item (first attempts paced by ``rate``) and retry until 200."""
        loop = asyncio.get_running_loop()
        begin = loop.time()
        gate = asyncio.Semaphore(self.concurrency)
        timeout = aiohttp.ClientTimeout(total=self.request_timeout)
        connector = aiohttp.TCPConnector(limit=self.concurrency * 2)
        async with (
            aiohttp.ClientSession(timeout=timeout, connector=connector) as session,
            asyncio.TaskGroup() as group,
        ):
            for index, item in enumerate(items):
                if self.rate:
                    delay = begin + index / self.rate - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                async with gate:
                    pass  # wait for a free slot before starting the next first attempt
                group.create_task(self._deliver(session, gate, item, loop.time()))

    async def wait_started(self, count: int) -> None:
        """Wait until ``count`` items had their first attempt."""
        async with self._progress:
            await self._progress.wait_for(lambda: self.started >= count)

    async def _deliver(
        self,
        session: aiohttp.ClientSession,
        gate: asyncio.Semaphore,
        item: Item,
        first: float,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = first + self.retry_deadline
        backoff = 0.2
        attempt_number = 0
        while True:
            async with gate:
                attempt = await self._post(session, item)
            self.attempts.append(attempt)
            attempt_number += 1
            if attempt_number == 1:
                async with self._progress:
                    self.started += 1
                    self._progress.notify_all()
            if attempt.status == 200:
                self.ok.add(item.key)
                return
            if loop.time() + backoff > deadline:
                self.never_ok.add(item.key)
                return
            # Meta backs off between retries; jitter keeps the retries from marching in step.
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, 1.0)

    async def _post(self, session: aiohttp.ClientSession, item: Item) -> Attempt:
        loop = asyncio.get_running_loop()
        headers = {SIGNATURE_HEADER: sign(SECRET.encode(), item.body)}
        headers["Content-Type"] = "application/json"
        started = loop.time()
        try:
            async with session.post(
                f"{self.ingest_url}{WEBHOOK_PATH}", data=item.body, headers=headers
            ) as response:
                await response.read()
                return Attempt(item.key, started, loop.time(), response.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Attempt(item.key, started, loop.time(), NO_ANSWER, type(exc).__name__)

    # --- what happened -----------------------------------------------------------------------

    def absorb(self, other: Sender) -> None:
        """Count ``other``'s attempts and outcomes as this sender's (a side stream)."""
        self.attempts.extend(other.attempts)
        self.ok |= other.ok
        self.never_ok |= other.never_ok
        self.started += other.started

    def statuses(self) -> Counter[int]:
        return Counter(a.status for a in self.attempts)

    def retried(self) -> int:
        """How many items needed more than one attempt."""
        per_key = Counter(a.key for a in self.attempts)
        return sum(1 for n in per_key.values() if n > 1)

    def answered_200_between(self, since: float, until: float) -> list[Attempt]:
        """Attempts that started after ``since`` and got a 200 before ``until``."""
        return [
            a for a in self.attempts if a.status == 200 and a.started > since and a.ended < until
        ]

    def slowest(self) -> float:
        return max((a.seconds for a in self.attempts), default=0.0)

    def summary(self) -> str:
        codes = ", ".join(
            f"{code or 'no answer'}: {n}" for code, n in sorted(self.statuses().items())
        )
        return (
            f"{len(self.attempts)} attempts ({codes}); {self.retried()} items retried; "
            f"slowest answer {self.slowest():.2f} s; {len(self.never_ok)} never got a 200"
        )


@dataclass
class Verdict:
    """The counts of one fault's total-queue check."""

    fault: str
    sent: int
    ok: int
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    recovered: int = 0
    retried: int = 0
    non_200: int = 0
    unfinished: int = 0
    notes: dict[str, object] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"fault={self.fault} sent={self.sent} ok={self.ok} lost={self.lost} "
            f"duplicated={self.duplicated} unexpected={self.unexpected} "
            f"(retried={self.retried} non_200={self.non_200} recovered={self.recovered} "
            f"unfinished={self.unfinished}"
            + "".join(f" {k}={v}" for k, v in self.notes.items())
            + ")"
        )

    @property
    def clean(self) -> bool:
        return (
            self.ok == self.sent
            and self.lost == 0
            and self.duplicated == 0
            and self.unexpected == 0
            and self.unfinished == 0
        )

    def explain(self, limit: int = 15) -> str:
        shown = "\n  ".join(self.details[:limit])
        more = f"\n  ... and {len(self.details) - limit} more" if len(self.details) > limit else ""
        return f"{self.line()}\n  {shown}{more}"


def _facts(items: Iterable[Item]) -> tuple[set[str], set[tuple[str, str]]]:
    messages: set[str] = set()
    statuses: set[tuple[str, str]] = set()
    for item in items:
        messages.update(item.messages)
        statuses.update(item.statuses)
    return messages, statuses


def _body_hashes(items: Iterable[Item]) -> set[str]:
    """The ledger keys (SHA-256 of the raw body) of ``items``."""
    return {hashlib.sha256(i.body).hexdigest() for i in items}


async def stored_facts(db: Database) -> tuple[set[str], set[tuple[str, str]]]:
    """The inbound messages and the (wamid, status) pairs in the store now."""
    messages: set[str] = set()
    statuses: set[tuple[str, str]] = set()
    async for doc in db["messages"].find({}, {"wamid": 1, "direction": 1, "statuses": 1}):
        if doc.get("direction") == "inbound":
            messages.add(doc["wamid"])
        statuses.update((doc["wamid"], s.get("status")) for s in doc.get("statuses") or [])
    return messages, statuses


# The deadline is this helper's whole job; it reports nothing itself, check() counts.
async def wait_quiet(
    db: Database,
    items: Sequence[Item],
    sender: Sender,
    depth: QueueDepth,
    *,
    timeout: float = 60.0,  # noqa: ASYNC109
    stable: float = 1.5,
    settle: float = 12.0,
    ignore_sha256: Iterable[str] = (),
) -> None:
    """Wait until the system is quiet; never raises (:func:`check` counts what is missing).

    Quiet means: the store holds every fact of every 200'd body, the queue has no ready
    message, every 200'd body has its ledger entry and none is still ``received``, and
    nothing changed for ``stable`` seconds (a consumer that stored a batch's messages and
    is still writing its ledger entries and conversations is not quiet).
    When some of that never comes (a lost message, a ledger entry stuck in
    ``received``), waiting ends once nothing changed for ``settle`` seconds (longer than a
    consumer's longest pause between retries), or at ``timeout``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    ok_items = [i for i in items if i.key in sender.ok]
    wanted_messages, wanted_statuses = _facts(ok_items)
    wanted_bodies = list(_body_hashes(ok_items))
    ignored = list(ignore_sha256)
    last: tuple[int, ...] | None = None
    since = loop.time()
    while loop.time() < deadline:
        messages, statuses = await stored_facts(db)
        missing = len(wanted_messages - messages) + len(wanted_statuses - statuses)
        entered = await db["webhook_events"].distinct("sha256", {"sha256": {"$in": wanted_bodies}})
        snapshot = (
            missing,
            await depth(),
            len(wanted_bodies)
            - len(entered)
            + await db["webhook_events"].count_documents(
                {"status": "received", "sha256": {"$nin": ignored}}
            ),
            len(messages),
            len(statuses),
            await db["webhook_events"].count_documents({}),
        )
        if snapshot != last:
            last, since = snapshot, loop.time()
        else:
            unchanged = loop.time() - since
            if unchanged >= (stable if snapshot[:3] == (0, 0, 0) else settle):
                return
        await asyncio.sleep(0.25)


async def check(
    db: Database,
    fault: str,
    items: Sequence[Item],
    sender: Sender,
    *,
    ignore_sha256: Iterable[str] = (),
    dead: Sequence[Item] = (),
) -> Verdict:
    """Count lost, duplicated and unexpected facts (see the module docstring).

    ``dead`` are bodies that were sent but end in the dead-letter queue: their facts are
    neither required nor unexpected in the store.
    """
    verdict = Verdict(
        fault=fault,
        sent=len(items),
        ok=len(sender.ok & {i.key for i in items}),
        retried=sender.retried(),
        non_200=sum(1 for a in sender.attempts if a.status != 200),
    )
    details = verdict.details
    for key in sorted(sender.never_ok & {i.key for i in items}):
        details.append(f"never got a 200: {key}")
    ok_items = [i for i in items if i.key in sender.ok]
    ok_messages, ok_statuses = _facts(ok_items)
    sent_messages, sent_statuses = _facts(items)
    dead_messages, dead_statuses = _facts(dead)
    sent_messages |= dead_messages
    sent_statuses |= dead_statuses
    sent_status_wamids = {w for w, _ in sent_statuses}

    docs = await db["messages"].find({}).to_list()
    per_wamid = Counter(d["wamid"] for d in docs)
    for wamid, n in per_wamid.items():
        if n > 1:
            verdict.duplicated += n - 1
            details.append(f"duplicated: wamid {wamid} is in {n} documents")
    inbound: dict[str, Any] = {}
    for doc in docs:
        wamid = doc["wamid"]
        if doc.get("direction") == "inbound":
            inbound[wamid] = doc
        if wamid not in sent_messages and wamid not in sent_status_wamids:
            verdict.unexpected += 1
            details.append(f"unexpected: wamid {wamid} was never sent")
        history = Counter(s.get("status") for s in doc.get("statuses") or [])
        for status, n in history.items():
            if n > 1:
                verdict.duplicated += n - 1
                details.append(f"duplicated: status {status} of {wamid} is {n} times in history")
            if (wamid, status) not in sent_statuses:
                verdict.unexpected += 1
                details.append(f"unexpected: status {status} of {wamid} was never sent")
        if (
            doc.get("direction") is not None
            and wamid in sent_status_wamids
            and (wamid not in sent_messages)
        ):
            verdict.unexpected += 1
            details.append(f"unexpected: {wamid} only had statuses but became a message")

    stored_statuses = {(d["wamid"], s.get("status")) for d in docs for s in d.get("statuses") or []}
    for wamid in sorted(ok_messages - set(inbound)):
        verdict.lost += 1
        details.append(f"lost: message {wamid} got a 200 but is not stored")
    for wamid, status in sorted(ok_statuses - stored_statuses):
        verdict.lost += 1
        details.append(f"lost: status {status} of {wamid} got a 200 but is not stored")
    stored_messages = set(inbound)
    stored_any = stored_messages | {w for w, _ in stored_statuses}
    verdict.recovered = len(
        {w for i in items if i.key not in sender.ok for w in i.messages} & stored_any
    )

    await _check_conversations(db, inbound, verdict, ignored=dead_messages)
    await _check_ledger(db, ok_items, verdict, set(ignore_sha256))
    return verdict


async def _check_conversations(
    db: Database, inbound: dict[str, Any], verdict: Verdict, *, ignored: set[str]
) -> None:
    details = verdict.details
    # A conversation or contact merged into another (the same person, first known by another
    # identifier) is an alias, not a second one.
    live = {"merged_into": {"$exists": False}}
    conversations = await db["conversations"].find(live).to_list()
    per_person = Counter(
        (c["channel_id"], c.get("contact_id") or c.get("wa_id")) for c in conversations
    )
    for key, n in per_person.items():
        if n > 1:
            verdict.duplicated += n - 1
            details.append(f"duplicated: {n} conversations with {key[1]}")
    contacts = await db["contacts"].find(live).to_list()
    for identifier in ("wa_id", "user_id"):
        held = Counter((c["channel_id"], c[identifier]) for c in contacts if c.get(identifier))
        for key, n in held.items():
            if n > 1:
                verdict.duplicated += n - 1
                details.append(f"duplicated: {n} contacts for {key[1]}")
    members: dict[Any, set[str]] = {}
    for wamid, doc in inbound.items():
        members.setdefault(doc.get("conversation_id"), set()).add(wamid)
    for conversation in conversations:
        unread = list(conversation.get("unread_wamids") or [])
        mine = members.get(conversation["_id"], set())
        for wamid, n in Counter(unread).items():
            if n > 1:
                verdict.duplicated += n - 1
                details.append(f"duplicated: {wamid} is {n} times unread")
        for wamid in sorted(set(unread) - mine - ignored):
            verdict.unexpected += 1
            details.append(f"unexpected: unread {wamid} is not a message of its conversation")
        for wamid in sorted(mine - set(unread)):
            verdict.lost += 1
            details.append(f"lost: {wamid} is missing from its conversation's unread set")


async def _check_ledger(
    db: Database, ok_items: Sequence[Item], verdict: Verdict, ignored: set[str]
) -> None:
    wanted = _body_hashes(ok_items)
    events = await db["webhook_events"].find({}, {"sha256": 1, "status": 1}).to_list()
    for sha, n in Counter(e["sha256"] for e in events).items():
        if n > 1:
            verdict.duplicated += n - 1
            verdict.details.append(f"duplicated: body {sha[:12]}... is {n} times in the ledger")
    by_sha = {e["sha256"]: e.get("status") for e in events}
    for sha in sorted(wanted):
        status = by_sha.get(sha)
        if status != "processed":
            verdict.unfinished += 1
            verdict.details.append(f"ledger: body {sha[:12]}... got a 200 but is {status!r}")
    for sha, status in by_sha.items():
        if status == "received" and sha not in ignored and sha not in wanted:
            verdict.unfinished += 1
            verdict.details.append(f"ledger: body {sha[:12]}... is still {status!r}")


@contextlib.asynccontextmanager
async def queue_depth(amqp_url: str, queue: str) -> AsyncIterator[QueueDepth]:
    """A function that reads the number of ready messages of ``queue`` (passive declare)."""
    connection = await aio_pika.connect_robust(amqp_url, timeout=10)
    try:

        async def depth() -> int:
            channel = await connection.channel()
            try:
                declared = await channel.declare_queue(queue, passive=True)
                count = declared.declaration_result.message_count
                return int(count or 0)
            finally:
                await channel.close()

        yield depth
    finally:
        await connection.close()


Report = Callable[[Verdict], None]
"""Records a verdict in the run's summary (the fault suite's ``fault_report`` fixture)."""
