"""Hostile webhook bodies and AMQP messages against the consumer, driven by Hypothesis.

Property: whatever a body or a message holds, the consumer settles it. The service returns
an :class:`Outcome` (a failed one leaves a ``failed`` ledger entry with an error code) and
never raises; the AMQP edge acks or dead-letters every message and never requeues one.

The tests are ``async def`` with ``@given``: pytest-asyncio runs each example as a coroutine
on the session loop, so Hypothesis keeps its example database (a failure is replayed first
next time) and its ``@reproduce_failure`` blobs, without collecting examples up front. The
function-scoped fixtures (store, broker) are shared by a test's examples: each body gets
its own ledger entry, and one drawn twice is a redelivery, which must come out
``duplicate`` or ``failed`` again, as the property allows.

NUL in object keys and ``$``/``.`` keys, which BSON or update operators refuse, are drawn
too; the pinned raw bodies at the end (integers beyond int64, deep nesting, NUL keys) are the
exact inputs that once crashed the consumer.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aio_pika.abc import AbstractQueue
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from inbox_api.consumer.service import Outcome, WebhookProcessor
from inbox_api.rest import views
from inbox_common.broker.consumer import REASON_HEADER, Consumer
from inbox_common.broker.publisher import ConfirmedPublisher
from inbox_common.broker.topology import WEBHOOK_ROUTING_KEY, Names
from inbox_common.contracts.delivery import BATCH_HEADER, batch_message
from inbox_common.contracts.webhook import InvalidEnvelope, iter_changes, parse_envelope
from inbox_common.store.client import Database, Document
from inbox_common.store.ledger import FAILED, PROCESSED
from inbox_common.store.schema import CONVERSATIONS, MESSAGES
from inbox_sandbox import payloads
from inbox_testkit.broker import header_str
from inbox_testkit.store import ledger_entry
from inbox_testkit.tenants import ACME_NUMBER, UNKNOWN_NUMBER
from inbox_testkit.webhooks import delivery_of

pytestmark = [pytest.mark.integration, pytest.mark.hostile]

# No shrink phase: every example costs store round trips, so shrinking a failure can outlast
# the per-test timeout and lose the report. A failure prints its full input and a
# @reproduce_failure blob instead; add Phase.shrink here to shrink one locally.
FUZZ = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    print_blob=True,
)
INVALID_PAYLOAD_CODES = {
    "invalid_payload:invalid_json",
    "invalid_payload:not_an_object",
    "invalid_payload:schema",
}

# --- strategies -----------------------------------------------------------------------------

# orjson (which writes the drawn bodies) stops at 64-bit integers; larger ones, which BSON
# refuses too, are covered by the pinned raw bodies at the end.
I64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
TRICKY_KEYS = [
    "", " ", "$", "$where", "$set", "$literal", "$$this", "$unread_wamids", "$_newer",
    "a.b", ".", "a..b", "wamid.", "\u202eevil", "😀", "\ufeff", "null",
    "__class__", "__proto__", "NaN", "1e999", "' OR 1=1 --", "<script>", "{}",
]  # fmt: skip


class LongText(str):
    """A long string with a short repr, so that Hypothesis can report a failing example."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"LongText({self[:1]!r} * {len(self)})"


def _texts(
    tricky: list[str], alphabet: st.SearchStrategy[str], long: st.SearchStrategy[str]
) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(alphabet, max_size=30),
        st.sampled_from(tricky),
        st.text(alphabet, max_size=12).map(lambda s: f"${s}"),
        st.text(alphabet, max_size=12).map(lambda s: f"{s}.{s}"),
        long,
    )


