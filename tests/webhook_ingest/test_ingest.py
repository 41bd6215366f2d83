"""webhook-ingest against the real broker: handshake, signature, limits, confirms, outages."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import AsyncIterator

import aio_pika
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from inbox_common.broker.topology import Names
from inbox_common.contracts.delivery import BATCH_HEADER, WebhookDelivery, deliveries_from_amqp
from inbox_common.local.ports import free_port
from inbox_common.whatsapp.signature import SIGNATURE_HEADER, sign
from inbox_ingest.app import WEBHOOK_PATH, create_app
from inbox_ingest.settings import IngestSettings
from inbox_sandbox import payloads
from inbox_testkit import backends

pytestmark = pytest.mark.integration

SECRET = "app-secret"
OLD_SECRET = "previous-secret"
VERIFY_TOKEN = "verify-me"


def _settings(amqp_url: str, namespace: str, **overrides: object) -> IngestSettings:
    values: dict[str, object] = {
        "rabbitmq_url": amqp_url,
        "amqp_namespace": namespace,
        "whatsapp_webhook_secret": f"{SECRET},{OLD_SECRET}",
        "whatsapp_webhook_verify_token": VERIFY_TOKEN,
        "amqp_publish_timeout": 2.0,
        **overrides,
    }
    return IngestSettings.model_validate(values)


async def _client(settings: IngestSettings) -> TestClient[web.Request, web.Application]:
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    return client


@pytest.fixture
async def ingest(
    amqp_url: str, amqp_namespace: backends.AmqpNamespace
) -> AsyncIterator[tuple[TestClient[web.Request, web.Application], aio_pika.abc.AbstractQueue]]:
    """A running ingest plus a probe queue bound to its exchange (sees every publish)."""
    amqp_namespace.track_topology()
    client = await _client(_settings(amqp_url, amqp_namespace.name))
    for _ in range(100):
        if (await client.get("/api/health")).status == 200:
            break
        await asyncio.sleep(0.05)
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    names = Names(amqp_namespace.name)
    probe = await channel.declare_queue(amqp_namespace.qualify("probe"), auto_delete=True)
    amqp_namespace.track(probe.name)
    await probe.bind(names.webhooks_exchange, "#")
    yield client, probe
    await client.close()
    await connection.close()


def _signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {SIGNATURE_HEADER: sign(secret.encode(), body), "Content-Type": "application/json"}


async def test_handshake_echoes_the_challenge(
    ingest: tuple[TestClient[web.Request, web.Application], aio_pika.abc.AbstractQueue],
) -> None:
    client, _ = ingest
    ok = await client.get(
        WEBHOOK_PATH,
        params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "42"},
    )
    assert ok.status == 200
    assert await ok.text() == "42"
    wrong = await client.get(
        WEBHOOK_PATH,
        params={"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "42"},
    )
    assert wrong.status == 403
    assert (await wrong.json())["error"]["code"] == "verification_failed"
    bad_mode = await client.get(
        WEBHOOK_PATH, params={"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN}
    )
    assert bad_mode.status == 403


async def test_signed_body_is_published_byte_for_byte_after_confirm(
    ingest: tuple[TestClient[web.Request, web.Application], aio_pika.abc.AbstractQueue],
) -> None:
    client, probe = ingest
    # Odd spacing and key order: the body must travel exactly as received.
    body = b'{ "object":"whatsapp_business_account",  "entry" : [] }'
    response = await client.post(WEBHOOK_PATH, data=body, headers=_signed(body))
    assert response.status == 200
    message = await probe.get(timeout=5)
    await message.ack()
    assert message.body == body
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.message_id == hashlib.sha256(body).hexdigest()
    delivery = WebhookDelivery.from_amqp(message.body, message.headers)
    assert delivery.sha256 == message.message_id
    assert delivery.request_id


async def test_the_rotation_secret_is_accepted(
    ingest: tuple[TestClient[web.Request, web.Application], aio_pika.abc.AbstractQueue],
) -> None:
    client, probe = ingest
    body = orjson.dumps(payloads.text_webhook("123", "4915", "Ann", "hi"))
    response = await client.post(WEBHOOK_PATH, data=body, headers=_signed(body, OLD_SECRET))
    assert response.status == 200
    assert (await probe.get(timeout=5)).body == body


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {SIGNATURE_HEADER: "sha256=" + "0" * 64},
        {SIGNATURE_HEADER: sign(b"another-secret", b'{"object":"x"}')},
        {SIGNATURE_HEADER: "md5=abc"},
    ],
    ids=["missing", "zeros", "wrong-secret", "wrong-scheme"],
)
async def test_bad_signature_is_401_and_publishes_nothing(
    ingest: tuple[TestClient[web.Request, web.Application], aio_pika.abc.AbstractQueue],
    headers: dict[str, str],
) -> None:
    client, probe = ingest
    response = await client.post(WEBHOOK_PATH, data=b'{"object":"x"}', headers=headers)
    assert response.status == 401
    error = (await response.json())["error"]
    assert error["code"] == "invalid_signature"
    assert SIGNATURE_HEADER in error["message"]
    assert await probe.get(fail=False, timeout=1) is None
    metrics = await (await client.get("/metrics")).text()
    assert 'webhook_requests_total{outcome="bad_signature"} 1.0' in metrics


async def test_a_signed_body_that_is_not_json_is_still_accepted(
    ingest: tuple[TestClient[web.Request, web.Application], aio_pika.abc.AbstractQueue],
) -> None:
    client, probe = ingest
    body = b"\xff\xfe not json at all"
    response = await client.post(WEBHOOK_PATH, data=body, headers=_signed(body))
    assert response.status == 200
    assert (await probe.get(timeout=5)).body == body


async def test_bodies_up_to_the_limit_pass_and_larger_are_413(
    ingest: tuple[TestClient[web.Request, web.Application], aio_pika.abc.AbstractQueue],
) -> None:
    client, probe = ingest
    big = b'{"object":"x","pad":"' + b"a" * (3 * 1024 * 1024) + b'"}'
    accepted = await client.post(WEBHOOK_PATH, data=io.BytesIO(big), headers=_signed(big))
    assert accepted.status == 200
    assert (await probe.get(timeout=5)).body == big
    huge = b"a" * (4 * 1024 * 1024 + 1)
    refused = await client.post(WEBHOOK_PATH, data=io.BytesIO(huge), headers=_signed(huge))
    assert refused.status == 413
    assert (await refused.json())["error"]["code"] == "request_entity_too_large"
    assert await probe.get(fail=False, timeout=1) is None


async def test_broker_down_answers_503_and_health_down_but_livez_ok(namespace: str) -> None:
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    client = await _client(_settings(closed, namespace))
    try:
        body = orjson.dumps(payloads.text_webhook("123", "4915", "Ann", "hi"))
        response = await client.post(WEBHOOK_PATH, data=body, headers=_signed(body))
        assert response.status == 503
        assert (await response.json())["error"]["code"] == "broker_unavailable"
        health = await client.get("/api/health")
        assert health.status == 503
        report = await health.json()
        assert report["status"] == "down"
        assert report["checks"]["rabbitmq"]["status"] == "down"
        assert "guest:guest" not in await health.text()
        assert (await client.get("/livez")).status == 200
    finally:
        await client.close()


def test_a_missing_secret_stops_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from inbox_common.settings import load_settings

    monkeypatch.delenv("WHATSAPP_WEBHOOK_SECRET", raising=False)
    monkeypatch.setenv("WHATSAPP_WEBHOOK_VERIFY_TOKEN", "x")
    monkeypatch.setenv("WEBHOOK_INGEST_PORT", "not-a-port")
    with pytest.raises(SystemExit) as exit_info:
        load_settings(IngestSettings)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "WHATSAPP_WEBHOOK_SECRET" in err
    assert "WEBHOOK_INGEST_PORT" in err


async def test_concurrent_requests_travel_in_micro_batches_each_keeping_its_identity(
    ingest: tuple[TestClient[web.Request, web.Application], aio_pika.abc.AbstractQueue],
) -> None:
    client, probe = ingest
    bodies = [
        orjson.dumps(payloads.text_webhook("123", f"49{n}", "Ann", f"hi {n}")) for n in range(40)
    ]
    responses = await asyncio.gather(
        *(client.post(WEBHOOK_PATH, data=b, headers=_signed(b)) for b in bodies)
    )
    assert [r.status for r in responses] == [200] * 40

    messages = []
    while (message := await probe.get(fail=False, timeout=1)) is not None:
        await message.ack()
        messages.append(message)
    deliveries = [d for m in messages for d in deliveries_from_amqp(m.body, m.headers)]
    assert sorted(d.body for d in deliveries) == sorted(bodies)
    assert all(d.intact() and d.request_id for d in deliveries)
    assert len({d.request_id for d in deliveries}) == 40
    # Requests that arrived together shared AMQP messages (and confirms).
    assert len(messages) < 40
    assert any(BATCH_HEADER in (m.headers or {}) for m in messages)
