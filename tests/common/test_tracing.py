"""The trace context: read from HTTP and AMQP headers, carried by webhook deliveries (one
body or a micro-batch), put on published messages and on log lines; never a reason to lose
a body."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import orjson
import pytest
from aio_pika.abc import AbstractQueue

from inbox_common import tracing
from inbox_common.broker.publisher import ConfirmedPublisher
from inbox_common.broker.topology import WEBHOOK_ROUTING_KEY, Names
from inbox_common.contracts.delivery import WebhookDelivery, batch_message, deliveries_from_amqp

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{SPAN_ID}-01"
AT = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def delivery(body: bytes, traceparent: str = "") -> WebhookDelivery:
    return WebhookDelivery(
        sha256=hashlib.sha256(body).hexdigest(),
        request_id="r",
        received_at=AT,
        body=body,
        traceparent=traceparent,
    )


def test_a_traceparent_is_read_from_text_or_bytes_and_anything_else_starts_a_new_trace() -> None:
    for carrier in ({"traceparent": TRACEPARENT}, {"traceparent": TRACEPARENT.encode()}):
        with tracing.span("child", parent=tracing.context_from(carrier)):
            assert tracing.current_trace_id() == TRACE_ID
    for junk in (None, {}, {"traceparent": "00-nothex-00f067aa0ba902b7-01"}, {"traceparent": 7}):
        assert tracing.context_from(junk) == tracing.new_trace()
    assert tracing.trace_id_of(TRACEPARENT) == TRACE_ID
    assert tracing.trace_id_of(f"00-{'0' * 32}-{SPAN_ID}-01") is None  # W3C: invalid id
    assert tracing.trace_id_of("garbage") is None
    assert tracing.trace_id_of("") is None


def test_the_caller_s_trace_continues_in_a_child_span() -> None:
    # Without a provider (as in this test process) the API still carries a remote parent on.
    with tracing.span("work", parent=tracing.context_of(TRACEPARENT)):
        assert tracing.current_trace_id() == TRACE_ID
        carried = tracing.current_traceparent()
    assert tracing.trace_id_of(carried) == TRACE_ID
    headers = tracing.inject({"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"})
    assert headers["traceparent"].startswith("00-111"), "an explicit traceparent is kept"
    assert tracing.inject({}) == {}, "outside a span nothing is added"


def test_every_body_of_a_batch_keeps_its_own_trace() -> None:
    traced, untraced = delivery(b'{"a":1}', TRACEPARENT), delivery(b'{"b":2}')
    body, headers, _ = batch_message([traced, untraced])
    assert deliveries_from_amqp(body, headers) == [traced, untraced]
    one = deliveries_from_amqp(traced.body, traced.headers())
    assert one == [traced]
    assert one[0].traceparent == TRACEPARENT


@pytest.mark.parametrize("junk", ["not-a-traceparent", "00-XYZ", b"\xff\xfe", 42])
def test_a_malformed_traceparent_is_dropped_and_the_body_kept(junk: object) -> None:
    body = b'{"object":"whatsapp_business_account"}'
    headers: dict[str, object] = {**delivery(body).headers(), "traceparent": junk}
    [kept] = deliveries_from_amqp(body, headers)
    assert kept.intact()
    assert kept.traceparent == ""


async def test_a_published_message_carries_the_current_trace(
    publisher: ConfirmedPublisher, names: Names, work_queue: AbstractQueue
) -> None:
    async def publish(message_id: str, *, propagate: bool = True) -> None:
        await publisher.publish(
            names.webhooks_exchange,
            WEBHOOK_ROUTING_KEY,
            orjson.dumps({"id": message_id}),
            message_id=message_id,
            propagate=propagate,
        )

    with tracing.span("request", parent=tracing.context_of(TRACEPARENT)):
        await publish("traced")
    await publish("untraced")
    with tracing.span("request", parent=tracing.context_of(TRACEPARENT)):
        await publish("batch", propagate=False)
    seen = {}
    for _ in range(3):
        message = await work_queue.get(timeout=5)
        seen[message.message_id] = (message.headers or {}).get("traceparent")
        await message.ack()
    assert tracing.trace_id_of(str(seen["traced"])) == TRACE_ID
    assert seen["untraced"] is None
    assert seen["batch"] is None