# BSON refuses a NUL inside an object key; the consumer must store it anyway (rewritten).
# orjson takes no str subclass as a key, so long keys stay plain (and shorter).
KEYS = _texts(
    [*TRICKY_KEYS, "a\x00b"],
    st.characters(codec="utf-8"),
    st.integers(100, 300).map(lambda n: "k" * n),
)
TEXT = _texts(
    [*TRICKY_KEYS, "\x00", "a\x00b"],
    st.characters(codec="utf-8"),
    st.integers(1_000, 10_000).map(lambda n: LongText("ẋ" * n)),
)
SCALARS = st.one_of(st.none(), st.booleans(), I64, FLOATS, TEXT)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEYS, children, max_size=3),
    max_leaves=12,
)
OBJECTS = st.dictionaries(KEYS, JSON, max_size=4)


@st.composite
def mostly(
    draw: st.DrawFn,
    good: st.SearchStrategy[Any],
    bad: st.SearchStrategy[Any] = JSON,
    *,
    one_in: int,
) -> Any:
    """``good``, except one time in ``one_in`` (never with 0): ``bad``."""
    # Hypothesis favours the bounds of a range: the bad roll sits in the middle.
    if one_in and draw(st.integers(0, one_in - 1)) == one_in // 2:
        return draw(bad)
    return draw(good)


def record(
    required: dict[str, st.SearchStrategy[Any]],
    optional: dict[str, st.SearchStrategy[Any]] | None = None,
    *,
    one_in: int,
) -> st.SearchStrategy[dict[str, Any]]:
    """An object with the ``required`` keys, any of the ``optional`` ones and unknown extra
    keys; one time in ``one_in`` a value is any JSON, or the object misses required keys."""
    optional = optional or {}
    complete = st.fixed_dictionaries(
        {key: mostly(value, one_in=one_in) for key, value in required.items()},
        optional={key: mostly(value, one_in=one_in) for key, value in optional.items()},
    )
    partial = st.fixed_dictionaries({}, optional={**required, **optional})
    extras = st.dictionaries(KEYS, JSON, max_size=2)
    whole = mostly(complete, partial, one_in=one_in)
    return st.tuples(whole, extras).map(lambda pair: {**pair[1], **pair[0]})


