"""What an agent does through the REST API in tests: wait for a customer's message, reply,
and watch a message reach a state. Works with inbox-api on a TestServer or as a process."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient

from inbox_common.store.client import Document
from inbox_testkit.polling import wait_until
from inbox_testkit.sandbox import Sandbox
from inbox_testkit.tenants import bearer

# inbox-api on a TestServer, or a session with the base URL of inbox-api as a process.
Http = TestClient[web.Request, web.Application] | aiohttp.ClientSession


async def writes_in(
    api: Http, cloud: Sandbox, token: str, phone_number_id: str, customer: str, text: str
) -> str:
    """``customer`` writes ``text`` to the number through the sandbox; returns the id of the
    conversation once inbox-api shows the message (read with ``token``)."""
    wamid = await cloud.inbound(phone_number_id, customer, text, name="Budi")
    found: list[str] = []

    async def arrived() -> bool:
        answer = await api.get(f"/api/conversations?wa_id={customer}", headers=bearer(token))
        items = (await answer.json())["items"]
        if not items:
            return False
        messages = await api.get(
            f"/api/conversations/{items[0]['id']}/messages", headers=bearer(token)
        )
        if wamid in [m["wamid"] for m in (await messages.json())["items"]]:
            found.append(items[0]["id"])
            return True
        return False

    await wait_until(arrived, f"the customer's message {wamid} in the inbox", timeout=15)
    return found[0]


async def reply(
    api: Http, token: str, conversation: str, body: dict[str, Any], key: str | None = None
) -> tuple[int, dict[str, Any]]:
    headers = bearer(token) | ({"Idempotency-Key": key} if key else {})
    answer = await api.post(
        f"/api/conversations/{conversation}/messages", json=body, headers=headers
    )
    return answer.status, await answer.json()


async def message_of(api: Http, token: str, conversation: str, message_id: str) -> Document:
    answer = await api.get(f"/api/conversations/{conversation}/messages", headers=bearer(token))
    for item in (await answer.json())["items"]:
        if item["id"] == message_id:
            return dict(item)
    raise AssertionError(f"message {message_id} is not listed in {conversation}")


async def reaches(
    api: Http, token: str, conversation: str, message_id: str, **wanted: Any
) -> Document:
    """Wait until the message, as REST shows it, has the ``wanted`` fields."""
    seen: list[Document] = []

    async def there() -> bool:
        seen[:] = [await message_of(api, token, conversation, message_id)]
        return all(seen[0].get(k) == v for k, v in wanted.items())

    try:
        await wait_until(there, f"message {message_id} to have {wanted}", timeout=15)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; it is {seen[0] if seen else 'not listed'}") from None
    return seen[0]


async def healthy(api: Http, timeout: float = 15.0) -> None:  # noqa: ASYNC109
    """Wait until inbox-api answers its health ``ok``: broker connected, topology declared,
    consumers attached (a request before that may get a 503)."""
    last: list[Any] = []

    async def ok() -> bool:
        answer = await api.get("/api/health")
        last[:] = [await answer.json()]
        return bool(answer.status == 200 and last[0].get("status") == "ok")

    try:
        await wait_until(ok, "inbox-api to be healthy", timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; its health: {last[0] if last else 'no answer'}") from None
