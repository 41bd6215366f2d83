"""The Cloud API client against the real whatsapp-sandbox (Meta's request, answer and error
shapes, its faults and its rules), on aiohttp's TestServer.

The sandbox's ledger (``GET /sandbox/sent``) is the ground truth of what was sent; a failed
status webhook is read from a plain endpoint the sandbox posts its webhooks to.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from inbox_common.contracts.webhook import MessageStatus, iter_changes, parse_envelope
from inbox_common.errors import (
    ChannelStoppedError,
    PermanentError,
    ProcessingError,
    TransientError,
)
from inbox_common.local.ports import free_port
from inbox_common.whatsapp import messages
from inbox_common.whatsapp.classify import error_from_status_errors
from inbox_common.whatsapp.cloud_api import (
    CLOUD_API,
    CloudApiClient,
    CloudApiSettings,
    SentContact,
    cloud_api_ctx,
)
from inbox_common.whatsapp.errors import Classification, CloudApiError
from inbox_sandbox.app import create_app
from inbox_sandbox.errors import transient
from inbox_sandbox.settings import SandboxSettings
from inbox_testkit.polling import wait_until

Sandbox = TestClient[web.Request, web.Application]
MakeSandbox = Callable[..., Awaitable[Sandbox]]
MakeClient = Callable[..., Awaitable[CloudApiClient]]

NUMBER = "100000000000001"
TOKEN = "token-one-s3cr3t"
CUSTOMER = "15551234567"
BSUID = "US.13491208655302741918"
CHANNEL = "channel-1"
RETRY = Classification.RETRY
PERMANENT = Classification.PERMANENT
STOP = Classification.STOP_CHANNEL


class Webhooks:
    """Where the sandbox posts its webhooks: every body, answered 200."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        return web.Response(text="ok")

    def statuses(self, wamid: str) -> list[MessageStatus]:
        found: list[MessageStatus] = []
        for body in self.bodies:
            for change in iter_changes(parse_envelope(body)):
                found.extend(status for status in change.statuses if status.id == wamid)
        return found

    async def failed(self, wamid: str) -> MessageStatus:
        """Wait for the ``failed`` status of ``wamid``."""

        async def arrived() -> bool:
            return any(status.status == "failed" for status in self.statuses(wamid))

        await wait_until(arrived, f"the failed status of {wamid}")
        return next(status for status in self.statuses(wamid) if status.status == "failed")


class FlakyFront:
    """A Graph front: the first ``failures`` requests get Graph's transient 503 (the sandbox's
    own body), the rest go through to the sandbox. The sandbox injects faults into sends
    only, and a read is what is retried."""

    def __init__(self, target: str, failures: int) -> None:
        self.target = target.rstrip("/")
        self.failures = failures
        self.requests = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.failures > 0:
            self.failures -= 1
            error = transient(503)
            return web.json_response(error.body, status=error.status)
        headers = {"Authorization": request.headers.get("Authorization", "")}
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method, self.target + request.path_qs, headers=headers
            ) as answer,
        ):
            body = await answer.read()
            return web.Response(status=answer.status, body=body, content_type="application/json")


@pytest.fixture
async def webhooks() -> AsyncIterator[Webhooks]:
    recorder = Webhooks()
    app = web.Application()
    app.router.add_post("/webhooks/whatsapp", recorder.handle)
    server = TestServer(app)
    await server.start_server()
    recorder.url = str(server.make_url("/webhooks/whatsapp"))
    yield recorder
    await server.close()


@pytest.fixture
async def make_sandbox(webhooks: Webhooks) -> AsyncIterator[MakeSandbox]:
    """Sandboxes with settings overridden by keyword; they stop before ``webhooks`` does."""
    started: list[Sandbox] = []

    async def make(**overrides: Any) -> Sandbox:
        settings = SandboxSettings.model_validate(
            {
                "whatsapp_webhook_secret": "sandbox-app-secret",
                "sandbox_webhook_url": webhooks.url,
                "sandbox_numbers": f"{NUMBER}:{TOKEN}:100000000000009:+1 555 010 0001",
                "sandbox_status_delays_ms": "5,10,15",
                "sandbox_webhook_retry_seconds": 1.0,
                "log_format": "console",
                **overrides,
            }
        )
        sandbox: Sandbox = TestClient(TestServer(create_app(settings)))
        await sandbox.start_server()
        started.append(sandbox)
        return sandbox

    yield make
    for sandbox in started:
        await sandbox.close()


@pytest.fixture
async def sandbox(make_sandbox: MakeSandbox) -> Sandbox:
    return await make_sandbox()


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    """Started clients of a base URL, closed at the end."""
    clients: list[CloudApiClient] = []

    async def make(base_url: str, **options: Any) -> CloudApiClient:
        client = CloudApiClient(base_url, api_version="v23.0", **options)
        await client.start()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def cloud(sandbox: Sandbox, make_client: MakeClient) -> CloudApiClient:
    return await make_client(base(sandbox), read_backoff_seconds=0.01)