def meta_envelopes(*, junk: int) -> st.SearchStrategy[dict[str, Any]]:
    """Webhook bodies shaped like Meta's (``payloads``), every value hostile.

    With ``junk=0`` every field has its documented type, so the body passes the schema and
    its values (``$``-prefixed and dotted strings and keys, unicode, 10,000-character
    strings, extreme timestamps, unknown types, empty lists) reach the store. With
    ``junk=N`` one value in about N is any JSON instead (null where an object belongs, a
    list, a number, a timestamp out of range) or an object misses required fields; the
    upper levels go wrong ten times more rarely, since junk there hides everything below.
    """

    def rec(
        required: dict[str, st.SearchStrategy[Any]],
        optional: dict[str, st.SearchStrategy[Any]] | None = None,
    ) -> st.SearchStrategy[dict[str, Any]]:
        return record(required, optional, one_in=junk)

    def upper(required: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
        return record(required, one_in=junk * 10)

    in_range = st.one_of(
        st.integers(0, 253_402_300_799).map(str),  # up to 9999-12-31, as Meta sends them
        st.integers(-62_135_596_800, 253_402_300_799),  # years 1 to 9999, as an integer
    )
    out_of_range = st.one_of(
        I64,
        st.from_regex(r"[0-9]{13,40}", fullmatch=True),
        FLOATS,
        FLOATS.map(str),
        st.sampled_from(["-1", "+1", " 1", "1 ", "1e9", "0x10", "١٢٣", "", "NaN"]),
    )
    timestamps = mostly(in_range, out_of_range, one_in=junk and 4)
    # A few fixed wamids, so that messages, statuses and reactions of examples collide.
    wamids = st.one_of(
        st.sampled_from(["wamid.A", "wamid.B", "wamid.C"]),
        st.text(min_size=1, max_size=40).map(lambda s: f"wamid.{s}"),
        TEXT,
    )
    wa_ids = st.one_of(st.sampled_from(["4915", "16505551234", ""]), TEXT)
    meta_error = rec(
        {"code": I64},
        {"title": TEXT, "message": TEXT, "error_data": rec({}, {"details": TEXT}), "href": TEXT},
    )
    media = rec(
        {"id": TEXT, "mime_type": TEXT},
        {
            "sha256": TEXT,
            "caption": TEXT,
            "filename": TEXT,
            "voice": st.booleans(),
            "animated": st.booleans(),
            "url": TEXT,
        },
    )
    reply = rec({"id": TEXT, "title": TEXT}, {"description": TEXT})
    contents: dict[str, st.SearchStrategy[Any]] = {
        "text": rec({"body": TEXT}),
        **dict.fromkeys(("image", "video", "audio", "sticker", "document"), media),
        "location": rec({"latitude": FLOATS, "longitude": FLOATS}, {"name": TEXT, "address": TEXT}),
        "contacts": st.lists(
            rec({"name": rec({"formatted_name": TEXT})}, {"phones": st.lists(OBJECTS)}),
            max_size=3,
        ),
        "interactive": rec(
            {"type": TEXT}, {"button_reply": reply, "list_reply": reply, "nfm_reply": OBJECTS}
        ),
        "button": rec({"payload": TEXT, "text": TEXT}),
        "reaction": rec(
            {"message_id": wamids}, {"emoji": st.one_of(st.sampled_from(["👍", "", "❤️"]), TEXT)}
        ),
        "system": rec({"body": TEXT}, {"type": TEXT}),
        "order": rec({"catalog_id": TEXT}, {"product_items": st.lists(OBJECTS, max_size=3)}),
    }
    # KEYS, not TEXT: a type names an object of the message and is a key of its content.
    types = st.one_of(
        st.sampled_from(sorted(contents)),
        st.sampled_from(
            [
                *("unsupported", "request_welcome", "ephemeral", "$where", "a.b", "", "__class__"),
                # Names of InboundMessage's own fields and properties, not type objects.
                *("content", "preview", "context", "errors", "from", "id", "timestamp", "type"),
            ]
        ),
        KEYS,
    )
    context = rec(
        {"id": wamids},
        {
            "from": wa_ids,
            "forwarded": st.booleans(),
            "frequently_forwarded": st.booleans(),
            "referred_product": OBJECTS,
        },
    )
    message_fields = rec(
        {"from": wa_ids, "id": wamids, "timestamp": timestamps},
        {"context": context, "errors": st.lists(meta_error, max_size=2)},
    )
    typed_contents = {type_: mostly(c, one_in=junk) for type_, c in contents.items()}
    own_fields = {"from", "id", "timestamp", "type", "context", "errors", "from_user_id"}
    any_types = mostly(types, one_in=junk)

    @st.composite
    def messages(draw: st.DrawFn) -> dict[str, Any]:
        message = draw(message_fields)
        type_ = draw(any_types)
        message["type"] = type_
        # A type naming another field ("context", "id") replaces it: junk, unless wanted.
        if isinstance(type_, str) and (junk or type_ not in own_fields):
            # str(): junk may draw a LongText, and orjson takes no str subclass as a key.
            message[str(type_)] = draw(typed_contents.get(type_, JSON))
        return message

    status = rec(
        {
            "id": wamids,
            "status": st.one_of(
                st.sampled_from(["sent", "delivered", "read", "failed", "deleted"]), TEXT
            ),
            "timestamp": timestamps,
        },
        {
            "recipient_id": wa_ids,
            "conversation": OBJECTS,
            "pricing": OBJECTS,
            "errors": st.lists(meta_error, max_size=2),
        },
    )
    contact = rec({"wa_id": wa_ids}, {"user_id": TEXT, "profile": rec({"name": TEXT})})
    numbers = st.sampled_from([ACME_NUMBER, ACME_NUMBER, ACME_NUMBER, UNKNOWN_NUMBER])
    metadata = rec({"phone_number_id": numbers}, {"display_phone_number": TEXT})
    value = rec(
        {"messaging_product": st.just("whatsapp"), "metadata": metadata},
        {
            "contacts": st.lists(contact, max_size=3),
            "messages": st.lists(messages(), max_size=3),
            "statuses": st.lists(status, max_size=3),
            "errors": st.lists(meta_error, max_size=2),
        },
    )
    change = upper({"field": st.one_of(st.just("messages"), TEXT), "value": value})
    entry = upper(
        {
            "id": st.one_of(st.just("WABA_ID"), TEXT),
            "changes": st.lists(change, min_size=1, max_size=2),
        }
    )
    return upper(
        {
            "object": st.just("whatsapp_business_account"),
            "entry": st.lists(entry, min_size=1, max_size=2),
        }
    )


WELL_TYPED_ENVELOPES = meta_envelopes(junk=0)
JUNK_ENVELOPES = meta_envelopes(junk=20)
RAW_JSON = JSON.map(orjson.dumps)


# --- the service ----------------------------------------------------------------------------


async def assert_settled(db: Database, processor: WebhookProcessor, body: bytes) -> Outcome:
    """Process ``body`` and check the outcome against its ledger entry."""
    delivery = delivery_of(body)
    try:
        outcome = await processor.process(delivery)
    except Exception as exc:
        raise AssertionError(f"process() raised {exc!r} on body {body[:2000]!r}") from exc
    assert isinstance(outcome, Outcome)
    entry = await ledger_entry(db, delivery.sha256)
    if outcome is Outcome.FAILED:
        assert entry["status"] == FAILED
        error = entry["error"]
        assert error["code"] in INVALID_PAYLOAD_CODES | {"unknown_channel", "store_refused"}, error
        assert isinstance(error["message"], str)
        assert error["message"]
    else:
        assert entry["status"] == PROCESSED
    error = entry.get("error")
    if not currently_in_test_context():  # a plain test (the pinned inputs), not Hypothesis
        return outcome
    event(f"outcome: {outcome.value}" + (f" ({error['code']})" if error else ""))
    if error and error["code"] == "invalid_payload:schema":
        # Where the strategies most often miss the schema (see --hypothesis-show-statistics).
        where = error["message"].split(":")[0].removeprefix("body does not match the webhook ")
        event("".join("N" if c.isdigit() else c for c in where))
    return outcome


async def assert_renderable(db: Database, body: bytes) -> None:
    """What the consumer stored renders through the REST views (no 500 on reading it)."""
    try:
        envelope = parse_envelope(body)
    except InvalidEnvelope:
        return
    wamids = [m.id for change in iter_changes(envelope) for m in change.messages]
    query = {"wamid": {"$in": wamids}, "conversation_id": {"$ne": None}}
    async for doc in db[MESSAGES].find(query):
        views.message(doc)
        conversation = await db[CONVERSATIONS].find_one({"_id": doc["conversation_id"]})
        assert conversation is not None
        views.conversation(conversation)


@FUZZ
@given(body=st.binary(max_size=2048))
async def test_arbitrary_bytes_are_recorded_never_raised(
    db: Database, channel: Document, processor: WebhookProcessor, body: bytes
) -> None:
    await assert_settled(db, processor, body)


@FUZZ
@given(body=RAW_JSON)
async def test_arbitrary_json_is_recorded_never_raised(
    db: Database, channel: Document, processor: WebhookProcessor, body: bytes
) -> None:
    await assert_settled(db, processor, body)


@FUZZ
@given(envelope=WELL_TYPED_ENVELOPES)
async def test_well_typed_envelopes_with_hostile_values_are_stored_never_raised(
    db: Database, channel: Document, processor: WebhookProcessor, envelope: dict[str, Any]
) -> None:
    body = orjson.dumps(envelope)
    outcome = await assert_settled(db, processor, body)
    await assert_renderable(db, body)
    if outcome is Outcome.FAILED:
        # Well-typed, so never refused as a payload: it only waits for its channel.
        error = (await ledger_entry(db, delivery_of(body).sha256))["error"]
        assert error["code"] == "unknown_channel", error


@FUZZ
@given(envelope=JUNK_ENVELOPES)
async def test_envelopes_with_junk_anywhere_are_recorded_never_raised(
    db: Database, channel: Document, processor: WebhookProcessor, envelope: dict[str, Any]
) -> None:
    body = orjson.dumps(envelope)
    await assert_settled(db, processor, body)
    await assert_renderable(db, body)


# --- the AMQP edge --------------------------------------------------------------------------

# Every type of AMQP field value aio-pika encodes (pamqp sends str as valid UTF-8 only;
# other bytes in a string header are pinned by a test below).
HEADER_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        I64,
        st.floats(width=32, allow_nan=False, allow_infinity=False),  # pamqp sends singles
        st.text(max_size=40),
        st.binary(max_size=40).map(bytearray),
        st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1)),
    ),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(min_size=1, max_size=20), children, max_size=3)
    ),
    max_leaves=6,
)
# Bodies stay unserialized until the test runs, so that a failing example prints short.
BODIES = st.one_of(st.binary(max_size=512), JSON, JUNK_ENVELOPES)


