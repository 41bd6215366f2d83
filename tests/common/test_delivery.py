"""The AMQP shapes of webhook deliveries: one body, or a micro-batch of bodies."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest

from inbox_common.contracts.delivery import (
    BATCH_HEADER,
    InvalidDelivery,
    WebhookDelivery,
    batch_message,
    deliveries_from_amqp,
)

AT = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


def delivery(body: bytes, request_id: str = "r") -> WebhookDelivery:
    return WebhookDelivery(
        sha256=hashlib.sha256(body).hexdigest(), request_id=request_id, received_at=AT, body=body
    )


def test_a_batch_round_trips_every_body_and_identity() -> None:
    originals = [delivery(b'{"a":1}', "r1"), delivery(b"", "r2"), delivery(b"\xff\x00raw", "r3")]
    body, headers, message_id = batch_message(originals)
    assert message_id.startswith("batch-")
    assert body == b'{"a":1}\xff\x00raw'
    assert deliveries_from_amqp(body, headers) == originals
    assert all(d.intact() for d in deliveries_from_amqp(body, headers))


def test_a_single_body_message_is_one_delivery() -> None:
    one = delivery(b'{"object":"x"}')
    assert deliveries_from_amqp(one.body, one.headers()) == [one]
    altered = deliveries_from_amqp(b'{"object":"y"}', one.headers())[0]
    assert not altered.intact()


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({BATCH_HEADER: []}, "non-empty list"),
        ({BATCH_HEADER: "x"}, "non-empty list"),
        ({BATCH_HEADER: [{"size": "3"}]}, "integer size"),
        ({BATCH_HEADER: [{"size": 99, "sha256": "0" * 64}]}, "overruns"),
        (
            {BATCH_HEADER: [{"size": 1, "sha256": "0" * 64, "received_at": AT.isoformat()}]},
            "add up",
        ),
        ({BATCH_HEADER: [{"size": 4}]}, "sha256"),
        ({}, "sha256"),
    ],
    ids=["empty", "not-a-list", "size-type", "overrun", "leftover", "no-sha", "no-headers"],
)
def test_malformed_messages_are_refused_with_the_reason(
    headers: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidDelivery, match=message):
        deliveries_from_amqp(b"abcd", headers)