def base(server: Sandbox | TestServer) -> str:
    return str(server.make_url("/"))


async def ledger(sandbox: Sandbox) -> dict[str, Any]:
    response = await sandbox.get("/sandbox/sent")
    assert response.status == 200
    sent: dict[str, Any] = await response.json()
    return sent


async def inject(sandbox: Sandbox, code: int | str) -> None:
    response = await sandbox.post("/sandbox/faults", json={"code": code})
    assert response.status == 201, await response.text()


async def customer_writes(sandbox: Sandbox) -> None:
    """Open the customer's 24-hour window, as an inbound message does."""
    message = {"phone_number_id": NUMBER, "from": CUSTOMER, "type": "text", "text": {"body": "Hi"}}
    response = await sandbox.post("/sandbox/inbound", json=message)
    assert response.status == 200, await response.text()


def a_template(**recipient: str) -> dict[str, Any]:
    to = messages.address(**recipient) if recipient else messages.address(phone=CUSTOMER)
    return messages.template(to, "order_update", "id", callback_data="outbound-1")


async def refused(call: Awaitable[Any]) -> CloudApiError:
    with pytest.raises(CloudApiError) as caught:
        await call
    return caught.value


def processing_error(error: CloudApiError) -> ProcessingError:
    with pytest.raises(ProcessingError) as caught:
        error.raise_processing_error(channel_id=CHANNEL)
    return caught.value


# --- sends ----------------------------------------------------------------------------------


async def test_a_send_returns_the_wamid_and_the_ledger_holds_exactly_that_request(
    sandbox: Sandbox, cloud: CloudApiClient
) -> None:
    await customer_writes(sandbox)
    payload = messages.text(
        messages.address(phone="+1 555-123-4567"), "Halo", callback_data="outbound-42"
    )
    result = await cloud.send(NUMBER, TOKEN, payload)

    assert result.wamid.startswith("wamid.")
    assert result.contacts == (SentContact(input="+1 555-123-4567", wa_id=CUSTOMER),)
    assert result.message_status is None
    sent = await ledger(sandbox)
    assert sent["total"] == 1
    [item] = sent["items"]
    assert item["wamid"] == result.wamid
    assert item["phone_number_id"] == NUMBER
    assert item["to"] == "+1 555-123-4567"
    assert "recipient" not in item
    assert item["request"] == payload
    assert item["biz_opaque_callback_data"] == "outbound-42"


async def test_a_bsuid_send_goes_out_as_recipient(sandbox: Sandbox, cloud: CloudApiClient) -> None:
    payload = a_template(user_id=BSUID)
    result = await cloud.send(NUMBER, TOKEN, payload)

    assert result.contacts == (SentContact(input=BSUID, user_id=BSUID),)
    assert result.message_status == "accepted"
    [item] = (await ledger(sandbox))["items"]
    assert item["wamid"] == result.wamid
    assert item["recipient"] == BSUID
    assert "to" not in item
    assert item["request"] == payload


async def test_a_refused_token_stops_the_channel_and_is_never_logged(
    sandbox: Sandbox, cloud: CloudApiClient
) -> None:
    wrong = "EAAG-not-the-token"
    with capture_logs() as logs:
        error = await refused(cloud.send(NUMBER, wrong, a_template()))

    assert (error.code, error.http_status, error.reason) == (190, 401, "meta_190")
    assert error.classification is STOP
    assert error.fbtrace_id
    stopped = processing_error(error)
    assert isinstance(stopped, ChannelStoppedError)
    assert stopped.channel_id == CHANNEL
    assert "reconnect the channel with a new token" in str(stopped)
    [line] = [line for line in logs if line["event"] == "cloud_api.send_failed"]
    assert line["phone_number_id"] == NUMBER
    assert line["reason"] == "meta_190"
    for text in (str(error), repr(error.__dict__), repr(logs)):
        assert wrong not in text
        assert TOKEN not in text
    assert (await ledger(sandbox))["total"] == 0


