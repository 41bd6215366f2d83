"""Hostile webhook bodies at webhook-ingest, then through the consumer: the documented answers.

webhook-ingest does not parse JSON (docs/architecture.md, "Ingest flow"): a body over
``WEBHOOK_MAX_BODY_BYTES`` (4 MiB) is 413, a body whose signature does not match is 401, and
any other body, however hostile, is published and answered 200. The consumer then records
it in the ledger as ``failed`` with ``invalid_payload:<reason>`` and acks it: no crash, no
redelivery, also when hostile bodies share a micro-batch with a good one.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
from collections.abc import AsyncIterator, Iterator

import orjson
import pytest
from aio_pika.abc import AbstractQueue
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from inbox_api.consumer.service import Outcome, WebhookProcessor
from inbox_common.broker.connection import Broker
from inbox_common.broker.consumer import Consumer
from inbox_common.broker.topology import Names
from inbox_common.contracts.delivery import deliveries_from_amqp
from inbox_common.store.client import Database, Document
from inbox_common.store.ledger import FAILED
from inbox_common.whatsapp.signature import SIGNATURE_HEADER, sign
from inbox_ingest.app import WEBHOOK_PATH, create_app
from inbox_ingest.settings import IngestSettings
from inbox_sandbox import payloads
from inbox_testkit.polling import wait_until
from inbox_testkit.store import ledger_entry
from inbox_testkit.tenants import ACME_NUMBER

pytestmark = [pytest.mark.integration, pytest.mark.hostile]

SECRET = "app-secret"
MiB = 1024 * 1024
LIMIT = 4 * MiB  # WEBHOOK_MAX_BODY_BYTES' default

IngestClient = TestClient[web.Request, web.Application]


def _envelope_with(raw_value: bytes) -> bytes:
    """A text webhook for acme whose message timestamp is ``raw_value``, as raw JSON."""
    message = payloads.text_message("4915", "wamid.HOSTILE", "hi", timestamp=1_700_000_000)
    body = orjson.dumps(payloads.webhook(ACME_NUMBER, messages=[message]))
    return body.replace(b'"1700000000"', raw_value)


TEN_THOUSAND_DIGITS = b"9" * 10_000

# Each signed correctly is accepted (200) and then recorded as failed with this code.
HOSTILE_BODIES = {
    "nested-100000-arrays": (b"[" * 100_000 + b"]" * 100_000, "invalid_json"),
    "open-100000-arrays": (b"[" * 100_000, "invalid_json"),
    "nested-100000-objects": (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "invalid_json"),
    "non-utf8": (b"\xff\xfe\xfd\x00\x80", "invalid_json"),
    "non-utf8-in-envelope": (_envelope_with(b'"\xff\xfe"'), "invalid_json"),
    "overlong-utf8": (b'{"object":"\xc0\xaf"}', "invalid_json"),
    "utf8-encoded-surrogate": (b'{"object":"\xed\xa0\x80"}', "invalid_json"),
    "escaped-lone-surrogate": (b'{"object":"\\ud800"}', "invalid_json"),
    "utf16": ('{"object":"whatsapp_business_account","entry":[]}'.encode("utf-16"), "invalid_json"),
    "utf8-bom": (b'\xef\xbb\xbf{"object":"whatsapp_business_account","entry":[]}', "invalid_json"),
    "10000-digit-number": (TEN_THOUSAND_DIGITS, "invalid_json"),
    "negative-10000-digit-number": (b"-" + TEN_THOUSAND_DIGITS, "invalid_json"),
    "10000-digit-timestamp": (_envelope_with(TEN_THOUSAND_DIGITS), "invalid_json"),
    "10000-digit-string-timestamp": (_envelope_with(b'"' + TEN_THOUSAND_DIGITS + b'"'), "schema"),
    "uint64-timestamp": (_envelope_with(b"18446744073709551615"), "schema"),
    "exponent-overflow": (b"1e999999", "invalid_json"),
    "10000-digit-fraction": (b"0." + b"0" * 10_000 + b"1", "not_an_object"),
    "empty": (b"", "invalid_json"),
    "whitespace": (b" \r\n\t", "invalid_json"),
    "trailing-nul": (b'{"object":"whatsapp_business_account","entry":[]}\x00', "invalid_json"),
}


def _settings(amqp_url: str, namespace: str) -> IngestSettings:
    return IngestSettings.model_validate(
        {
            "rabbitmq_url": amqp_url,
            "amqp_namespace": namespace,
            "whatsapp_webhook_secret": SECRET,
            "whatsapp_webhook_verify_token": "verify-me",
            "amqp_publish_timeout": 5.0,
        }
    )


def _signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {SIGNATURE_HEADER: sign(secret.encode(), body), "Content-Type": "application/json"}


@pytest.fixture
async def ingest(amqp_url: str, names: Names) -> AsyncIterator[IngestClient]:
    """webhook-ingest on a TestServer in the test's namespace, ready to publish."""
    client: IngestClient = TestClient(TestServer(create_app(_settings(amqp_url, names.namespace))))
    await client.start_server()
    try:
        await wait_until(
            lambda: _healthy(client), "webhook-ingest healthy (broker connected)", timeout=10
        )
        yield client
    finally:
        await client.close()


async def _healthy(client: IngestClient) -> bool:
    return (await client.get("/api/health")).status == 200


async def _assert_nothing_published(work_queue: AbstractQueue) -> None:
    # The ingest answered after its publish was confirmed (or not made): no waiting needed.
    assert await work_queue.get(fail=False) is None


