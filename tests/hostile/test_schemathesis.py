"""Schemathesis over inbox-api's own OpenAPI document, against the app on a real port.

The app runs in the test's event loop (``web.AppRunner`` + ``TCPSite``) over the real store
and broker; schemathesis is synchronous (``requests``), so it runs in a worker thread while
the loop serves it. The store holds data for every operation to find: conversations whose
messages carry hostile content, and ledger entries; besides random ids, every ``{id}``
operation is also fuzzed with the id of a real document, so that its query parameters
(cursor, limit) meet real pages.

Checked on every response: no 5xx; status, content type and body as documented; every error
in the one JSON shape ``{"error": {"code", "message", "details"?}}``. Inputs that the
generator does not reach but that once answered 500 are pinned by the tests at the end.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, CheckContext, CheckFunction, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from yarl import URL

from inbox_api.app import create_app
from inbox_api.consumer.service import Outcome, WebhookProcessor
from inbox_api.settings import InboxApiSettings
from inbox_common.alerts import AlertKind, Alerts
from inbox_common.broker.topology import Names
from inbox_common.http import ServiceRunner
from inbox_common.local.ports import free_port
from inbox_common.store.client import Database, Document
from inbox_common.store.schema import CONVERSATIONS, WEBHOOK_EVENTS
from inbox_common.tokens import Role, create_token
from inbox_sandbox import payloads
from inbox_sandbox.app import create_app as create_sandbox
from inbox_sandbox.settings import SandboxSettings
from inbox_testkit.sandbox import sandbox_number
from inbox_testkit.tenants import ACME_NUMBER, UNKNOWN_NUMBER
from inbox_testkit.webhooks import delivery_of

pytestmark = [pytest.mark.integration, pytest.mark.hostile]

WA = "491701234567"
# (role, generation mode, examples per operation): the same cases on every run (derandomized;
# new cases come with every change of the API description), bounded for the suite's time.
RUNS = [
    ("superadmin", GenerationMode.POSITIVE, 10),
    ("superadmin", GenerationMode.NEGATIVE, 10),
    ("agent", GenerationMode.POSITIVE, 5),
]


@dataclass(frozen=True)
class Served:
    base_url: str
    tokens: dict[str, str]
    ids: dict[str, str]  # an existing document's id per path with an {id}


def _hostile_webhooks() -> list[dict[str, Any]]:
    """Webhooks whose content the REST API must render: $-keys, dots, NUL, unicode, long
    text, unknown types, a reaction and a status; some conversations to page through."""
    first = payloads.new_wamid()
    return [
        payloads.text_webhook(ACME_NUMBER, WA, "Ann $where", "hi", wamid=first, timestamp=10),
        payloads.webhook(
            ACME_NUMBER,
            contacts=[payloads.contact(WA, "Ann")],
            messages=[
                payloads.message(
                    "image",
                    WA,
                    payloads.new_wamid(),
                    {"id": "1", "$where": "1", "a.b": {"$gt": ""}, "caption": "ẋ" * 5000},
                    timestamp=20,
                ),
                payloads.message("ephemeral", WA, payloads.new_wamid(), None, timestamp=30),
                payloads.message("$unknown", WA, payloads.new_wamid(), [1, "x"], timestamp=40),
                payloads.reaction_message(WA, payloads.new_wamid(), first, "👍", timestamp=50),
                payloads.text_message(WA, payloads.new_wamid(), "\u202e\x00😀", timestamp=60),
            ],
            statuses=[payloads.status(first, "failed", WA, timestamp=70)],
        ),
        *(
            payloads.text_webhook(ACME_NUMBER, f"4917000000{i:02d}", f"User {i}", "x", timestamp=i)
            for i in range(5)
        ),
        payloads.text_webhook(UNKNOWN_NUMBER, WA, "Bob", "to nobody", timestamp=80),
    ]


@pytest.fixture
async def served(
    db: Database,
    channel: Document,
    processor: WebhookProcessor,
    names: Names,
    amqp_url: str,
    mongo_url: str,
    mongo_db_name: str,
) -> AsyncIterator[Served]:
    """inbox-api on 127.0.0.1:<free port> over a store seeded with hostile content."""
    for body in _hostile_webhooks():
        assert await processor.process(delivery_of(body)) in {Outcome.PROCESSED, Outcome.FAILED}
    assert await processor.process(delivery_of(b"\xff not json")) is Outcome.FAILED
    conversation = await db[CONVERSATIONS].find_one({"wa_id": WA})
    event = await db[WEBHOOK_EVENTS].find_one({})
    assert conversation is not None
    assert event is not None
    # An alert of acme's for the alert routes, and a platform-wide one (no tenant) listed too.
    alert = await Alerts(db).raise_alert(
        AlertKind.CHANNEL_DISCONNECTED,
        title=f"channel {ACME_NUMBER} was disconnected",
        subject=str(channel["_id"]),
        tenant="acme",
        evidence={"phone_number_id": ACME_NUMBER, "code": 190},
    )
    await Alerts(db).raise_alert(AlertKind.STORE_UNREACHABLE, title="the store is unreachable")
    tokens = {
        role.value: await create_token(db, role=role, tenant="acme")
        for role in (Role.AGENT, Role.ADMIN, Role.SUPERADMIN)
    }
    # The sandbox stands in for Meta: a reconnect's token check and the sends reach it.
    cloud = TestServer(
        create_sandbox(
            SandboxSettings.model_validate(
                {
                    "whatsapp_webhook_secret": "schemathesis",
                    "sandbox_webhook_url": f"http://127.0.0.1:{free_port()}/nowhere",
                    "sandbox_numbers": sandbox_number(
                        channel["phone_number_id"], f"EAAG-secret-{channel['phone_number_id']}"
                    ),
                    "log_format": "console",
                }
            )
        )
    )
    async with contextlib.AsyncExitStack() as stack:
        # Whatever fails on the way up, what was started is stopped.
        await cloud.start_server()
        stack.push_async_callback(cloud.close)
        settings = InboxApiSettings(
            whatsapp_api_base_url=str(cloud.make_url("")).rstrip("/"),
            rabbitmq_url=amqp_url,
            amqp_namespace=names.namespace,
            mongodb_url=mongo_url,
            mongodb_db=mongo_db_name,
            mongodb_timeout_ms=3000,
            log_format="console",
        )
        # Idle keep-alive connections of the fuzzer must not hold the shutdown for long.
        runner = ServiceRunner(create_app(settings), shutdown_timeout=1.0)
        stack.push_async_callback(runner.cleanup)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        # Real ids for the routes that take one (a token's is left out: revoking the fuzzer's
        # own tokens would end the run).
        ids = {
            path: str(conversation["_id"])
            for path in (
                "/api/conversations/{id}",
                "/api/conversations/{id}/messages",
                "/api/conversations/{id}/assign",
                "/api/conversations/{id}/close",
                "/api/conversations/{id}/reopen",
                "/api/conversations/{id}/read",
                "/api/conversations/{id}/labels",
                "/api/conversations/{id}/notes",
            )
        }
        ids["/api/admin/webhook-logs/{id}"] = str(event["_id"])
        ids["/api/channels/{id}/reconnect"] = str(channel["_id"])
        ids["/api/admin/alerts/{id}"] = str(alert["_id"])
        ids["/api/admin/alerts/{id}/ack"] = str(alert["_id"])
        ids["/api/admin/alerts/{id}/resolve"] = str(alert["_id"])
        yield Served(f"http://127.0.0.1:{port}", tokens, ids)


def error_shape(ctx: CheckContext, response: schemathesis.Response, case: Case[Any]) -> bool | None:
    """Every 4xx/5xx body is {"error": {"code": str, "message": str, "details"?: any}}."""
    if response.status_code < 400:
        return None
    body = orjson.loads(response.content)
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict), body
    assert set(error) <= {"code", "message", "details"}, error
    assert isinstance(error.get("code"), str), error
    assert error["code"], error
    assert isinstance(error.get("message"), str), error
    assert error["message"], error
    return None


CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    error_shape,
]


def fuzz(served: Served, role: str, mode: GenerationMode, examples: int) -> list[str]:
    """Run every operation (with random ids, then with real ones); a line per failing case."""
    schema = schemathesis.openapi.from_url(f"{served.base_url}/api/openapi.json", timeout=10)
    headers = {"Authorization": f"Bearer {served.tokens[role]}"}
    failures: list[str] = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise AssertionError(f"/api/openapi.json has an invalid operation: {result.err()}")
        operation = result.ok()
        strategies = [operation.as_strategy(generation_mode=mode)]
        if real_id := served.ids.get(operation.path):
            path_parameters = {"id": real_id}
            strategies.append(
                operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
            )
        for strategy in strategies:

            @settings(
                max_examples=examples,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                phases=[Phase.explicit, Phase.generate],
                database=None,
                # The same cases on every run of a commit: a red run is reproducible, never
                # luck (new cases come with every change of the API description).
                derandomize=True,
            )
            @given(case=strategy)
            def run(case: Case[Any]) -> None:
                try:
                    case.call_and_validate(headers=headers, checks=CHECKS, timeout=10)
                except AssertionError as exc:  # schemathesis' FailureGroup is one too
                    failures.append(f"{role} {mode.value} {case.operation.label}: {exc}")

            try:
                run()
            except Unsatisfiable:
                # Negative mode on an operation with nothing to break (no parameter, no body).
                assert mode is GenerationMode.NEGATIVE, operation.label
    return failures


# schemathesis' negative-mode strategies call the random module themselves; Hypothesis warns
# about that (a deprecation aimed at strategy authors). It says nothing about our API.
@pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)
async def test_every_operation_answers_as_documented(
    served: Served, subtests: pytest.Subtests
) -> None:
    for role, mode, examples in RUNS:
        with subtests.test(f"{role} {mode.value}"):
            failures = await asyncio.to_thread(fuzz, served, role, mode, examples)
            assert not failures, "\n\n".join(failures[:10])


# --- requests that once answered 500, which the generator does not reach -----------------


def _cursor(at: str) -> str:
    raw = orjson.dumps([at, "000000000000000000000000"])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def _get(served: Served, target: str, authorization: bytes) -> tuple[int, bytes]:
    """A raw HTTP/1.1 GET, so that any bytes can go in the target and the header."""
    host, port = served.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            b"GET " + target.encode() + b" HTTP/1.1\r\nHost: inbox\r\n"
            b"Authorization: " + authorization + b"\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def _client_errors(served: Served, targets: list[str], authorization: bytes) -> list[str]:
    """The targets not answered with a 4xx in the JSON error shape, with what they got."""
    wrong = []
    for target in targets:
        status, body = await _get(served, target, authorization)
        if not 400 <= status < 500 or set(orjson.loads(body)) != {"error"}:
            wrong.append(f"GET {target[:80]} -> {status} {body[:200]!r}")
    return wrong


def _bearer(served: Served) -> bytes:
    return f"Bearer {served.tokens['superadmin']}".encode()


def _paged(served: Served) -> list[str]:
    conversation = served.ids["/api/conversations/{id}"]
    return [
        "/api/conversations",
        f"/api/conversations/{conversation}/messages",
        "/api/admin/webhook-logs",
        "/api/admin/alerts",
    ]


async def _raw(served: Served, request: bytes) -> tuple[int, bytes, bytes]:
    host, port = served.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), head, body


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
                     id="oversized-header"),
        pytest.param(b"GET /api/health HTTP/9.9\r\nHost: x\r\n\r\n", id="bad-version"),
        pytest.param(b"G@T /api/health HTTP/1.1\r\nHost: x\r\n\r\n", id="bad-method"),
        pytest.param(b"POST /api/channels HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", id="length-and-chunked"),
        pytest.param(b"GET /api/health HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
                     id="space-in-header-name"),
    ],
)  # fmt: skip
async def test_a_request_the_parser_refuses_gets_the_json_error_shape(
    served: Served, request_bytes: bytes
) -> None:
    status, head, body = await _raw(served, request_bytes)
    assert 400 <= status < 500, (status, body[:200])
    assert b"application/json" in head.lower(), head
    error = orjson.loads(body)["error"]
    assert error["code"] == "bad_http_request"
    assert error["message"].startswith("the request is not valid HTTP")


async def test_a_limit_that_is_not_a_small_integer_is_400(served: Served) -> None:
    limits = ["%C2%B2", "%E2%91%A0", "9" * 5000, "0" * 4400 + "1"]
    targets = [f"{path}?limit={limit}" for path in _paged(served) for limit in limits]
    assert not await _client_errors(served, targets, _bearer(served))


async def test_a_forged_cursor_out_of_range_is_400(served: Served) -> None:
    cursors = [_cursor("0001-01-01T00:00:00+23:59"), _cursor("9999-12-31T23:59:59-23:59")]
    paths = _paged(served)[:2]  # the webhook log's cursor carries no time
    targets = [f"{path}?cursor={cursor}" for path in paths for cursor in cursors]
    assert not await _client_errors(served, targets, _bearer(served))


async def test_a_bearer_token_that_is_not_utf8_is_401(served: Served) -> None:
    status, body = await _get(served, "/api/channels", b"Bearer \xff\xfe")
    assert status == 401, (status, body[:300])
    assert orjson.loads(body)["error"]["code"] == "unauthorized"


async def test_unicode_and_percent_junk_in_filters_and_ids_is_answered_as_documented(
    served: Served,
) -> None:
    """What the generator sends only as valid strings: undecodable escapes, NUL, RTL."""
    conversation = served.ids["/api/conversations/{id}"]
    expected = {
        "/api/conversations?status=%ff": 400,  # open or closed only
        "/api/conversations?wa_id=%ff%fe%00": 200,
        "/api/conversations?status=open&wa_id=%E2%80%AE": 200,
        "/api/conversations?status=a%00b": 400,
        "/api/conversations?q=%ff%00%E2%80%AE&label=%00": 200,
        "/api/conversations?assignee=%ff": 200,
        "/api/conversations?channel_id=%ff": 400,
        "/api/conversations?cursor=%ff%00": 400,
        f"/api/conversations/{conversation}/messages?cursor=%25": 400,
        "/api/conversations/%ff": 404,
        "/api/conversations/%00/messages": 404,
        "/api/admin/webhook-logs?status=%ff": 400,
        "/api/admin/webhook-logs?cursor=%ff": 400,
        "/api/admin/webhook-logs/%ff": 404,
        "/api/admin/alerts?status=%ff": 400,
        "/api/admin/alerts?kind=%00": 400,
        "/api/admin/alerts?severity=P0%00": 400,
        "/api/admin/alerts?cursor=%ff": 400,
        "/api/admin/alerts/%ff": 404,
    }
    async with aiohttp.ClientSession(headers={"Authorization": _bearer(served).decode()}) as http:
        for target, status in expected.items():
            url = URL(served.base_url + target, encoded=True)  # sent as written
            async with http.get(url, allow_redirects=False) as response:
                assert response.status == status, (target, await response.text())
                if status >= 400:
                    assert set(await response.json()) == {"error"}