@pytest.mark.parametrize(
    ("fault", "http_status", "reason", "classification", "tier", "tree_error"),
    [
        (130429, 400, "meta_130429", RETRY, "30s", TransientError),
        (131056, 400, "meta_131056", RETRY, "2m", TransientError),
        (131000, 500, "meta_131000", RETRY, "5s", TransientError),
        (4, 400, "meta_4", RETRY, "5s", TransientError),
        (80007, 400, "meta_80007", RETRY, "5s", TransientError),
        ("http_500", 500, "meta_1", RETRY, "5s", TransientError),
        ("http_503", 503, "meta_2", RETRY, "5s", TransientError),
        (190, 401, "meta_190", STOP, None, ChannelStoppedError),
        (368, 403, "meta_368", STOP, None, ChannelStoppedError),
    ],
)
async def test_a_refused_send_is_classified_and_not_retried_by_the_client(
    sandbox: Sandbox,
    cloud: CloudApiClient,
    fault: int | str,
    http_status: int,
    reason: str,
    classification: Classification,
    tier: str | None,
    tree_error: type[ProcessingError],
) -> None:
    await inject(sandbox, fault)
    error = await refused(cloud.send(NUMBER, TOKEN, a_template()))

    assert (error.http_status, error.reason) == (http_status, reason)
    assert (error.classification, error.tier, error.maybe_sent) == (classification, tier, False)
    assert error.fbtrace_id
    tree = processing_error(error)
    assert type(tree) is tree_error
    assert tree.reason == reason
    if isinstance(tree, TransientError):
        assert tree.tier == tier
    # The fault applied to one send: had the client retried, this send would have gone out.
    assert (await ledger(sandbox))["total"] == 0
    assert (await cloud.send(NUMBER, TOKEN, a_template())).wamid
    assert (await ledger(sandbox))["total"] == 1


@pytest.mark.parametrize(
    ("code", "classification", "tree_error"),
    [
        (131047, PERMANENT, PermanentError),
        (131026, PERMANENT, PermanentError),
        (131048, STOP, ChannelStoppedError),
    ],
)
async def test_an_asynchronous_failure_is_classified_from_its_status_webhook(
    sandbox: Sandbox,
    cloud: CloudApiClient,
    webhooks: Webhooks,
    code: int,
    classification: Classification,
    tree_error: type[ProcessingError],
) -> None:
    # Meta accepts these sends and reports the failure later, in a failed status.
    await inject(sandbox, code)
    result = await cloud.send(NUMBER, TOKEN, a_template())
    status = await webhooks.failed(result.wamid)

    error = error_from_status_errors(status.errors)
    assert (error.code, error.reason, error.classification) == (
        code,
        f"meta_{code}",
        classification,
    )
    assert error.details
    assert type(processing_error(error)) is tree_error


async def test_a_text_outside_the_window_fails_with_131047_only_templates(
    cloud: CloudApiClient, webhooks: Webhooks
) -> None:
    result = await cloud.send(NUMBER, TOKEN, messages.text(messages.address(phone=CUSTOMER), "Hi"))
    status = await webhooks.failed(result.wamid)

    error = error_from_status_errors(status.errors)
    assert (error.code, error.classification) == (131047, PERMANENT)
    assert "only a template message can be sent now" in str(error)


async def test_a_burst_to_one_user_hits_the_pair_rate(
    make_sandbox: MakeSandbox, make_client: MakeClient
) -> None:
    sandbox = await make_sandbox(sandbox_pair_burst=1)
    cloud = await make_client(base(sandbox))
    await cloud.send(NUMBER, TOKEN, a_template())
    error = await refused(cloud.send(NUMBER, TOKEN, a_template()))

    assert (error.code, error.classification, error.tier) == (131056, RETRY, "2m")
    assert (await ledger(sandbox))["total"] == 1


def _body(**fields: Any) -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "to": CUSTOMER, **fields}


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (_body(type="text", text={}), 131008),
        (_body(to="abc", type="text", text={"body": "x"}), 131009),
        (_body(txt={"body": "x"}), 100),
    ],
)
async def test_a_bad_body_is_permanent(
    sandbox: Sandbox, cloud: CloudApiClient, payload: dict[str, Any], code: int
) -> None:
    error = await refused(cloud.send(NUMBER, TOKEN, payload))
    assert (error.code, error.classification, error.http_status) == (code, PERMANENT, 400)
    assert error.details
    assert type(processing_error(error)) is PermanentError


async def test_an_unknown_number_is_permanent(cloud: CloudApiClient) -> None:
    error = await refused(cloud.send("100000000000077", TOKEN, a_template()))
    assert (error.code, error.classification, error.reason) == (100, PERMANENT, "meta_100")


# --- no answer ------------------------------------------------------------------------------


async def test_a_timeout_may_have_been_sent_and_does_not_hang(
    make_sandbox: MakeSandbox, make_client: MakeClient
) -> None:
    # The sandbox holds the request past the client's timeout, and answers only then.
    hold = 1.0
    sandbox = await make_sandbox(sandbox_timeout_hold_seconds=hold)
    cloud = await make_client(base(sandbox), timeout_seconds=0.25)
    await inject(sandbox, "timeout")

    started = time.monotonic()
    error = await refused(cloud.send(NUMBER, TOKEN, a_template()))
    waited = time.monotonic() - started

    assert waited < 0.9 * hold, f"the send waited {waited:.2f}s, past its 0.25s timeout"
    assert (error.reason, error.classification, error.tier) == ("timeout", RETRY, "5s")
    assert error.maybe_sent is True
    assert error.code is None
    assert "no answer within 0.25s" in str(error)
    tree = processing_error(error)
    assert isinstance(tree, TransientError)
    assert (tree.reason, tree.tier) == ("timeout", "5s")