def as_body(value: object) -> bytes:
    return value if isinstance(value, bytes) else orjson.dumps(value)


@st.composite
def amqp_messages(draw: st.DrawFn) -> tuple[object, dict[str, Any] | None]:
    """A body and headers as webhook-ingest sets them, each header mostly right, sometimes
    missing or of another type, plus unknown ones; one time in ten no headers at all."""
    value = draw(BODIES)
    if draw(st.integers(0, 9)) == 5:
        return value, None
    right = {
        "sha256": hashlib.sha256(as_body(value)).hexdigest(),
        "request_id": "req-fuzz",
        "received_at": datetime.now(UTC).isoformat(),
    }
    headers: dict[str, Any] = {}
    for name, good in right.items():
        roll = draw(st.integers(0, 5))
        if roll == 2:
            continue
        headers[name] = draw(HEADER_VALUES) if roll == 3 else good
    if draw(st.booleans()):
        other = st.sampled_from(["x-delivery-count", REASON_HEADER, "batch"]) | st.text(
            min_size=1, max_size=20
        )
        extras = draw(st.dictionaries(other, HEADER_VALUES, max_size=3))
        headers = {**extras, **headers}
    return value, headers


async def settle_one(
    consumer: Consumer,
    publisher: ConfirmedPublisher,
    names: Names,
    work_queue: AbstractQueue,
    body: bytes,
    headers: dict[str, Any] | None,
    message_id: str | None = None,
) -> str:
    """Publish one message to the work queue, take it back and let the consumer settle it."""
    await publisher.publish(
        names.webhooks_exchange,
        WEBHOOK_ROUTING_KEY,
        body,
        message_id=message_id or hashlib.sha256(body).hexdigest(),
        headers=headers,
        content_type="application/json",
    )
    message = await work_queue.get(timeout=5)
    assert message.body == body
    return await consumer.process(message)


