"""The live group's WebSocket clients: a crowd that counts, and one client that measures.

``crowd``    ``--clients`` WebSocket clients of one server (inbox-api B, or the bare fan-out
             server), each with the token in the ``Authorization`` header of its upgrade
             request, each counting the events it receives. It touches ``--ready`` once every
             client got its ``ready`` frame; on SIGTERM it waits until no frame came for a
             second (at most ``--quiet-max`` seconds), closes the clients and writes its
             tally to ``--out``.
``measure``  one more client of the same server, and the changes: ``--rate`` a second, open
             loop, it sets a conversation's labels on inbox-api A (``PUT
             /api/conversations/{id}/labels``) or POSTs an event frame to the bare server's
             ``/publish``. Its latency is from the change request's start to this client's
             receipt of the event. Prints one line ``BENCH_JSON {...}``.

Every change carries a marker label ``<phase><n>-<wall-clock ns>`` (``w`` warm-up, ``m``
measured): a client knows which change an event is, and the crowd times each measured event
against the wall clock it was sent at (the same machine's clock). The frames are the protocol
of ``inbox_api.live.protocol``: ``ready``, ``event`` (``event.data`` is the conversation as
REST shows it, labels included) and ``reload``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvloop
from aiohttp import WSMsgType
from bson import ObjectId

from inbox_testkit.bench.cli import parse_pinned, print_result
from inbox_testkit.bench.loadgen import CpuWatch
from inbox_testkit.bench.open_loop import OpenLoop, summary

MARKER = re.compile(r"([wm])(\d+)-(\d+)")
CONNECT_BATCH = 50


@dataclass(frozen=True, slots=True)
class Marked:
    """What an event frame says about the change it announces."""

    phase: str  # w (warm-up) or m (measured)
    n: int
    sent_ns: int  # the wall clock when the change was sent
    published_at: str  # the event's ``at``: when the replica published it


def marker(frame: str) -> Marked | None:
    """The change an event frame announces, if it carries a marker."""
    try:
        message = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(message, dict) or message.get("type") != "event":
        return None
    event = message.get("event", {})
    for label in event.get("data", {}).get("labels") or ():
        found = MARKER.fullmatch(label)
        if found is not None:
            phase, n, sent_ns = found.groups()
            return Marked(phase, int(n), int(sent_ns), str(event.get("at", "")))
    return None


async def connect(
    session: aiohttp.ClientSession, url: str, token: str
) -> aiohttp.ClientWebSocketResponse:
    """A client past its ``ready`` frame (anything else first is an error)."""
    ws = await session.ws_connect(
        url, headers={"Authorization": f"Bearer {token}"}, autoping=True, compress=0
    )
    first = await ws.receive(timeout=30)
    if first.type is not WSMsgType.TEXT or orjson.loads(first.data).get("type") != "ready":
        await ws.close()
        raise RuntimeError(f"{url}: the first frame was {first.type.name} {first.data!r:.200}")
    return ws


# --- the crowd --------------------------------------------------------------------------------


@dataclass
class Tally:
    received: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    frames: int = 0
    reloads: int = 0
    duplicates: int = 0
    close_codes: Counter[int] = field(default_factory=Counter)


class Crowd:
    def __init__(self, args: argparse.Namespace, token: str) -> None:
        self.args = args
        self.token = token
        self.tally = Tally()
        self.stopping = False
        self.frame_came = asyncio.Event()

    async def read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        tally = self.tally
        seen: set[int] = set()
        async for message in ws:
            if message.type is not WSMsgType.TEXT:
                continue
            now = time.time()
            tally.frames += 1
            self.frame_came.set()
            found = marker(message.data)
            if found is not None:
                if found.n in seen:
                    tally.duplicates += 1
                    continue
                seen.add(found.n)
                tally.received[found.n] += 1
                if found.phase == "m":
                    tally.latencies.append(now - found.sent_ns / 1e9)
            elif '"reload"' in message.data:
                tally.reloads += 1
        if not self.stopping:  # the server closed it: an event it would have had is lost
            tally.close_codes[ws.close_code or 0] += 1

    async def quiet(self, limit: float) -> None:
        """Until no frame came for a second (at most ``limit`` seconds): the last events of
        the run are still on their way when the crowd is told to stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                while True:
                    self.frame_came.clear()
                    try:
                        await asyncio.wait_for(self.frame_came.wait(), 1.0)
                    except TimeoutError:
                        return

    async def run(self) -> dict[str, Any]:
        args = self.args
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            began = time.perf_counter()
            clients: list[aiohttp.ClientWebSocketResponse] = []
            readers: list[asyncio.Task[None]] = []
            for first in range(0, args.clients, CONNECT_BATCH):
                batch = range(first, min(first + CONNECT_BATCH, args.clients))
                joined = await asyncio.gather(
                    *(connect(session, args.url, self.token) for _ in batch)
                )
                clients += joined
                # Reading at once: the server's pings are answered while the others connect.
                readers += [asyncio.create_task(self.read(ws)) for ws in joined]
            connect_s = time.perf_counter() - began
            await asyncio.to_thread(Path(args.ready).touch)
            await stop.wait()
            await self.quiet(args.quiet_max)
            self.stopping = True
            await asyncio.gather(*(ws.close() for ws in clients), return_exceptions=True)
            await asyncio.wait(readers, timeout=10)
        tally = self.tally
        return {
            "clients": len(clients),
            "connect_s": round(connect_s, 2),
            "received": {str(n): count for n, count in sorted(tally.received.items())},
            "latency_ms": summary(tally.latencies),
            "frames": tally.frames,
            "reloads": tally.reloads,
            "duplicates": tally.duplicates,
            "closed_by_server": dict(tally.close_codes),
        }


