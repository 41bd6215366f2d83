"""The whatsapp-sandbox as a real process for tests: started on a free port, posting its
signed webhooks to a given ingest, and driven through its admin API (customers write,
faults are injected, the ledger of accepted sends and the read receipts are read)."""

from __future__ import annotations

import os
import sys
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from inbox_common.local.ports import free_port
from inbox_common.local.processes import ServiceProcess, wait_http

# The app secret the sandbox signs with and the ingest of the tests verifies.
SECRET = "sandbox-app-secret"


def sandbox_number(phone_number_id: str, token: str) -> str:
    """One ``SANDBOX_NUMBERS`` entry: a business number and the token it accepts."""
    return f"{phone_number_id}:{token}:{phone_number_id[-6:]}:+1 555 000 {phone_number_id[-4:]}"


class Sandbox:
    def __init__(self, url: str, process: ServiceProcess) -> None:
        self.url = url
        self.process = process
        self._session = aiohttp.ClientSession(raise_for_status=True)

    async def close(self) -> None:
        await self._session.close()

    async def inbound(self, phone_number_id: str, sender: str, text: str, **extra: Any) -> str:
        """A customer writes a text to a number; returns the message's wamid."""
        body = {
            "phone_number_id": phone_number_id,
            "from": sender,
            "type": "text",
            "text": {"body": text},
            **extra,
        }
        async with self._session.post(f"{self.url}/sandbox/inbound", json=body) as response:
            return str((await response.json())["wamid"])

    async def sent(self, **query: str) -> list[dict[str, Any]]:
        """The accepted sends, oldest first (the ground truth of what "Meta" received)."""
        async with self._session.get(f"{self.url}/sandbox/sent", params=query) as response:
            return list((await response.json())["items"])

    async def read_receipts(self, **query: str) -> list[dict[str, Any]]:
        """The read receipts "Meta" answered, oldest first (``phone_number_id=`` to filter)."""
        async with self._session.get(f"{self.url}/sandbox/read-receipts", params=query) as response:
            return list((await response.json())["items"])

    async def fail_next(self, code: int | str, count: int = 1) -> None:
        body = {"code": code, "count": count}
        async with self._session.post(f"{self.url}/sandbox/faults", json=body):
            pass


@asynccontextmanager
async def run_sandbox(
    webhook_url: str, numbers: list[str], **settings: str
) -> AsyncIterator[Sandbox]:
    """The sandbox as a process (``SANDBOX_*`` settings given by keyword, lower case)."""
    port = free_port()
    env = {
        **os.environ,
        "WHATSAPP_SANDBOX_PORT": str(port),
        "SANDBOX_WEBHOOK_URL": webhook_url,
        "WHATSAPP_WEBHOOK_SECRET": SECRET,
        "SANDBOX_NUMBERS": ",".join(numbers),
        "HTTP_HOST": "127.0.0.1",
        "LOG_FORMAT": "console",
        **{name.upper(): value for name, value in settings.items()},
    }
    output: deque[str] = deque(maxlen=20)
    process = ServiceProcess(
        "sandbox",
        [sys.executable, "-m", "inbox_sandbox"],
        env=env,
        sink=lambda _name, line: output.append(line),
    )
    await process.start()
    url = f"http://127.0.0.1:{port}"
    sandbox = Sandbox(url, process)
    try:
        try:
            await wait_http(f"{url}/livez", timeout=30, process=process)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}; its last lines:\n" + "\n".join(output)) from None
        yield sandbox
    finally:
        await sandbox.close()
        await process.stop(timeout=5)
