"""What the open-loop clients share (``e2e_client.py``, ``send_client.py``, ``live_client.py``):
the offered rate, the measured window, the sampled conversations' pollers and the summaries.

Open loop: request ``i`` is due at ``start + i / rate`` whatever happened to the earlier ones,
so a slow service meets the same offered load, as with Meta. At most ``MAX_IN_FLIGHT``
requests are in flight; one due beyond that is dropped (and counted), not queued.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from inbox_testkit.bench.loadgen import CpuWatch, percentile

MAX_IN_FLIGHT = 2000
FIND_SECONDS = 60  # how long the setup waits for inbox-api to list the sample's conversations


def summary(values: list[float]) -> dict[str, float]:
    """Latencies (seconds) as milliseconds: count, percentiles, max and mean."""
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


@dataclass
class Posts:
    """The measured window's POSTs: how many, how they were answered, how long they took."""

    post_latencies: list[float] = field(default_factory=list)
    sent: int = 0
    ok: int = 0
    bad_status: int = 0
    errors: int = 0


class OpenLoop:
    """A client offering ``args.rate`` requests a second: ``args.warmup`` seconds unmeasured,
    then ``args.duration`` seconds measured. A subclass makes request ``n`` in ``send``."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.measuring = False
        self.in_flight: set[asyncio.Task[Any]] = set()
        self.max_lag = 0.0  # the measured window's longest delay of a request past its due time
        self.dropped = 0  # requests due in the measured window beyond MAX_IN_FLIGHT
        self.dropped_warmup = 0  # the same in the warm-up
        self.began = time.perf_counter()  # the measured window's start (set by measure())

    async def send(self, session: aiohttp.ClientSession, n: int) -> object:
        raise NotImplementedError

    async def offer(self, session: aiohttp.ClientSession, seconds: float, first: int) -> int:
        """Offer ``args.rate`` requests a second for ``seconds``, numbered from ``first``;
        returns the next number."""
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
                self.max_lag = max(self.max_lag, now - due)
            i += 1
            if len(self.in_flight) >= MAX_IN_FLIGHT:
                if self.measuring:
                    self.dropped += 1
                else:
                    self.dropped_warmup += 1
                continue
            task = asyncio.create_task(self.send(session, first + i - 1))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)
        return first + i

    async def measure(
        self, session: aiohttp.ClientSession, watch: CpuWatch, first: int = 0
    ) -> tuple[float, dict[str, dict[str, float]]]:
        """The warm-up, then the measured window (``watch`` over it), then up to 30 s for
        the requests still in flight. Returns the window's seconds and the CPU use."""
        n = await self.offer(session, self.args.warmup, first)
        self.measuring = True
        watch.start()
        self.began = time.perf_counter()
        await self.offer(session, self.args.duration, n)
        offered_s = time.perf_counter() - self.began
        self.measuring = False
        cpu = watch.stop()
        if self.in_flight:
            await asyncio.wait(set(self.in_flight), timeout=30)
        return offered_s, cpu


def add_sampled_arguments(
    parser: argparse.ArgumentParser,
    *,
    what: str,
    duration: float,
    drain: float,
    contacts: int,
    tracked: int,
) -> None:
    """The options a ``Sampled`` client reads (``what``: what it offers), with its defaults;
    the parent passes them with sampled_arguments()."""
    parser.add_argument("--phone-number-id", required=True)
    parser.add_argument("--rate", type=float, required=True, help=f"{what} offered a second")
    parser.add_argument("--duration", type=float, default=duration)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument(
        "--drain", type=float, default=drain, help="seconds to wait for the last messages"
    )
    parser.add_argument("--contacts", type=int, default=contacts)
    parser.add_argument("--tracked", type=int, default=tracked)
    parser.add_argument("--poll-interval", type=float, default=0.01)
    parser.add_argument("--connections", type=int, default=50)