# --- the measuring client ---------------------------------------------------------------------


def bare_frame(label: str) -> bytes:
    """An event frame the size and shape of inbox-api's ``conversation.updated``."""
    now = datetime.now(UTC).isoformat()
    conversation = {
        "id": str(ObjectId()),
        "channel_id": str(ObjectId()),
        "contact": {"wa_id": "447700000001", "user_id": None, "username": None, "name": "Bench"},
        "status": "open",
        "assignee": None,
        "labels": ["bench", label],
        "unread_count": 1,
        "last_message_at": now,
        "last_message_preview": "Hello, where is my order?",
        "last_inbound_at": now,
    }
    event = {
        "id": str(ObjectId()),
        "type": "conversation.updated",
        "tenant": "bench",
        "at": now,
        "data": conversation,
    }
    return orjson.dumps({"type": "event", "event": event})


@dataclass
class Changes:
    sent_at: dict[int, float] = field(default_factory=dict)
    measured: set[int] = field(default_factory=set)
    ok: set[int] = field(default_factory=set)
    received: dict[int, float] = field(default_factory=dict)
    request_latencies: list[float] = field(default_factory=list)
    until_published: list[float] = field(default_factory=list)
    after_published: list[float] = field(default_factory=list)
    failed: int = 0
    first_failure: str = ""


