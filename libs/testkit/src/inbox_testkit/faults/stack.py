"""The services as black boxes: processes with their output kept, and the store they share.

A :class:`Service` is one ``webhook-ingest``, ``inbox-api`` or ``retry-worker`` process
(``python -m ...``) that a test can kill (-9), stop and start again on the same port; the
last lines of its output go into every failure message. A :class:`Stack` owns a set of
services and stops them all on exit. (A store the test stops and restarts is a
:class:`~inbox_common.local.secantus.SecantusServer`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections import Counter, deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from inbox_common.local.ports import free_port
from inbox_common.local.processes import ServiceProcess, wait_http
from inbox_common.store.channels import Channels
from inbox_common.store.client import create_client
from inbox_common.store.migrations import apply_migrations
from inbox_testkit.store import cipher
from inbox_testkit.tenants import FAULTS_NUMBER

SECRET = "faults-secret"
VERIFY_TOKEN = "faults-verify"
PHONE_NUMBER_ID = FAULTS_NUMBER
TENANT = "faults"
# Short, so a broker or store that does not answer turns into a fast 503 or retry.
PUBLISH_TIMEOUT = 2.0
MONGODB_TIMEOUT_MS = 2000
# A request the restarted store accepted and never answers fails after this and is retried.
MONGODB_SOCKET_TIMEOUT_MS = 10_000

INGEST = "inbox_ingest"
API = "inbox_api"
RETRY = "inbox_retry"
# The variable of each service's port.
PORT_VARIABLES = {INGEST: "WEBHOOK_INGEST_PORT", API: "INBOX_API_PORT", RETRY: "RETRY_WORKER_PORT"}


class Service:
    """One service process; restartable on the same port (see the module docstring)."""

    def __init__(self, name: str, module: str, env: Mapping[str, str]) -> None:
        self.name = name
        self.module = module
        self.port = free_port()
        self.env = {**env, PORT_VARIABLES[module]: str(self.port)}
        self.lines: deque[str] = deque(maxlen=400)
        # Every JSON log line counted by its event (and reason): e.g. how many publishes
        # failed with "nacked", long after the lines themselves scrolled away.
        self.events: Counter[str] = Counter()
        self.exits: list[int | None] = []
        self._child: ServiceProcess | None = None
        # FAULTS_LOG_DIR keeps every line of every service (for CI artifacts, debugging).
        log_dir = os.environ.get("FAULTS_LOG_DIR")
        self._log_file = None
        if log_dir:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            self._log_file = Path(log_dir) / f"{env.get('AMQP_NAMESPACE', 'x')}-{name}.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._child is not None and self._child.running

    def _keep(self, _: str, line: str) -> None:
        self.lines.append(line)
        if line.startswith("{"):
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                record = None
            if isinstance(record, dict):
                reason = record.get("reason")
                key = str(record.get("event", "?"))[:80]
                self.events[f"{key}:{reason}" if isinstance(reason, str) else key] += 1
        elif line.startswith("--- Logging error ---"):
            self.events["logging_error"] += 1
        if self._log_file is not None:
            with self._log_file.open("a") as log:
                log.write(line + "\n")

    async def start(self, *, healthy: bool = True, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Start the process; with ``healthy``, wait until ``/api/health`` answers 200."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.lines.append(f"--- start #{len(self.exits) + 1} ---")
        self._child = ServiceProcess(
            self.name, [sys.executable, "-m", self.module], env=self.env, sink=self._keep
        )
        await self._child.start()
        if healthy:
            await self.wait_healthy(timeout)

    async def wait_healthy(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        try:
            await wait_http(f"{self.base}/api/health", timeout=timeout, process=self._child)
        except (TimeoutError, RuntimeError) as exc:
            raise AssertionError(
                f"{self.name} did not become healthy: {exc}\n{self.tail()}"
            ) from exc

    async def wait_consuming(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Wait until inbox-api's health says its webhook consumer is up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last: Any = None
        while loop.time() < deadline:
            try:
                _, last = await self.get("/api/health")
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = repr(exc)
            if isinstance(last, dict) and _check(last, "webhook_consumer") == "ok":
                return
            await asyncio.sleep(0.2)
        raise AssertionError(
            f"{self.name} was not consuming within {timeout:g} s (health: {last})\n{self.tail()}"
        )

    def kill_now(self, sig: signal.Signals) -> None:
        """Send ``sig`` without waiting (SIGSTOP, SIGCONT)."""
        if self._child is not None:
            self._child.kill(sig)

    async def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` (kill -9 by default) and wait for the process to end."""
        if self._child is None:
            return
        self._child.kill(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.exits.append(await self._child.wait())

    async def stop(self) -> int | None:
        """SIGTERM and wait (SIGKILL after a grace period); returns the exit status."""
        if self._child is None or not self.running:
            return None
        code = await self._child.stop(timeout=15)
        self.exits.append(code)
        return code

    async def get(self, path: str, *, timeout: float = 3.0) -> tuple[int, Any]:  # noqa: ASYNC109
        """GET ``path``; returns (status, parsed JSON or text). Raises on no answer."""
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(f"{self.base}{path}") as response,
        ):
            text = await response.text()
            try:
                return response.status, orjson.loads(text)
            except orjson.JSONDecodeError:
                return response.status, text

    def tail(self, lines: int = 25) -> str:
        kept = list(self.lines)[-lines:]
        return f"--- {self.name} (last {len(kept)} lines) ---\n" + "\n".join(kept)