def sampled_arguments(
    phone_number_id: str,
    *,
    rate: float,
    duration: float,
    warmup: float,
    contacts: int,
    tracked: int,
    poll_interval_ms: float,
) -> list[str]:
    """The command-line options of a ``Sampled`` client (see add_sampled_arguments())."""
    return [
        f"--phone-number-id={phone_number_id}",
        f"--rate={rate}",
        f"--duration={duration}",
        f"--warmup={warmup}",
        f"--contacts={contacts}",
        f"--tracked={tracked}",
        f"--poll-interval={poll_interval_ms / 1e3}",
    ]


class Sampled(OpenLoop):
    """An open-loop client that also follows a sample of conversations: while one of a
    conversation's sampled messages is pending, a poller lists its newest messages every
    ``args.poll_interval`` seconds, and ``listed`` settles the ones the answer shows."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.pending: dict[str, dict[str, float]] = {}  # conversation -> key -> sent at
        self.get_latencies: list[float] = []
        self.stopping = False

    def listed(self, item: dict[str, Any], pending: dict[str, float], now: float) -> None:
        raise NotImplementedError

    async def poll(self, api: aiohttp.ClientSession, conversation: str, limit: int) -> None:
        pending = self.pending[conversation]
        url = f"{self.args.api}/api/conversations/{conversation}/messages?limit={limit}"
        while not self.stopping:
            if pending:
                began = time.perf_counter()
                try:
                    async with api.get(url) as response:
                        data = await response.json() if response.status == 200 else {}
                except (aiohttp.ClientError, TimeoutError):
                    data = {}
                now = time.perf_counter()
                self.get_latencies.append(now - began)
                for item in data.get("items", []):
                    self.listed(item, pending, now)
            await asyncio.sleep(self.args.poll_interval)

    def still_pending(self) -> list[float]:
        """How long each sampled message still pending has been waited for. Counted in the
        latencies at that (a lower bound), so that the percentiles do not improve by leaving
        out the slowest messages."""
        gave_up = time.perf_counter()
        return [gave_up - began for pending in self.pending.values() for began in pending.values()]

    async def find_conversation(
        self, api: aiohttp.ClientSession, wa_id: str, deadline: float, *, inbound: bool = False
    ) -> str:
        """The id of the conversation with ``wa_id`` once inbox-api lists it (with
        ``inbound``: once it shows the customer's last message, so its window is open);
        ``deadline``: a time.monotonic() at most ``FIND_SECONDS`` after the setup began."""
        url = f"{self.args.api}/api/conversations?wa_id={wa_id}&limit=1"
        while True:
            async with api.get(url) as response:
                if response.status != 200:
                    raise RuntimeError(f"GET {url}: HTTP {response.status}")
                items = (await response.json())["items"]
            if items and (not inbound or items[0].get("last_inbound_at")):
                return str(items[0]["id"])
            if time.monotonic() > deadline:
                raise RuntimeError(f"no conversation with {wa_id} after {FIND_SECONDS} s")
            await asyncio.sleep(0.05)

    def offered(self, offered_s: float, posts: Posts) -> dict[str, Any]:
        """The result's part about the offered load and the POSTs."""
        return {
            "offered_rate": self.args.rate,
            "duration_s": offered_s,
            "sent": posts.sent,
            "sent_rate": posts.sent / offered_s if offered_s else 0.0,
            "accepted": posts.ok,
            "bad_status": posts.bad_status,
            "errors": posts.errors,
            "dropped_client_backlog": self.dropped,
            "scheduler_max_lag_ms": self.max_lag * 1e3,
            "post_latency_ms": summary(posts.post_latencies),
        }

    def polled(self, tracked: int) -> dict[str, Any]:
        """The result's part about the sample's pollers."""
        return {
            "get_latency_ms": summary(self.get_latencies),
            "gets": len(self.get_latencies),
            "contacts": self.args.contacts,
            "tracked": tracked,
            "poll_interval_ms": self.args.poll_interval * 1e3,
        }