async def assert_settled_message(
    db: Database,
    work_queue: AbstractQueue,
    dead_queue: AbstractQueue,
    outcome: str,
    bodies: list[bytes],
    headers: dict[str, Any] | None,
) -> None:
    """The message of ``bodies`` was acked with every body in the ledger, or dead-lettered
    whole with a reason; nothing went back to the work queue."""
    event(f"outcome: {outcome}")
    assert outcome in {"acked", "dead_lettered"}, f"{outcome} for {bodies!r}, {headers!r}"
    assert await work_queue.get(fail=False) is None, "the message went back to the queue"
    if outcome == "dead_lettered":
        dead = await dead_queue.get(timeout=5)
        await dead.ack()
        assert dead.body == b"".join(bodies)
        reason = header_str(dead.headers, REASON_HEADER) or ""
        assert reason.startswith(("invalid_delivery: ", "checksum_mismatch: ")), reason
    else:
        for body in bodies:
            entry = await ledger_entry(db, hashlib.sha256(body).hexdigest())
            assert entry["status"] in {PROCESSED, FAILED}
    assert await dead_queue.get(fail=False) is None


@FUZZ
@given(message=amqp_messages())
async def test_every_message_is_acked_or_dead_lettered_never_requeued(
    db: Database,
    channel: Document,
    consumer: Consumer,
    publisher: ConfirmedPublisher,
    names: Names,
    work_queue: AbstractQueue,
    dead_queue: AbstractQueue,
    message: tuple[object, dict[str, Any] | None],
) -> None:
    value, headers = message
    body = as_body(value)
    outcome = await settle_one(consumer, publisher, names, work_queue, body, headers)
    await assert_settled_message(db, work_queue, dead_queue, outcome, [body], headers)


