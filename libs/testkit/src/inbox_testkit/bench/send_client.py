"""The send group's client: a steady rate of sends, and when each one reached the Cloud API.

Open loop, as in P3: send ``i`` is due at ``start + i / rate`` whatever happened to the
earlier ones. Two modes:

``inbox``   ``POST /api/conversations/{id}/messages`` to inbox-api: a text, a fresh
            ``Idempotency-Key`` each, over ``--contacts`` conversations in turn. First the
            client creates the channel through REST (its token is encrypted the normal way)
            and every customer writes through the sandbox (``POST /sandbox/inbound``), so the
            24-hour window is open. For every message of the first ``--tracked``
            conversations a poller lists that conversation's messages every
            ``--poll-interval`` seconds until the message's status is ``sent`` or later.
``direct``  the baseline: the same texts ``POST``ed straight to the sandbox's Graph endpoint,
            with the body the sender builds, after the same customers wrote.

"Reached the sandbox" is the ledger's ``accepted_at`` (``GET /sandbox/sent``, matched by
``biz_opaque_callback_data``: ``inbox:<message id>`` as the sender sets it, ``bench:<n>`` in
direct mode) minus the wall-clock time the POST started; both clocks are this machine's.
Afterwards every accepted POST must be in the ledger exactly once (the client waits up to
``--drain`` seconds for the last ones, then reads the ledger again after it stopped moving).

Phases: setup, ``--warmup`` seconds at the rate unmeasured, ``--duration`` seconds measured,
the drain. Prints one line ``BENCH_JSON {...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import uvloop

from inbox_common.whatsapp import messages
from inbox_testkit.bench.cli import parse_pinned, print_result
from inbox_testkit.bench.loadgen import CpuWatch
from inbox_testkit.bench.open_loop import (
    FIND_SECONDS,
    Posts,
    Sampled,
    add_sampled_arguments,
    summary,
)

LEDGER_PAGE = 10_000
SETTLE_SECONDS = 10.0
# A status at least this far along means the message was sent.
SENT_OR_LATER = frozenset({"sent", "delivered", "read"})
CHANNEL_DISPLAY = "+1 555 010 0001"
CHANNEL_WABA = "100000000000009"


@dataclass
class Posted:
    """One POST the client made: when it began, on both clocks, and the callback data its
    message carries (known once the POST was answered)."""

    wall: float
    began: float
    measured: bool
    key: str | None = None


@dataclass
class Stats(Posts):
    sent_visible: list[float] = field(default_factory=list)
    failed_status: int = 0
    first_bad: str = ""


TEXT_NUMBER = re.compile(r"Bench reply (-?\d+):")


def text_body(n: int) -> dict[str, Any]:
    return {"type": "text", "text": {"body": f"Bench reply {n}: your order ships today."}}


class Client(Sampled):
    def __init__(self, args: argparse.Namespace, api_token: str, graph_token: str) -> None:
        super().__init__(args)  # self.pending: conversation -> message id -> began
        self.api_token = api_token
        self.graph_token = graph_token
        self.wa_ids = [f"4477{i:08d}" for i in range(args.contacts)]
        self.conversations: list[str] = []
        self.tracked: set[str] = set()
        self.posted: dict[int, Posted] = {}  # the text's number -> its POST
        self.stats = Stats()
        self.ledger: list[dict[str, Any]] = []
        self.ledger_dropped = 0
        self.drained_s = 0.0

    # --- setup ------------------------------------------------------------------------------

    async def create_channel(self, api: aiohttp.ClientSession) -> None:
        body = {
            "name": "Bench sends",
            "phone_number_id": self.args.phone_number_id,
            "waba_id": CHANNEL_WABA,
            "display_phone_number": CHANNEL_DISPLAY,
            "access_token": self.graph_token,
        }
        async with api.post(f"{self.args.api}/api/channels", json=body) as response:
            if response.status != 201:
                raise RuntimeError(f"POST /api/channels: HTTP {response.status}")

    async def customers_write(self, session: aiohttp.ClientSession) -> None:
        """Each customer writes first: their 24-hour windows open."""
        for i, wa_id in enumerate(self.wa_ids):
            body = {
                "phone_number_id": self.args.phone_number_id,
                "from": wa_id,
                "name": f"Bench {i}",
                "type": "text",
                "text": {"body": "Hello, where is my order?"},
            }
            url = f"{self.args.sandbox}/sandbox/inbound"
            async with session.post(url, json=body) as response:
                answer = await response.json() if response.status == 200 else {}
            if answer.get("ingest_status") != 200:
                raise RuntimeError(f"POST /sandbox/inbound: HTTP {response.status}, {answer}")

    async def find_conversations(self, api: aiohttp.ClientSession) -> None:
        """The conversations the customers opened, once inbox-api shows their window open."""
        deadline = time.monotonic() + FIND_SECONDS
        for wa_id in self.wa_ids:
            self.conversations.append(
                await self.find_conversation(api, wa_id, deadline, inbound=True)
            )
        self.tracked = set(self.conversations[: self.args.tracked])
        self.pending = {conversation: {} for conversation in self.tracked}

    async def first_send(self, posts: aiohttp.ClientSession, polls: aiohttp.ClientSession) -> None:
        """One message, until the sandbox has it: the channel's sender is running (it may
        start a moment after the channel is created). Counted in the check, not timed."""
        await self.send(posts, -1)
        if self.posted[-1].key is None:
            raise RuntimeError(f"the first send was refused: {self.stats.first_bad}")
        deadline = time.monotonic() + 60
        while self.posted[-1].key not in self.seen():
            if time.monotonic() > deadline:
                raise RuntimeError("the first send did not reach the sandbox within 60 s")
            await asyncio.sleep(0.1)
            await self.read_ledger(polls)

    def seen(self) -> set[str | None]:
        return {entry.get("biz_opaque_callback_data") for entry in self.ledger}

    def answered(self) -> list[str]:
        """The callback data of every POST that was answered (its message was accepted)."""
        return [posted.key for posted in self.posted.values() if posted.key is not None]

    # --- sending ----------------------------------------------------------------------------

    async def send(self, session: aiohttp.ClientSession, n: int) -> None:
        """Text ``n``: to conversation ``n`` of ``--contacts`` in turn, or straight to the
        sandbox's Graph endpoint."""
        measured = self.measuring
        if self.args.mode == "inbox":
            conversation = self.conversations[n % len(self.conversations)]
            url = f"{self.args.api}/api/conversations/{conversation}/messages"
            body: dict[str, Any] = text_body(n)
            headers = {"Idempotency-Key": f"bench-{uuid.uuid4().hex}"}
            want = 202
        else:
            conversation = ""
            url = self.args.graph
            wa_id = self.wa_ids[n % len(self.wa_ids)]
            body = messages.message(
                messages.address(phone=wa_id),
                "text",
                {**text_body(n)["text"], "preview_url": False},
                callback_data=f"bench:{n}",
            )
            headers = {"Authorization": f"Bearer {self.graph_token}"}
            want = 200
        wall, began = time.time(), time.perf_counter()
        posted = self.posted[n] = Posted(wall, began, measured)
        try:
            async with session.post(url, json=body, headers=headers) as response:
                answer = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            answer, status = {"error": type(exc).__name__}, 0
        elapsed = time.perf_counter() - began
        if status == want:
            posted.key = f"inbox:{answer['id']}" if self.args.mode == "inbox" else f"bench:{n}"
            if conversation in self.pending:
                self.pending[conversation][answer["id"]] = began
        elif not self.stats.first_bad:
            self.stats.first_bad = f"HTTP {status}: {str(answer)[:300]}"
        stats = self.stats
        if status != want:
            stats.errors += status == 0
            stats.bad_status += status != 0
        if measured:
            stats.sent += 1
            stats.ok += status == want
            stats.post_latencies.append(elapsed)

    # --- observing --------------------------------------------------------------------------

    def listed(self, item: dict[str, Any], pending: dict[str, float], now: float) -> None:
        """A listed message of the sample that is sent (or later) or failed: settled."""
        status = item.get("status")
        if status in SENT_OR_LATER or status == "failed":
            sent_at = pending.pop(item.get("id") or "", None)
            if sent_at is None:
                return
            if status == "failed":
                self.stats.failed_status += 1
            else:
                self.stats.sent_visible.append(now - sent_at)

    async def read_ledger(self, session: aiohttp.ClientSession) -> None:
        """Append the ledger entries accepted since the last read."""
        after = self.ledger[-1]["seq"] if self.ledger else 0
        while True:
            params = {
                "phone_number_id": self.args.phone_number_id,
                "after": str(after),
                "limit": str(LEDGER_PAGE),
            }
            async with session.get(f"{self.args.sandbox}/sandbox/sent", params=params) as response:
                if response.status != 200:
                    raise RuntimeError(f"GET /sandbox/sent: HTTP {response.status}")
                data = await response.json()
            self.ledger += data["items"]
            self.ledger_dropped = int(data.get("dropped", 0))
            if len(data["items"]) < LEDGER_PAGE:
                return
            after = data["items"][-1]["seq"]

    async def drain(self, session: aiohttp.ClientSession) -> None:
        """Wait until every accepted POST is in the ledger and the sample is sent (at most
        ``--drain`` seconds); then read the ledger again until it stops moving (at most
        ``SETTLE_SECONDS``), so that a late second copy of a message would be counted."""
        deadline = time.monotonic() + self.args.drain
        while time.monotonic() < deadline:
            await self.read_ledger(session)
            seen = self.seen()
            if all(key in seen for key in self.answered()) and not any(self.pending.values()):
                break
            await asyncio.sleep(0.2)
        self.drained_s = self.args.drain - max(0.0, deadline - time.monotonic())
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            before = len(self.ledger)
            await asyncio.sleep(1.0)
            await self.read_ledger(session)
            if len(self.ledger) == before:
                return

    # --- the run ----------------------------------------------------------------------------

    async def run(self, watch: CpuWatch) -> dict[str, Any]:
        args = self.args
        timeout = aiohttp.ClientTimeout(total=30)
        auth = {"Authorization": f"Bearer {self.api_token}"} if args.mode == "inbox" else {}
        posts = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=args.connections), timeout=timeout, headers=auth
        )
        polls = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=args.tracked + 4), timeout=timeout, headers=auth
        )
        async with posts, polls:
            if args.mode == "inbox":
                await self.create_channel(polls)
            await self.customers_write(polls)
            if args.mode == "inbox":
                await self.find_conversations(polls)
            await self.first_send(posts, polls)
            pollers = [asyncio.create_task(self.poll(polls, c, 20)) for c in self.pending]
            offered_s, cpu = await self.measure(posts, watch)
            await self.drain(polls)
            self.stopping = True
            await asyncio.gather(*pollers)
        return self.result(offered_s, cpu)

    def result(self, offered_s: float, cpu: dict[str, dict[str, float]]) -> dict[str, Any]:
        args, stats = self.args, self.stats
        ours = "inbox:" if args.mode == "inbox" else "bench:"
        by_key: Counter[str] = Counter()
        by_text: Counter[int] = Counter()  # also finds a message whose POST was not answered
        accepted_at: dict[int, float] = {}
        for entry in self.ledger:
            key = entry.get("biz_opaque_callback_data") or ""
            number = text_number(entry.get("request", {}))
            if not key.startswith(ours) or number is None:
                continue
            by_key[key] += 1
            by_text[number] += 1
            accepted_at.setdefault(number, datetime.fromisoformat(entry["accepted_at"]).timestamp())
        # A measured message not in the ledger after the drain counts with the time waited (a
        # lower bound), so that the percentiles do not improve by leaving out the slowest.
        gave_up_wall = time.time()
        measured = {n: posted for n, posted in self.posted.items() if posted.measured}
        reached = [accepted_at.get(n, gave_up_wall) - posted.wall for n, posted in measured.items()]
        unsent = self.still_pending()
        answered = self.answered()
        return {
            "mode": args.mode,
            **self.offered(offered_s, stats),
            "first_bad": stats.first_bad,
            "reached_sandbox_ms": summary(reached),
            "not_reached": sum(1 for n in measured if n not in accepted_at),
            "sent_visible_ms": summary(stats.sent_visible + unsent),
            "sampled_unsent": len(unsent),
            "drain_s": round(self.drained_s, 1),
            "sampled_failed": stats.failed_status,
            **self.polled(len(self.tracked)),
            "cpu_cores": cpu,
            "check": {
                "posted": len(self.posted),
                "answered": len(answered),
                "in_ledger_once": sum(1 for key in answered if by_key[key] == 1),
                "missing": sum(1 for key in answered if by_key[key] == 0),
                "duplicated": sum(1 for count in by_text.values() if count > 1),
                "unanswered_but_sent": sum(
                    1 for n, posted in self.posted.items() if posted.key is None and by_text[n]
                ),
                "unknown_in_ledger": sum(
                    count for n, count in by_text.items() if n not in self.posted
                ),
                "post_failures": stats.bad_status + stats.errors,
                "ledger_dropped": self.ledger_dropped,
            },
        }


def text_number(request: dict[str, Any]) -> int | None:
    """The number of a bench text, from the request the sandbox received."""
    body = (request.get("text") or {}).get("body", "")
    found = TEXT_NUMBER.match(body) if isinstance(body, str) else None
    return int(found.group(1)) if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=("inbox", "direct"), required=True)
    parser.add_argument("--api", default="", help="inbox mode: inbox-api's base URL")
    parser.add_argument("--graph", default="", help="direct mode: the sandbox's messages URL")
    parser.add_argument("--sandbox", required=True, help="the sandbox's base URL")
    add_sampled_arguments(parser, what="sends", duration=30.0, drain=60.0, contacts=5, tracked=1)
    args = parse_pinned(parser)
    if args.mode == "direct":
        args.tracked = 0
    # Tokens by environment, not argv (which any local user can read in /proc).
    api_token = os.environ.get("BENCH_API_TOKEN", "")
    graph_token = os.environ["BENCH_GRAPH_TOKEN"]
    watch = CpuWatch.of_self("send client", args.watch)
    result = uvloop.run(Client(args, api_token, graph_token).run(watch))
    print_result(result)


if __name__ == "__main__":
    main()
