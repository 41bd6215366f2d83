"""A large campaign's fan-out: a CSV of N recipients uploaded to a draft, the campaign
started, every message stored and queued, and inbox-api's peak memory through it.

    uv run --group bench python -m inbox_testkit.bench.campaign_fanout --recipients 100000

SecantusDB, webhook-ingest, the whatsapp-sandbox (refusing nothing) and one inbox-api run as
processes on free ports in a fresh broker namespace. Measured: the CSV upload (its rows
checked and stored), the time from the start to the last page queued (``fanout.done``), the
sends the sandbox accepted meanwhile, and inbox-api's peak resident memory (``VmHWM``)
against its memory once healthy, idle: the fan-out must not hold the recipients at once.
Prints one JSON line. A measurement, not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from inbox_common.local.ports import free_port
from inbox_common.local.processes import ServiceProcess, wait_http
from inbox_common.local.secantus import SecantusServer
from inbox_common.store.client import create_client
from inbox_common.store.migrations import apply_migrations
from inbox_common.store.token_cipher import TokenCipher
from inbox_common.tokens import Role, create_token
from inbox_testkit.bench.harness import memory_of
from inbox_testkit.sandbox import SECRET, run_sandbox, sandbox_number
from inbox_testkit.store import create_channel
from inbox_testkit.tenants import bearer

NUMBER = "109876543210077"
TOKEN = f"EAAG-secret-{NUMBER}"
DB = "fanout"


async def csv_lines(count: int) -> AsyncIterator[bytes]:
    yield b"wa_id,name\n"
    for n in range(count):
        yield f"62{n:011d},Customer {n}\n".encode()


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fanout-") as work:
        store = SecantusServer(Path(work))
        store.start()
        store.wait_ready()
        namespace = f"fanout{os.getpid()}"
        base_env = {
            **os.environ,
            "RABBITMQ_URL": args.rabbitmq_url,
            "AMQP_NAMESPACE": namespace,
            "MONGODB_URL": store.url,
            "MONGODB_DB": DB,
            "HTTP_HOST": "127.0.0.1",
            "LOG_LEVEL": "WARNING",
            "WHATSAPP_WEBHOOK_SECRET": SECRET,
            "WHATSAPP_WEBHOOK_VERIFY_TOKEN": "fanout",
        }
        client = create_client(store.url, app_name="bench")
        db = client[DB]
        await apply_migrations(db)
        channel = await create_channel(db, tenant="bench", phone_number_id=NUMBER)
        await db["channels"].update_one(
            {"_id": channel["_id"]}, {"$set": {"messages_per_second": args.rate}}
        )
        admin = await create_token(db, role=Role.ADMIN, tenant="bench")
        ingest_port, api_port = free_port(), free_port()
        ingest = ServiceProcess(
            "webhook-ingest",
            [sys.executable, "-m", "inbox_ingest"],
            env={**base_env, "WEBHOOK_INGEST_PORT": str(ingest_port)},
        )
        await ingest.start()
        api: ServiceProcess | None = None
        try:
            await wait_http(f"http://127.0.0.1:{ingest_port}/livez", timeout=30, process=ingest)
            async with run_sandbox(
                f"http://127.0.0.1:{ingest_port}/webhooks/whatsapp",
                [sandbox_number(NUMBER, TOKEN)],
                sandbox_throughput="1000",
                sandbox_pair_interval_seconds="0.001",
                sandbox_pair_burst="1000",
            ) as cloud:
                api = ServiceProcess(
                    "inbox-api",
                    [sys.executable, "-m", "inbox_api"],
                    env={
                        **base_env,
                        "INBOX_API_PORT": str(api_port),
                        "WHATSAPP_API_BASE_URL": cloud.url,
                    },
                )
                await api.start()
                base = f"http://127.0.0.1:{api_port}"
                await wait_http(f"{base}/api/health", timeout=60, process=api)
                await asyncio.sleep(2)
                assert api.process is not None
                pid = api.process.pid
                idle = memory_of(pid)
                result = await run_campaign(base, admin, str(channel["_id"]), args)
                result["sent_during_fanout"] = await db["messages"].count_documents(
                    {"send_state": "accepted"}
                )
                result["inbox_api_memory_idle"] = idle
                result["inbox_api_memory_after"] = memory_of(pid)
                return result
        finally:
            if api is not None:
                await api.stop(timeout=10)
            await ingest.stop(timeout=10)
            await client.close()
            store.stop()


async def run_campaign(
    base: str, admin: str, channel_id: str, args: argparse.Namespace
) -> dict[str, Any]:
    template = {
        "name": "bench_offer",
        "language": {"code": "en"},
        "components": [{"type": "body", "parameters": [{"type": "text", "text": "{{name}}"}]}],
    }
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(base_url=base, timeout=timeout) as http:
        body = {"name": "fan-out", "channel_id": channel_id, "template": template, "draft": True}
        async with http.post("/api/campaigns", json=body, headers=bearer(admin)) as answer:
            draft = await answer.json()
        started = time.monotonic()
        async with http.post(
            f"/api/campaigns/{draft['id']}/recipients",
            data=csv_lines(args.recipients),
            headers={**bearer(admin), "Content-Type": "text/csv"},
        ) as answer:
            report = await answer.json()
        uploaded = time.monotonic() - started
        print(f"uploaded in {uploaded:.1f}s: {report}", file=sys.stderr)
        async with http.post(
            f"/api/campaigns/{draft['id']}/start", headers=bearer(admin)
        ) as answer:
            assert answer.status == 200, await answer.text()
        started = time.monotonic()
        while True:
            async with http.get(f"/api/campaigns/{draft['id']}", headers=bearer(admin)) as answer:
                campaign = await answer.json()
            if campaign["fanned_out"]:
                break
            print(f"queued {campaign['queued']}", file=sys.stderr)
            await asyncio.sleep(1)
        fanned = time.monotonic() - started
    return {
        "recipients": args.recipients,
        "csv_upload_seconds": round(uploaded, 1),
        "csv_rows_per_second": round(args.recipients / uploaded),
        "accepted": report["accepted"],
        "fanout_seconds": round(fanned, 1),
        "fanout_messages_per_second": round(args.recipients / fanned),
        "funnel": campaign["funnel"]["counts"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=80, help="the number's messages/s")
    parser.add_argument("--rabbitmq-url", default="amqp://guest:guest@127.0.0.1:5672/")
    args = parser.parse_args()
    # SIGTERM (a `timeout`, a CI cancel) unwinds like Ctrl-C, so the store and the services
    # started are stopped too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    # The channel's token is sealed with this key, here and in the services started.
    os.environ.setdefault("CHANNEL_TOKEN_KEYS", TokenCipher.new_key())
    print(orjson.dumps(asyncio.run(measure(args))).decode())


if __name__ == "__main__":
    main()