@st.composite
def micro_batches(draw: st.DrawFn) -> tuple[list[object], dict[str, Any]]:
    """A micro-batch as webhook-ingest publishes it (``batch_message``), its header mostly
    right, else with a size off, an entry missing or junk, or junk for the whole list."""
    values = draw(st.lists(BODIES, min_size=1, max_size=4))
    _, headers, _ = batch_message([delivery_of(as_body(value)) for value in values])
    entries: list[Any] = headers[BATCH_HEADER]
    match draw(st.integers(0, 5)):
        case 1:
            index = draw(st.integers(0, len(entries) - 1))
            entries[index]["size"] += draw(st.integers(-3, 3).filter(bool))
        case 2:
            del entries[draw(st.integers(0, len(entries) - 1))]
        case 3:
            entries[draw(st.integers(0, len(entries) - 1))] = draw(HEADER_VALUES)
        case 4:
            headers[BATCH_HEADER] = draw(HEADER_VALUES)
    return values, headers


@FUZZ
@given(batch=micro_batches())
async def test_every_micro_batch_is_acked_or_dead_lettered_never_requeued(
    db: Database,
    channel: Document,
    consumer: Consumer,
    publisher: ConfirmedPublisher,
    names: Names,
    work_queue: AbstractQueue,
    dead_queue: AbstractQueue,
    batch: tuple[list[object], dict[str, Any]],
) -> None:
    values, headers = batch
    bodies = [as_body(value) for value in values]
    body = b"".join(bodies)
    outcome = await settle_one(
        consumer, publisher, names, work_queue, body, headers, message_id="batch-fuzz"
    )
    await assert_settled_message(db, work_queue, dead_queue, outcome, bodies, headers)


# --- inputs that once crashed the consumer, pinned --------------------------------------------

WAMID = "wamid.HOSTILE"


def _image_webhook(content: str) -> bytes:
    """acme's webhook with one image message whose object is the raw JSON ``content``."""
    message = payloads.message("image", "4915", WAMID, {"id": "1"}, timestamp=1_700_000_000)
    body = orjson.dumps(payloads.webhook(ACME_NUMBER, messages=[message]))
    return body.replace(b'{"id":"1"}', content.encode())


def _typed_webhook(type_: str, content: str) -> bytes:
    message = payloads.message(type_, "4915", WAMID, "CONTENT", timestamp=1_700_000_000)
    body = orjson.dumps(payloads.webhook(ACME_NUMBER, messages=[message]))
    return body.replace(b'"CONTENT"', content.encode())


def _failed_status_webhook(code: str) -> bytes:
    status = payloads.status(WAMID, "failed", "4915", timestamp=1_700_000_000)
    body = orjson.dumps(payloads.webhook(ACME_NUMBER, statuses=[status]))
    return body.replace(b'"code":131026', f'"code":{code}'.encode())