class Measure(OpenLoop):
    def __init__(self, args: argparse.Namespace, token: str) -> None:
        super().__init__(args)
        self.token = token
        self.changes = Changes()
        self.draining = False
        self.all_received = asyncio.Event()

    async def listen(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        changes = self.changes
        async for message in ws:
            if message.type is not WSMsgType.TEXT:
                continue
            now, wall = time.perf_counter(), time.time()
            found = marker(message.data)
            if found is None or found.n not in changes.sent_at or found.n in changes.received:
                continue
            changes.received[found.n] = now - changes.sent_at[found.n]
            if found.phase == "m" and self.args.target == "inbox":
                # The replica's clock and ours are this machine's: split the latency there.
                published = datetime.fromisoformat(found.published_at).timestamp()
                changes.until_published.append(published - found.sent_ns / 1e9)
                changes.after_published.append(wall - published)
            self.check_drained()

    def check_drained(self) -> None:
        if self.draining and self.changes.ok <= self.changes.received.keys():
            self.all_received.set()

    async def send(self, session: aiohttp.ClientSession, n: int) -> None:
        """Change ``n``: a conversation's labels on A, or an event frame to the bare server."""
        args, changes = self.args, self.changes
        label = f"{'m' if self.measuring else 'w'}{n}-{time.time_ns()}"
        if self.measuring:
            changes.measured.add(n)
        began = changes.sent_at[n] = time.perf_counter()
        try:
            if args.target == "inbox":
                conversation = args.conversation[n % len(args.conversation)]
                url = f"{args.change_base}/api/conversations/{conversation}/labels"
                request = session.put(url, json={"labels": ["bench", label]})
            else:
                request = session.post(f"{args.change_base}/publish", data=bare_frame(label))
            async with request as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            status, reason = 0, type(exc).__name__
        else:
            reason = f"HTTP {status}"
        if status == 200:
            changes.ok.add(n)
        else:
            changes.failed += 1
            changes.first_failure = changes.first_failure or reason
        if self.measuring:
            changes.request_latencies.append(time.perf_counter() - began)

    async def run(self, watch: CpuWatch) -> dict[str, Any]:
        args, changes = self.args, self.changes
        auth = {"Authorization": f"Bearer {self.token}"}
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(headers=auth, timeout=timeout) as session:
            ws = await connect(session, args.ws_url, self.token)
            listener = asyncio.create_task(self.listen(ws))
            duration, cpu = await self.measure(session, watch)
            self.draining = True
            self.check_drained()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_received.wait(), args.drain)
            await ws.close()
            await asyncio.wait([listener], timeout=10)
        measured = [changes.received[n] for n in sorted(changes.measured) if n in changes.received]
        return {
            "target": args.target,
            "duration_s": duration,
            "sent": len(changes.measured),
            "sent_rate": len(changes.measured) / duration if duration else 0.0,
            "failed": changes.failed,
            "first_failure": changes.first_failure,
            "dropped_client_backlog": self.dropped_warmup + self.dropped,
            "changes_ok": sorted(changes.ok),
            "missed": len(changes.ok - changes.received.keys()),
            "latency_ms": summary(measured),
            "request_latency_ms": summary(changes.request_latencies),
            "until_published_ms": summary(changes.until_published),
            "after_published_ms": summary(changes.after_published),
            "cpu_cores": cpu,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", choices=("crowd", "measure"))
    parser.add_argument("--url", help="crowd: the WebSocket URL")
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--ready", help="crowd: a file to create once every client is ready")
    parser.add_argument("--out", help="crowd: where to write the tally (JSON)")
    parser.add_argument("--quiet-max", type=float, default=10.0)
    parser.add_argument("--target", choices=("inbox", "bare"), default="inbox")
    parser.add_argument("--change-base", help="measure: inbox-api A's, or the bare server's URL")
    parser.add_argument("--ws-url", help="measure: the WebSocket URL of B (or the bare server)")
    parser.add_argument("--conversation", action="append", default=[])
    parser.add_argument("--rate", type=float, default=20.0, help="changes a second")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--drain", type=float, default=10.0)
    args = parse_pinned(parser)
    # The token by environment, not argv (which any local user can read in /proc).
    token = os.environ.get("BENCH_API_TOKEN", "bench")
    if args.role == "crowd":
        tally = uvloop.run(Crowd(args, token).run())
        Path(args.out).write_text(json.dumps(tally))
        return
    watch = CpuWatch.of_self("measuring client", args.watch)
    result = uvloop.run(Measure(args, token).run(watch))
    print_result(result)


if __name__ == "__main__":
    main()