def _check(health: dict[str, Any], name: str) -> str | None:
    check = health.get("checks", {}).get(name)
    return check.get("status") if isinstance(check, dict) else None


@dataclass
class StackConfig:
    namespace: str
    mongo_db: str
    mongodb_url: str
    rabbitmq_url: str
    # More environment for every service (a test's compressed timings, say).
    env: dict[str, str] = field(default_factory=dict)


class Stack:
    """The services of one test; every one is stopped on :meth:`close`."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.services: list[Service] = []

    def _env(self, rabbitmq_url: str | None, mongodb_url: str | None) -> dict[str, str]:
        return {
            **os.environ,
            "RABBITMQ_URL": rabbitmq_url or self.config.rabbitmq_url,
            "MONGODB_URL": mongodb_url or self.config.mongodb_url,
            "MONGODB_DB": self.config.mongo_db,
            "AMQP_NAMESPACE": self.config.namespace,
            "WHATSAPP_WEBHOOK_SECRET": SECRET,
            "WHATSAPP_WEBHOOK_VERIFY_TOKEN": VERIFY_TOKEN,
            "HTTP_HOST": "127.0.0.1",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            "AMQP_PUBLISH_TIMEOUT": str(PUBLISH_TIMEOUT),
            "MONGODB_TIMEOUT_MS": str(MONGODB_TIMEOUT_MS),
            "MONGODB_SOCKET_TIMEOUT_MS": str(MONGODB_SOCKET_TIMEOUT_MS),
            **self.config.env,
        }

    def ingest(self, *, rabbitmq_url: str | None = None, name: str = "webhook-ingest") -> Service:
        service = Service(name, INGEST, self._env(rabbitmq_url, None))
        self.services.append(service)
        return service

    def api(
        self,
        *,
        rabbitmq_url: str | None = None,
        mongodb_url: str | None = None,
        name: str = "inbox-api",
    ) -> Service:
        service = Service(name, API, self._env(rabbitmq_url, mongodb_url))
        self.services.append(service)
        return service

    def retry_worker(self, *, name: str = "retry-worker", **env: str) -> Service:
        service = Service(name, RETRY, {**self._env(None, None), **env})
        self.services.append(service)
        return service

    async def start(self) -> None:
        """Start every service not running yet and wait until each is healthy."""
        await asyncio.gather(*(s.start() for s in self.services if not s.running))

    def logging_errors(self) -> int:
        """How many log records the services failed to write (``--- Logging error ---``)."""
        return sum(s.events["logging_error"] for s in self.services)

    def tails(self, lines: int = 25) -> str:
        return "\n".join(s.tail(lines) for s in self.services)

    async def close(self) -> dict[str, int | None]:
        """Stop every running service; returns the exit status of each one stopped."""
        running = [s for s in self.services if s.running]
        codes = await asyncio.gather(*(s.stop() for s in running), return_exceptions=True)
        return {
            s.name: code if isinstance(code, int) or code is None else -1
            for s, code in zip(running, codes, strict=True)
        }


@contextlib.asynccontextmanager
async def running_stack(config: StackConfig) -> AsyncIterator[Stack]:
    """A :class:`Stack` whose services are all stopped on exit, whatever happened.

    After a test that passed, every service must also shut down cleanly (exit 0 on
    SIGTERM within the grace period): a service that hangs on its way out after the
    faults is a finding too.
    """
    stack = Stack(config)
    try:
        yield stack
    except BaseException:
        await stack.close()
        raise
    codes = await stack.close()
    unclean = {name: code for name, code in codes.items() if code != 0}
    assert not unclean, f"services did not shut down cleanly: {unclean}\n{stack.tails()}"


async def prepare_store(mongodb_url: str, db_name: str) -> None:
    """Apply the migrations and create the channel every workload posts to."""
    client = create_client(mongodb_url, app_name="faults", timeout_ms=10_000)
    try:
        db = client[db_name]
        await apply_migrations(db)
        await Channels(db, cipher=cipher()).create(
            tenant=TENANT,
            fields={
                "name": "Faults",
                "phone_number_id": PHONE_NUMBER_ID,
                "waba_id": "WABA0001",
                "display_phone_number": "15550001111",
                "access_token": "EAAG-faults",
            },
        )
    finally:
        await client.close()