async def test_an_unreachable_api_was_not_sent(make_client: MakeClient) -> None:
    cloud = await make_client(f"http://127.0.0.1:{free_port()}")
    error = await refused(cloud.send(NUMBER, TOKEN, a_template()))
    assert (error.reason, error.classification, error.maybe_sent) == ("connection", RETRY, False)


# --- reads ----------------------------------------------------------------------------------


async def test_phone_number_reads_the_node(cloud: CloudApiClient) -> None:
    node = await cloud.phone_number(NUMBER, TOKEN)
    assert node == {
        "display_phone_number": "+1 555 010 0001",
        "verified_name": node["verified_name"],
        "quality_rating": "GREEN",
        "id": NUMBER,
    }
    assert node["verified_name"]


@pytest.fixture
async def front(
    sandbox: Sandbox,
) -> AsyncIterator[Callable[[int], Awaitable[tuple[FlakyFront, str]]]]:
    servers: list[TestServer] = []

    async def make(failures: int) -> tuple[FlakyFront, str]:
        flaky = FlakyFront(base(sandbox), failures)
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", flaky.handle)
        server = TestServer(app)
        await server.start_server()
        servers.append(server)
        return flaky, base(server)

    yield make
    for server in servers:
        await server.close()


async def test_phone_number_retries_a_transient_503_then_succeeds(
    front: Callable[[int], Awaitable[tuple[FlakyFront, str]]], make_client: MakeClient
) -> None:
    flaky, url = await front(1)
    cloud = await make_client(url, read_backoff_seconds=0.01)
    node = await cloud.phone_number(NUMBER, TOKEN)
    assert node["id"] == NUMBER
    assert flaky.requests == 2


async def test_phone_number_gives_up_after_its_attempts(
    front: Callable[[int], Awaitable[tuple[FlakyFront, str]]], make_client: MakeClient
) -> None:
    flaky, url = await front(10)
    cloud = await make_client(url, read_attempts=3, read_backoff_seconds=0.01)
    error = await refused(cloud.phone_number(NUMBER, TOKEN))
    assert (error.reason, error.http_status, error.classification) == ("meta_2", 503, RETRY)
    assert flaky.requests == 3


async def test_phone_number_does_not_retry_a_refused_token(
    front: Callable[[int], Awaitable[tuple[FlakyFront, str]]], make_client: MakeClient
) -> None:
    flaky, url = await front(0)
    cloud = await make_client(url, read_backoff_seconds=0.01)
    error = await refused(cloud.phone_number(NUMBER, "wrong"))
    assert (error.code, error.classification) == (190, STOP)
    assert flaky.requests == 1


async def test_mark_read_is_accepted(sandbox: Sandbox, cloud: CloudApiClient) -> None:
    await cloud.mark_read(NUMBER, TOKEN, "wamid.HBgLMTU1NTEyMzQ1NjcVAgASGBQzQTdGMEQ=")
    error = await refused(cloud.mark_read(NUMBER, TOKEN, ""))
    assert error.classification is PERMANENT


# --- the client as a resource ---------------------------------------------------------------


async def test_cloud_api_ctx_starts_and_closes_the_client(sandbox: Sandbox) -> None:
    settings = CloudApiSettings(whatsapp_api_base_url=base(sandbox), whatsapp_api_version="v23.0")
    app = web.Application()
    app.cleanup_ctx.append(cloud_api_ctx(settings))
    runner = web.AppRunner(app)
    await runner.setup()
    client = app[CLOUD_API]
    try:
        assert (await client.phone_number(NUMBER, TOKEN))["id"] == NUMBER
    finally:
        await runner.cleanup()
    with pytest.raises(RuntimeError, match="not started"):
        await client.phone_number(NUMBER, TOKEN)


def test_settings_name_the_bad_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WHATSAPP_API_BASE_URL", "WHATSAPP_API_VERSION", "WHATSAPP_API_TIMEOUT_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="whatsapp_api_base_url"):
        CloudApiSettings(whatsapp_api_base_url="graph.facebook.com")
    with pytest.raises(ValueError, match="whatsapp_api_version"):
        CloudApiSettings(whatsapp_api_version="21.0")
    defaults = CloudApiSettings()
    assert (defaults.whatsapp_api_base_url, defaults.whatsapp_api_version) == (
        "https://graph.facebook.com",
        "v21.0",
    )