# One ingest for all the bodies (subtests report each one): a fresh app per body would
# spend most of the suite's time budget on start-ups.
async def test_a_signed_hostile_body_is_accepted_then_recorded_as_failed(
    ingest: IngestClient,
    broker: Broker,
    work_queue: AbstractQueue,
    db: Database,
    processor: WebhookProcessor,
    subtests: pytest.Subtests,
) -> None:
    for name, (body, reason) in HOSTILE_BODIES.items():
        with subtests.test(name):
            response = await ingest.post(WEBHOOK_PATH, data=body, headers=_signed(body))

            assert response.status == 200
            assert await response.json() == {"status": "accepted"}
            message = await work_queue.get(timeout=5)
            await message.ack()
            assert message.body == body
            [delivery] = deliveries_from_amqp(message.body, message.headers)
            assert await processor.process(delivery) is Outcome.FAILED
            entry = await ledger_entry(db, delivery.sha256)
            assert entry["status"] == FAILED
            assert entry["error"]["code"] == f"invalid_payload:{reason}"
            assert entry["body_bytes"] == len(body)
            await _assert_nothing_published(work_queue)


async def test_a_hostile_body_signed_with_another_secret_is_401(
    ingest: IngestClient, broker: Broker, work_queue: AbstractQueue, subtests: pytest.Subtests
) -> None:
    for name, (body, _) in HOSTILE_BODIES.items():
        with subtests.test(name):
            headers = _signed(body, "not-the-secret")
            response = await ingest.post(WEBHOOK_PATH, data=body, headers=headers)

            assert response.status == 401
            assert (await response.json())["error"]["code"] == "invalid_signature"
            await _assert_nothing_published(work_queue)


async def test_hostile_bodies_posted_together_are_settled_with_their_micro_batch(
    ingest: IngestClient,
    broker: Broker,
    work_queue: AbstractQueue,
    db: Database,
    channel: Document,
    consumer: Consumer,
) -> None:
    # Posted at once, the small bodies share micro-batches with a good one; the consumer
    # must settle every message, apply the good body and record each hostile one as failed.
    good = orjson.dumps(payloads.text_webhook(ACME_NUMBER, "4915", "Ann", "between the junk"))
    bodies = {name: body for name, (body, _) in HOSTILE_BODIES.items()} | {"good": good}
    responses = await asyncio.gather(
        *(ingest.post(WEBHOOK_PATH, data=body, headers=_signed(body)) for body in bodies.values())
    )
    assert [r.status for r in responses] == [200] * len(bodies)

    outcomes = []
    while (message := await work_queue.get(fail=False)) is not None:
        outcomes.append(await consumer.process(message))

    assert outcomes
    assert set(outcomes) == {"acked"}, outcomes
    assert len(outcomes) < len(bodies), "nothing was batched; the test lost its point"
    for name, body in bodies.items():
        entry = await ledger_entry(db, hashlib.sha256(body).hexdigest())
        expected = "processed" if name == "good" else FAILED
        assert entry["status"] == expected, (name, entry.get("error"))


def _chunks(body: bytes, size: int = 256 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def _stream(body: bytes) -> AsyncIterator[bytes]:
    for chunk in _chunks(body):
        yield chunk


async def test_a_body_of_exactly_the_limit_is_accepted(
    ingest: IngestClient, broker: Broker, work_queue: AbstractQueue
) -> None:
    body = b'{"object":"x","pad":"' + b"a" * (LIMIT - 23) + b'"}'
    assert len(body) == LIMIT

    response = await ingest.post(WEBHOOK_PATH, data=io.BytesIO(body), headers=_signed(body))

    assert response.status == 200
    message = await work_queue.get(timeout=5)
    await message.ack()
    assert len(message.body) == LIMIT


@pytest.mark.parametrize("signature", ["right", "wrong"])
@pytest.mark.parametrize("transfer", ["content-length", "chunked"])
async def test_a_body_over_the_limit_is_413_with_the_json_error(
    ingest: IngestClient, broker: Broker, work_queue: AbstractQueue, signature: str, transfer: str
) -> None:
    body = b"[" * (LIMIT + 1)
    headers = _signed(body, SECRET if signature == "right" else "not-the-secret")
    # Chunked: no Content-Length to refuse up front, the limit applies while reading.
    data = io.BytesIO(body) if transfer == "content-length" else _stream(body)

    response = await ingest.post(WEBHOOK_PATH, data=data, headers=headers)

    # The size is checked before the signature: an oversized body is never hashed.
    assert response.status == 413
    assert response.content_type == "application/json"
    error = (await response.json())["error"]
    assert error["code"] == "request_entity_too_large"
    assert str(LIMIT) in error["message"]
    await _assert_nothing_published(work_queue)


async def test_a_gzip_bomb_is_413_and_the_ingest_keeps_serving(
    ingest: IngestClient, broker: Broker, work_queue: AbstractQueue
) -> None:
    # 64 MiB of zeros compress to about 64 KiB; aiohttp inflates request bodies itself, so
    # the limit must hold on the inflated size.
    bomb = gzip.compress(b"0" * (64 * MiB), compresslevel=9)
    # Connection: close, else aiohttp lingers on the connection to drain the unread body and
    # the test server takes seconds to stop.
    headers = {**_signed(bomb), "Content-Encoding": "gzip", "Connection": "close"}

    response = await ingest.post(WEBHOOK_PATH, data=bomb, headers=headers)

    assert response.status == 413
    assert (await response.json())["error"]["code"] == "request_entity_too_large"
    await _assert_nothing_published(work_queue)
    body = orjson.dumps(payloads.text_webhook(ACME_NUMBER, "4915", "Ann", "still up"))
    after = await ingest.post(WEBHOOK_PATH, data=body, headers=_signed(body))
    assert after.status == 200
    message = await work_queue.get(timeout=5)
    await message.ack()
    assert message.body == body
