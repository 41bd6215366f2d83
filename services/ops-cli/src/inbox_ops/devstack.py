"""``inbox-ops dev``: the whole platform on this machine, logs in one terminal.

Uses ``MONGODB_URL`` and ``RABBITMQ_URL`` when set; otherwise starts SecantusDB (a
MongoDB-wire server) with its data under the state directory and uses the local RabbitMQ.
Secrets and an admin token are generated once and kept in the state directory, so a restart
keeps working with the same curl commands.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import orjson

from inbox_common.local.ports import tcp_accepts
from inbox_common.local.processes import ServiceProcess, print_line, wait_http
from inbox_common.local.secantus import SecantusServer
from inbox_common.settings import redact_url
from inbox_common.store.client import create_client
from inbox_common.store.migrations import apply_migrations
from inbox_common.store.token_cipher import TokenCipher
from inbox_common.tokens import Role, create_token, find_token
from inbox_common.whatsapp import signature

DEV_TENANT = "dev"
DEV_PHONE_NUMBER_ID = "100000000000001"
DEV_DISPLAY_NUMBER = "+1 555 010 0001"
# The token the sandbox's default number accepts (SANDBOX_NUMBERS): a local stand-in.
DEV_SANDBOX_TOKEN = "dev-sandbox-token"  # noqa: S105
DEV_CUSTOMER = "15551234567"


def _random_secret() -> str:
    return secrets.token_urlsafe(24)


def _port_free(port: int) -> bool:
    return not tcp_accepts("127.0.0.1", port)


def _tcp_reachable(url: str) -> bool:
    parts = urlsplit(url)
    return tcp_accepts(parts.hostname or "127.0.0.1", parts.port or 5672, timeout=2)


class DevStack:
    def __init__(self, state_dir: Path) -> None:
        self.state = state_dir
        self.env = dict(os.environ)
        self.children: list[ServiceProcess] = []
        self.mongo: SecantusServer | None = None

    def _persistent_secret(
        self, variable: str, filename: str, make: Callable[[], str] = _random_secret
    ) -> None:
        if self.env.get(variable):
            return
        path = self.state / filename
        if not path.exists():
            path.write_text(make())
            path.chmod(0o600)
        self.env[variable] = path.read_text().strip()

    def configure(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        env = self.env
        env.setdefault("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
        env.setdefault("MONGODB_DB", "inbox")
        env.setdefault("AMQP_NAMESPACE", "wa")
        env.setdefault("LOG_FORMAT", "console")
        env.setdefault("WEBHOOK_INGEST_PORT", "8080")
        env.setdefault("INBOX_API_PORT", "8081")
        env.setdefault("WHATSAPP_SANDBOX_PORT", "8090")
        env.setdefault("RETRY_WORKER_PORT", "8082")
        env.setdefault("MAINTENANCE_PORT", "8083")
        env.setdefault("PYTHONUNBUFFERED", "1")
        self._persistent_secret("WHATSAPP_WEBHOOK_SECRET", "webhook-secret")
        self._persistent_secret("WHATSAPP_WEBHOOK_VERIFY_TOKEN", "verify-token")
        self._persistent_secret("CHANNEL_TOKEN_KEYS", "channel-token-key", TokenCipher.new_key)
        self._persistent_secret("JOBS_API_TOKEN", "jobs-api-token")
        # The sandbox stands in for Meta: inbox-api sends to it, it posts webhooks to ingest.
        sandbox = f"http://127.0.0.1:{env['WHATSAPP_SANDBOX_PORT']}"
        env.setdefault("WHATSAPP_API_BASE_URL", sandbox)
        env.setdefault(
            "SANDBOX_WEBHOOK_URL",
            f"http://127.0.0.1:{env['WEBHOOK_INGEST_PORT']}/webhooks/whatsapp",
        )
        ports = (
            "WEBHOOK_INGEST_PORT",
            "INBOX_API_PORT",
            "WHATSAPP_SANDBOX_PORT",
            "RETRY_WORKER_PORT",
            "MAINTENANCE_PORT",
        )
        for variable in ports:
            if not _port_free(int(env[variable])):
                raise SystemExit(
                    f"port {env[variable]} ({variable}) is in use; stop what holds it or set "
                    f"{variable}=<another port>"
                )
        if not _tcp_reachable(env["RABBITMQ_URL"]):
            raise SystemExit(
                f"RabbitMQ at {redact_url(env['RABBITMQ_URL'])} is not reachable; run "
                "scripts/ensure-rabbitmq.sh (make run does) or set RABBITMQ_URL"
            )

    async def start_store(self) -> None:
        if self.env.get("MONGODB_URL"):
            return
        self.mongo = SecantusServer(
            self.state,
            port=27017 if _port_free(27017) else None,
            data_dir=self.state / "mongo-data",
        )
        try:
            await self.mongo.start_and_wait(timeout=30)
        except (RuntimeError, TimeoutError) as exc:
            raise SystemExit(f"SecantusDB did not start: {exc}") from None
        print_line("secantusdb", f"listening on port {self.mongo.port}; log {self.mongo.log_path}")
        self.env["MONGODB_URL"] = self.mongo.url

    async def prepare_store(self) -> str:
        """Apply the migrations; return an admin token (kept in the state directory)."""
        client = create_client(self.env["MONGODB_URL"], app_name="inbox-ops-dev")
        db = client[self.env["MONGODB_DB"]]
        try:
            for migration in await apply_migrations(db):
                print_line("inbox-ops", f"applied migration {migration.version}: {migration.name}")
            path = self.state / "admin-token"
            token = path.read_text().strip() if path.exists() else ""
            if not token or await find_token(db, token) is None:
                token = await create_token(db, role=Role.ADMIN, tenant=DEV_TENANT, name="dev")
                path.write_text(token)
                path.chmod(0o600)
            return token
        finally:
            await client.close()

    async def start_services(self) -> None:
        services = [
            ("webhook-ingest", "inbox_ingest", "WEBHOOK_INGEST_PORT"),
            ("inbox-api", "inbox_api", "INBOX_API_PORT"),
            ("whatsapp-sandbox", "inbox_sandbox", "WHATSAPP_SANDBOX_PORT"),
            ("retry-worker", "inbox_retry", "RETRY_WORKER_PORT"),
            ("maintenance", "inbox_maintenance", "MAINTENANCE_PORT"),
        ]
        for name, module, port_variable in services:
            child = ServiceProcess(name, [sys.executable, "-m", module], env=self.env)
            await child.start()
            self.children.append(child)
            url = f"http://127.0.0.1:{self.env[port_variable]}/api/health"
            await wait_http(url, timeout=60, process=child)

    async def seed_channel(self, token: str) -> None:
        body = {
            "name": "Dev number",
            "phone_number_id": DEV_PHONE_NUMBER_ID,
            "waba_id": "100000000000009",
            "display_phone_number": DEV_DISPLAY_NUMBER,
            "access_token": DEV_SANDBOX_TOKEN,
        }
        url = f"http://127.0.0.1:{self.env['INBOX_API_PORT']}/api/channels"
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as resp,
        ):
            if resp.status not in (201, 409):
                raise SystemExit(f"could not create the dev channel: {await resp.text()}")

    def write_sample(self) -> tuple[Path, str]:
        from inbox_sandbox import payloads  # a dev tool: not installed with the ops command

        payload = payloads.text_webhook(
            DEV_PHONE_NUMBER_ID, "15551234567", "Dev Customer", "Hello from the sample webhook"
        )
        body = orjson.dumps(payload)
        path = self.state / "sample-webhook.json"
        path.write_bytes(body)
        secret = self.env["WHATSAPP_WEBHOOK_SECRET"].split(",")[0].strip().encode()
        return path, signature.sign(secret, body)

    def summary(self, token: str) -> str:
        ingest = f"http://127.0.0.1:{self.env['WEBHOOK_INGEST_PORT']}"
        api = f"http://127.0.0.1:{self.env['INBOX_API_PORT']}"
        sandbox = f"http://127.0.0.1:{self.env['WHATSAPP_SANDBOX_PORT']}"
        retry = f"http://127.0.0.1:{self.env['RETRY_WORKER_PORT']}"
        maintenance = f"http://127.0.0.1:{self.env['MAINTENANCE_PORT']}"
        jobs_token = self.env["JOBS_API_TOKEN"]
        sample, header = self.write_sample()
        auth = shlex.quote(f"Authorization: Bearer {token}")
        signed = shlex.quote(f"{signature.SIGNATURE_HEADER}: {header}")
        json_header = "-H 'Content-Type: application/json'"
        inbound = orjson.dumps(
            {
                "phone_number_id": DEV_PHONE_NUMBER_ID,
                "from": DEV_CUSTOMER,
                "name": "Dev Customer",
                "type": "text",
                "text": {"body": "Hi! Is my order on its way?"},
            }
        ).decode()
        first_id = 'python3 -c \'import json,sys; print(json.load(sys.stdin)["items"][0]["id"])\''
        return "\n".join(
            [
                "",
                "The WhatsApp inbox is up. Ctrl-C stops everything.",
                f"  webhook-ingest    {ingest}/webhooks/whatsapp   (health {ingest}/api/health)",
                f"  inbox-api         {api}/api/conversations   (API docs {api}/api/docs)",
                f"  whatsapp-sandbox  {sandbox}   (the Cloud API stand-in; sends: "
                f"{sandbox}/sandbox/sent)",
                f"  retry-worker      {retry}/api/jobs/campaign-retry?token={jobs_token}",
                f"  maintenance       {maintenance}/api/health   (scheduled tasks; run them now "
                "with inbox-ops maintenance run)",
                f"  MongoDB           {redact_url(self.env['MONGODB_URL'])} "
                f"db={self.env['MONGODB_DB']}",
                f"  RabbitMQ          {redact_url(self.env['RABBITMQ_URL'])} "
                f"namespace={self.env['AMQP_NAMESPACE']}",
                f"  admin token       {token}   (tenant {DEV_TENANT!r}; kept in {self.state}/)",
                f"  dev channel       phone_number_id {DEV_PHONE_NUMBER_ID} (on the sandbox)",
                "",
                "The whole loop:",
                "  1. a customer writes (the sandbox posts Meta's signed webhook to the ingest):",
                f"     curl -sS -X POST {sandbox}/sandbox/inbound {json_header} "
                f"-d {shlex.quote(inbound)}",
                "  2. the agent finds the conversation:",
                f"     CONV=$(curl -sS '{api}/api/conversations?wa_id={DEV_CUSTOMER}' -H {auth} "
                f"| {first_id})",
                "  3. and replies:",
                f"     curl -sS -X POST {api}/api/conversations/$CONV/messages -H {auth} "
                f"{json_header} -H 'Idempotency-Key: reply-1' "
                """-d '{"type":"text","text":{"body":"Yes, it ships today!"}}'""",
                "  4. the reply's status goes sent -> delivered -> read within a second:",
                f"     curl -sS {api}/api/conversations/$CONV/messages -H {auth}",
                "",
                "Or post a signed sample webhook to the ingest yourself:",
                f"  curl -sS -X POST {ingest}/webhooks/whatsapp {json_header} -H {signed} "
                f"--data-binary @{sample}",
                "",
            ]
        )

    async def stop(self) -> None:
        # Ingest first (stop taking events), then the consumers, then the store.
        for child in self.children:
            await child.stop()
        if self.mongo is not None:
            await self.mongo.stop_async()


async def _run(state_dir: Path) -> int:
    stack = DevStack(state_dir)
    stack.configure()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await stack.start_store()
        token = await stack.prepare_store()
        await stack.start_services()
        await stack.seed_channel(token)
        sys.stdout.write(stack.summary(token) + "\n")
        sys.stdout.flush()
        exits = [asyncio.create_task(c.wait()) for c in stack.children]
        stop_task = asyncio.create_task(stopping.wait())
        done, _ = await asyncio.wait([stop_task, *exits], return_when=asyncio.FIRST_COMPLETED)
        stop_task.cancel()
        for task in exits:
            task.cancel()
        if stop_task in done:
            print_line("inbox-ops", "stopping")
            return 0
        crashed = [c.name for c in stack.children if not c.running]
        print_line("inbox-ops", f"{', '.join(crashed)} exited; stopping everything")
        return 1
    finally:
        await stack.stop()


def run_dev_stack(state_dir: str) -> int:
    try:
        return asyncio.run(_run(Path(state_dir).resolve()))
    except (SystemExit, TimeoutError, RuntimeError) as exc:
        if isinstance(exc, SystemExit) and not isinstance(exc.code, str):
            raise
        print(f"inbox-ops dev: {exc}", file=sys.stderr)
        return 1
