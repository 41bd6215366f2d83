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
from inbox_testkit.bench.loadgen import CpuWatch, percentile

MAX_IN_FLIGHT = 2000


@dataclass
class Stats:
    post_latencies: list[float] = field(default_factory=list)
    visible: list[float] = field(default_factory=list)
    visible_at: list[tuple[float, float]] = field(default_factory=list)  # (sent, latency)
    get_latencies: list[float] = field(default_factory=list)
    sent: int = 0
    ok: int = 0
    bad_status: int = 0
    errors: int = 0
    dropped: int = 0
    max_lag: float = 0.0


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "p50": percentile(ordered, 50) * 1e3,
        "p90": percentile(ordered, 90) * 1e3,
        "p95": percentile(ordered, 95) * 1e3,
        "p99": percentile(ordered, 99) * 1e3,
        "max": (ordered[-1] if ordered else 0.0) * 1e3,
        "mean": (sum(ordered) / len(ordered) if ordered else 0.0) * 1e3,
    }


def windows(samples: list[tuple[float, float]], width: float) -> list[float]:
    """The median latency (ms) of the messages sent in each ``width``-second window."""
    buckets: dict[int, list[float]] = {}
    for sent, latency in samples:
        buckets.setdefault(int(sent // width), []).append(latency)
    return [
        round(percentile(sorted(buckets.get(i, [])), 50) * 1e3, 1)
        for i in range(max(buckets) + 1 if buckets else 0)
    ]


class Client:
    def __init__(self, args: argparse.Namespace, secret: bytes, token: str) -> None:
        self.args = args
        self.secret = secret
        self.wa_ids = [f"44{7_700_000_000 + i}" for i in range(args.contacts)]
        self.tracked = set(self.wa_ids[: args.tracked])
        self.conversation_of: dict[str, str] = {}
        self.pending: dict[str, dict[str, float]] = {}
        self.stats = Stats()
        self.measuring = False
        self.stopping = False
        self.in_flight: set[asyncio.Task[int]] = set()
        self.token = token
        self.began = time.perf_counter()  # the measured window's start (set in run())

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

    async def post(self, session: aiohttp.ClientSession, wa_id: str, n: int) -> int:
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

    async def offer(self, session: aiohttp.ClientSession, seconds: float, first: int) -> int:
        """Offer ``--rate`` webhooks a second for ``seconds``; returns the next number."""
        loop = asyncio.get_running_loop()
        rate = self.args.rate
        start = loop.time()
        i = 0
        while i / rate < seconds:
            due = start + i / rate
            now = loop.time()
            if due > now:
                await asyncio.sleep(due - now)
            elif self.measuring:
                self.stats.max_lag = max(self.stats.max_lag, now - due)
            n = first + i
            i += 1
            if len(self.in_flight) >= MAX_IN_FLIGHT:
                if self.measuring:
                    self.stats.dropped += 1
                continue
            task = asyncio.create_task(self.post(session, self.wa_ids[n % len(self.wa_ids)], n))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)
        return first + i

    async def open_conversations(
        self, session: aiohttp.ClientSession, api: aiohttp.ClientSession
    ) -> None:
        """One message per contact; then the tracked conversations' ids."""
        statuses = await asyncio.gather(
            *(self.post(session, wa_id, i) for i, wa_id in enumerate(self.wa_ids))
        )
        if any(s != 200 for s in statuses):
            raise RuntimeError(f"webhook-ingest refused the opening messages: {statuses[:10]}")
        deadline = time.monotonic() + 60
        for wa_id in sorted(self.tracked):
            while True:
                url = f"{self.args.api}/api/conversations?wa_id={wa_id}&limit=1"
                async with api.get(url) as response:
                    if response.status != 200:
                        raise RuntimeError(f"GET {url}: HTTP {response.status}")
                    items = (await response.json())["items"]
                if items:
                    self.conversation_of[wa_id] = items[0]["id"]
                    self.pending[items[0]["id"]] = {}
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no conversation with {wa_id} after 60 s")
                await asyncio.sleep(0.05)

    async def poll(self, api: aiohttp.ClientSession, conversation: str) -> None:
        pending = self.pending[conversation]
        url = f"{self.args.api}/api/conversations/{conversation}/messages?limit=5"
        while not self.stopping:
            if pending:
                began = time.perf_counter()
                try:
                    async with api.get(url) as response:
                        data = await response.json() if response.status == 200 else {}
                except (aiohttp.ClientError, TimeoutError):
                    data = {}
                now = time.perf_counter()
                self.stats.get_latencies.append(now - began)
                for item in data.get("items", []):
                    sent_at = pending.pop(item.get("wamid"), None)
                    if sent_at is not None:
                        self.stats.visible.append(now - sent_at)
                        self.stats.visible_at.append((sent_at - self.began, now - sent_at))
            await asyncio.sleep(self.args.poll_interval)

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
            pollers = [asyncio.create_task(self.poll(api, c)) for c in self.pending]
            n = await self.offer(posts, args.warmup, len(self.wa_ids))
            self.measuring = True
            watch.start()
            began = self.began = time.perf_counter()
            await self.offer(posts, args.duration, n)
            offered_s = time.perf_counter() - began
            self.measuring = False
            cpu = watch.stop()
            if self.in_flight:
                await asyncio.wait(set(self.in_flight), timeout=30)
            for _ in range(int(args.drain / 0.05)):
                if not any(self.pending.values()):
                    break
                await asyncio.sleep(0.05)
            self.stopping = True
            await asyncio.gather(*pollers)
        stats = self.stats
        # Still unseen after the drain: counted at the time waited so far, a lower bound, so
        # that the percentiles do not improve by leaving out the slowest messages.
        gave_up = time.perf_counter()
        unseen = [gave_up - sent for pending in self.pending.values() for sent in pending.values()]
        return {
            "offered_rate": args.rate,
            "duration_s": offered_s,
            "sent": stats.sent,
            "sent_rate": stats.sent / offered_s if offered_s else 0.0,
            "accepted": stats.ok,
            "bad_status": stats.bad_status,
            "errors": stats.errors,
            "dropped_client_backlog": stats.dropped,
            "scheduler_max_lag_ms": stats.max_lag * 1e3,
            "post_latency_ms": summary(stats.post_latencies),
            "visible_latency_ms": summary(stats.visible + unseen),
            "visible_p50_ms_by_10s": windows(stats.visible_at, 10.0),
            "sampled_unseen": len(unseen),
            "get_latency_ms": summary(stats.get_latencies),
            "gets": len(stats.get_latencies),
            "contacts": args.contacts,
            "tracked": args.tracked,
            "poll_interval_ms": args.poll_interval * 1e3,
            "cpu_cores": cpu,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ingest", required=True, help="the webhook URL of webhook-ingest")
    parser.add_argument("--api", required=True, help="inbox-api's base URL")
    parser.add_argument("--phone-number-id", required=True)
    parser.add_argument("--rate", type=float, required=True, help="webhooks offered a second")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--drain", type=float, default=30.0)
    parser.add_argument("--contacts", type=int, default=50)
    parser.add_argument("--tracked", type=int, default=5)
    parser.add_argument("--poll-interval", type=float, default=0.01)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one core")
    parser.add_argument("--watch", action="append", default=[], help="name=pid: report its CPU use")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    # Secrets by environment, not argv (which any local user can read in /proc).
    secret = os.environ["BENCH_WEBHOOK_SECRET"].encode()
    token = os.environ["BENCH_API_TOKEN"]
    watch = CpuWatch({"e2e client": os.getpid(), **CpuWatch.parse(args.watch)})
    result = uvloop.run(Client(args, secret, token).run(watch))
    print("BENCH_JSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
