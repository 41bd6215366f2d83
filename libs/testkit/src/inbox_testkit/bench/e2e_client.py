"""P3's client: a steady offered rate of signed webhooks, and when each becomes visible.

Open loop: webhook ``i`` is due at ``start + i / rate`` whatever happened to the earlier ones
(a token bucket refilled at ``--rate``), so a slow service meets the same offered load, as
with Meta. Every body is unique (its own wamid) and comes from one of ``--contacts`` contacts
in turn; the first ``--tracked`` of them are the sample: for each of their messages, a poller
of that conversation asks ``GET /api/conversations/{id}/messages?limit=5`` every
``--poll-interval`` seconds while one of its messages is not seen yet. The latency is from
the start of the POST to the arrival of the first answer that lists the wamid; a message
still unseen after the drain counts with the time waited (so its latency is a lower bound).

Phases: one message per contact opens the conversations (the tracked ones' ids are looked
up), ``--warmup`` seconds at the rate unmeasured, ``--duration`` seconds measured, then up to
``--drain`` seconds for the sample to become visible. Prints one line ``BENCH_JSON {...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import uvloop

from inbox_common.whatsapp.signature import SIGNATURE_HEADER, sign
from inbox_sandbox.payloads import new_wamid, text_webhook
from inbox_testkit.bench.cli import parse_pinned, print_result
from inbox_testkit.bench.loadgen import CpuWatch, percentile
from inbox_testkit.bench.open_loop import (
    FIND_SECONDS,
    Posts,
    Sampled,
    add_sampled_arguments,
    summary,
)


@dataclass
class Stats(Posts):
    visible: list[float] = field(default_factory=list)
    visible_at: list[tuple[float, float]] = field(default_factory=list)  # (sent, latency)


def windows(samples: list[tuple[float, float]], width: float) -> list[float]:
    """The median latency (ms) of the messages sent in each ``width``-second window."""
    buckets: dict[int, list[float]] = {}
    for sent, latency in samples:
        buckets.setdefault(int(sent // width), []).append(latency)
    return [
        round(percentile(sorted(buckets.get(i, [])), 50) * 1e3, 1)
        for i in range(max(buckets) + 1 if buckets else 0)
    ]


class Client(Sampled):
    def __init__(self, args: argparse.Namespace, secret: bytes, token: str) -> None:
        super().__init__(args)
        self.secret = secret
        self.wa_ids = [f"44{7_700_000_000 + i}" for i in range(args.contacts)]
        self.tracked = set(self.wa_ids[: args.tracked])
        self.conversation_of: dict[str, str] = {}
        self.stats = Stats()
        self.token = token

    def body(self, wa_id: str, n: int) -> tuple[str, bytes]:
        wamid = new_wamid()
        payload = text_webhook(
            self.args.phone_number_id,
            wa_id,
            f"Bench {wa_id[-4:]}",
            f"Bench message {n}, please confirm.",
            wamid=wamid,
            timestamp=int(time.time()),
        )
        return wamid, json.dumps(payload).encode()

    async def send(self, session: aiohttp.ClientSession, n: int) -> int:
        """Webhook ``n``, from contact ``n`` of ``--contacts`` in turn; its HTTP status."""
        wa_id = self.wa_ids[n % len(self.wa_ids)]
        wamid, body = self.body(wa_id, n)
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(self.secret, body)}
        measured = self.measuring
        conversation = self.conversation_of.get(wa_id) if measured else None
        began = time.perf_counter()
        if conversation is not None:
            self.pending[conversation][wamid] = began
        try:
            async with session.post(self.args.ingest, data=body, headers=headers) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        elapsed = time.perf_counter() - began
        if measured:
            stats = self.stats
            stats.sent += 1
            stats.post_latencies.append(elapsed)
            if status == 200:
                stats.ok += 1
            elif status == 0:
                stats.errors += 1
            else:
                stats.bad_status += 1
        if status != 200 and conversation is not None:
            self.pending[conversation].pop(wamid, None)  # never stored: nothing to see
        return status

    async def open_conversations(
        self, session: aiohttp.ClientSession, api: aiohttp.ClientSession
    ) -> None:
        """One message per contact; then the tracked conversations' ids."""
        statuses = await asyncio.gather(*(self.send(session, i) for i in range(len(self.wa_ids))))
        if any(s != 200 for s in statuses):
            raise RuntimeError(f"webhook-ingest refused the opening messages: {statuses[:10]}")
        deadline = time.monotonic() + FIND_SECONDS
        for wa_id in sorted(self.tracked):
            conversation = await self.find_conversation(api, wa_id, deadline)
            self.conversation_of[wa_id] = conversation
            self.pending[conversation] = {}

    def listed(self, item: dict[str, Any], pending: dict[str, float], now: float) -> None:
        """A listed message is visible: its latency, if it is one of the sample's."""
        sent_at = pending.pop(item.get("wamid") or "", None)
        if sent_at is not None:
            self.stats.visible.append(now - sent_at)
            self.stats.visible_at.append((sent_at - self.began, now - sent_at))

    async def run(self, watch: CpuWatch) -> dict[str, Any]:
        args = self.args
        timeout = aiohttp.ClientTimeout(total=30)
        posts = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=args.connections), timeout=timeout
        )
        api = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=args.tracked + 4),
            timeout=timeout,
            headers={"Authorization": f"Bearer {self.token}"},
        )
        async with posts, api:
            await self.open_conversations(posts, api)
            pollers = [asyncio.create_task(self.poll(api, c, 5)) for c in self.pending]
            offered_s, cpu = await self.measure(posts, watch, len(self.wa_ids))
            for _ in range(int(args.drain / 0.05)):
                if not any(self.pending.values()):
                    break
                await asyncio.sleep(0.05)
            self.stopping = True
            await asyncio.gather(*pollers)
        stats = self.stats
        # Still unseen after the drain: counted at the time waited so far (a lower bound).
        unseen = self.still_pending()
        return {
            **self.offered(offered_s, stats),
            "visible_latency_ms": summary(stats.visible + unseen),
            "visible_p50_ms_by_10s": windows(stats.visible_at, 10.0),
            "sampled_unseen": len(unseen),
            **self.polled(args.tracked),
            "cpu_cores": cpu,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ingest", required=True, help="the webhook URL of webhook-ingest")
    parser.add_argument("--api", required=True, help="inbox-api's base URL")
    add_sampled_arguments(
        parser, what="webhooks", duration=60.0, drain=30.0, contacts=50, tracked=5
    )
    args = parse_pinned(parser)
    # Secrets by environment, not argv (which any local user can read in /proc).
    secret = os.environ["BENCH_WEBHOOK_SECRET"].encode()
    token = os.environ["BENCH_API_TOKEN"]
    watch = CpuWatch.of_self("e2e client", args.watch)
    result = uvloop.run(Client(args, secret, token).run(watch))
    print_result(result)


if __name__ == "__main__":
    main()