POISON_BODIES = [
    pytest.param(
        _image_webhook('{"id":"1","n":18446744073709551615}'),
        id="uint64-in-content-OverflowError",
    ),
    pytest.param(_failed_status_webhook("9223372036854775808"), id="uint64-status-error-code"),
    pytest.param(_image_webhook('{"id":"1","a\\u0000b":1}'), id="nul-in-key-InvalidDocument"),
    pytest.param(_typed_webhook("a\x00b", '"scalar"'), id="nul-in-type-InvalidDocument"),
    pytest.param(
        _image_webhook('{"id":"1","n":' + "[" * 500 + "]" * 500 + "}"),
        id="nested-500-in-media-ValueError-serialization-depth",
    ),
    pytest.param(
        _typed_webhook("weird", "[" * 1000 + "]" * 1000),
        id="nested-1000-unknown-type-RecursionError",
    ),
]


@pytest.mark.parametrize("body", POISON_BODIES)
async def test_unstorable_content_is_recorded_as_failed(
    db: Database, channel: Document, processor: WebhookProcessor, body: bytes
) -> None:
    await assert_settled(db, processor, body)


async def test_an_unstorable_body_is_settled_not_requeued(
    db: Database,
    channel: Document,
    consumer: Consumer,
    publisher: ConfirmedPublisher,
    names: Names,
    work_queue: AbstractQueue,
) -> None:
    body = _image_webhook('{"id":"1","n":18446744073709551615}')
    headers = delivery_of(body).headers()
    outcome = await settle_one(consumer, publisher, names, work_queue, body, headers)
    assert outcome in {"acked", "dead_lettered"}


class WireBytes(str):
    """A string header that goes on the wire as exactly ``raw``, invalid UTF-8 included.

    pamqp encodes ``str`` as UTF-8 and refuses ``bytes``; publishers in other languages do
    send such strings, and pamqp hands them to the consumer as ``bytes``.
    """

    raw: bytes

    def __new__(cls, raw: bytes) -> WireBytes:
        value = super().__new__(cls, raw.decode("latin-1"))
        value.raw = raw
        return value

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


async def test_an_unstorable_body_does_not_hold_back_its_micro_batch(
    db: Database,
    channel: Document,
    consumer: Consumer,
    publisher: ConfirmedPublisher,
    names: Names,
    work_queue: AbstractQueue,
) -> None:
    good = delivery_of(_typed_webhook("text", '{"body":"hi"}'))
    poison = delivery_of(_image_webhook('{"id":"1","n":18446744073709551615}'))
    body, headers, message_id = batch_message([good, poison])

    outcome = await settle_one(
        consumer, publisher, names, work_queue, body, headers, message_id=message_id
    )

    assert outcome in {"acked", "dead_lettered"}
    assert (await ledger_entry(db, good.sha256))["status"] == PROCESSED


@pytest.mark.parametrize("name", ["sha256", "request_id", "received_at"])
async def test_a_non_utf8_header_is_dead_lettered(
    db: Database,
    channel: Document,
    consumer: Consumer,
    publisher: ConfirmedPublisher,
    names: Names,
    work_queue: AbstractQueue,
    name: str,
) -> None:
    body = _typed_webhook("text", '{"body":"hi"}')
    headers: dict[str, Any] = {**delivery_of(body).headers(), name: WireBytes(b"\xff")}
    await publisher.publish(names.webhooks_exchange, WEBHOOK_ROUTING_KEY, body, headers=headers)
    message = await work_queue.get(timeout=5)
    assert message.headers[name] == b"\xff"  # what a foreign publisher's header looks like

    assert await consumer.process(message) in {"acked", "dead_lettered"}


@pytest.mark.parametrize("received_at", ["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59"])
async def test_an_out_of_range_received_at_is_dead_lettered(
    db: Database,
    channel: Document,
    consumer: Consumer,
    publisher: ConfirmedPublisher,
    names: Names,
    work_queue: AbstractQueue,
    received_at: str,
) -> None:
    body = _typed_webhook("text", '{"body":"hi"}')
    headers = {**delivery_of(body).headers(), "received_at": received_at}
    outcome = await settle_one(consumer, publisher, names, work_queue, body, headers)
    assert outcome in {"acked", "dead_lettered"}
