from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inbox_api.previews import preview
from inbox_common.contracts.webhook import (
    InboundMessage,
    InvalidEnvelope,
    WebhookEnvelope,
    iter_changes,
    parse_envelope,
)
from inbox_sandbox import payloads

PHONE_NUMBER_ID = "106540352242922"
WA_ID = "16505551234"
WAMID = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA="
TARGET = "wamid.HBgLMTQxMjU1NTA4MjkVAgASGBQzQUNCNjk5RDUwNUZGMUZEM0VBRAA="
TS = 1750090702


def _encode(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body)


def _single_message(raw_message: dict[str, Any]) -> InboundMessage:
    body = payloads.webhook(
        PHONE_NUMBER_ID,
        contacts=[payloads.contact(WA_ID, "Sheena Nelson")],
        messages=[raw_message],
    )
    envelope = parse_envelope(_encode(body))
    [event] = list(iter_changes(envelope))
    [parsed] = event.messages
    return parsed


def _msg(type_: str, content: Any, *, reply_to: str | None = None) -> dict[str, Any]:
    return payloads.message(type_, WA_ID, WAMID, content, timestamp=TS, reply_to=reply_to)


def _media(type_: str, **fields: Any) -> dict[str, Any]:
    return payloads.media_message(
        type_, WA_ID, WAMID, timestamp=TS, media_id="1003383421387256", **fields
    )


UNSUPPORTED_ERROR = {
    "code": 131051,
    "title": "Message type unknown",
    "message": "Message type unknown",
    "error_data": {"details": "Message type is currently not supported."},
}

VCARD = {
    "name": {"formatted_name": "Barbara Johnson", "first_name": "Barbara"},
    "phones": [{"phone": "+1 (940) 555-1234", "wa_id": "19405551234", "type": "HOME"}],
}


def _unsupported() -> dict[str, Any]:
    raw = _msg("unsupported", {"type": "edit"})
    raw["errors"] = [UNSUPPORTED_ERROR]
    return raw


def _forwarded_text() -> dict[str, Any]:
    raw = _msg("text", {"body": "forwarded thing"})
    raw["context"] = {"forwarded": True, "frequently_forwarded": True}
    return raw


INBOUND_CASES: list[tuple[str, dict[str, Any], dict[str, Any], str, str | None]] = [
    ("text", _msg("text", {"body": "hi"}), {"body": "hi"}, "hi", None),
    (
        "image",
        _media("image", caption="look at this"),
        {"caption": "look at this", "mime_type": "image/jpeg"},
        "look at this",
        None,
    ),
    ("image-no-caption", _media("image"), {"mime_type": "image/jpeg"}, "[image]", None),
    ("video", _media("video"), {"mime_type": "video/mp4"}, "[video]", None),
    ("audio", _media("audio", voice=False), {"voice": False}, "[audio]", None),
    ("voice", _media("audio", voice=True), {"voice": True}, "[voice message]", None),
    (
        "document",
        _media("document", filename="invoice.pdf"),
        {"filename": "invoice.pdf", "mime_type": "application/pdf"},
        "[document] invoice.pdf",
        None,
    ),
    ("sticker", _media("sticker", animated=False), {"animated": False}, "[sticker]", None),
    (
        "location",
        _msg(
            "location",
            {
                "address": "101 Forest Ave, Palo Alto, CA 94301",
                "latitude": 37.44221496582,
                "longitude": -122.16165924072,
                "name": "Philz Coffee",
                "url": "https://philzcoffee.com/",
            },
        ),
        {"name": "Philz Coffee", "latitude": 37.44221496582},
        "[location] Philz Coffee",
        None,
    ),
    (
        "contacts",
        _msg("contacts", [VCARD]),
        {"contacts": [VCARD]},
        "[contact] Barbara Johnson",
        None,
    ),
    (
        "contacts-several",
        _msg("contacts", [VCARD, VCARD, VCARD]),
        {},
        "[contact] Barbara Johnson (+2 more)",
        None,
    ),
    (
        "interactive-button-reply",
        _msg(
            "interactive",
            {"type": "button_reply", "button_reply": {"id": "yes-1", "title": "Yes, please"}},
            reply_to=TARGET,
        ),
        {"type": "button_reply", "button_reply": {"id": "yes-1", "title": "Yes, please"}},
        "Yes, please",
        TARGET,
    ),
    (
        "interactive-list-reply",
        _msg(
            "interactive",
            {
                "type": "list_reply",
                "list_reply": {"id": "row-2", "title": "Express", "description": "1-2 days"},
            },
            reply_to=TARGET,
        ),
        {"list_reply": {"id": "row-2", "title": "Express", "description": "1-2 days"}},
        "Express",
        TARGET,
    ),
    (
        "interactive-nfm-reply",
        _msg(
            "interactive",
            {
                "type": "nfm_reply",
                "nfm_reply": {"name": "flow", "body": "Sent", "response_json": '{"a": 1}'},
            },
        ),
        {"nfm_reply": {"name": "flow", "body": "Sent", "response_json": '{"a": 1}'}},
        "[form response]",
        None,
    ),
    (
        "button",
        _msg("button", {"payload": "unsubscribe", "text": "Unsubscribe"}, reply_to=TARGET),
        {"payload": "unsubscribe", "text": "Unsubscribe"},
        "Unsubscribe",
        TARGET,
    ),
    (
        "reaction",
        payloads.reaction_message(WA_ID, WAMID, TARGET, "\N{THUMBS UP SIGN}", timestamp=TS),
        {"message_id": TARGET, "emoji": "\N{THUMBS UP SIGN}"},
        "[reaction] \N{THUMBS UP SIGN}",
        None,
    ),
    (
        "reaction-removed",
        payloads.reaction_message(WA_ID, WAMID, TARGET, None, timestamp=TS),
        {"message_id": TARGET},
        "[reaction removed]",
        None,
    ),
    (
        "reaction-empty-emoji",
        _msg("reaction", {"message_id": TARGET, "emoji": ""}),
        {"message_id": TARGET, "emoji": ""},
        "[reaction removed]",
        None,
    ),
    (
        "reply",
        payloads.text_message(WA_ID, WAMID, "about that", timestamp=TS, reply_to=TARGET),
        {"body": "about that"},
        "about that",
        TARGET,
    ),
    ("forwarded", _forwarded_text(), {"body": "forwarded thing"}, "forwarded thing", None),
    (
        "unsupported",
        _unsupported(),
        {"type": "edit", "errors": [UNSUPPORTED_ERROR]},
        "[unsupported message]",
        None,
    ),
    (
        "system",
        _msg(
            "system",
            {
                "body": "User Sheena Nelson changed from 16505551234 to 12195555358",
                "wa_id": "12195555358",
                "type": "user_changed_number",
            },
        ),
        {"type": "user_changed_number"},
        "User Sheena Nelson changed from 16505551234 to 12195555358",
        None,
    ),
    (
        "order",
        _msg("order", {"catalog_id": "c1", "product_items": [{"product_retailer_id": "p"}] * 3}),
        {"catalog_id": "c1"},
        "[order] 3 items",
        None,
    ),
    ("request-welcome", _msg("request_welcome", None), {}, "[request_welcome]", None),
    (
        "future-type",
        _msg("poll_vote", {"poll_id": "p-9", "options": ["a", "b"]}),
        {"poll_id": "p-9", "options": ["a", "b"]},
        "[poll_vote]",
        None,
    ),
]


@pytest.mark.parametrize(
    ("raw_message", "content_subset", "expected_preview", "reply_to"),
    [pytest.param(*case[1:], id=case[0]) for case in INBOUND_CASES],
)
def test_inbound_message_types(
    raw_message: dict[str, Any],
    content_subset: dict[str, Any],
    expected_preview: str,
    reply_to: str | None,
) -> None:
    message = _single_message(raw_message)

    assert message.from_ == WA_ID
    assert message.id == WAMID
    assert message.timestamp == datetime.fromtimestamp(TS, tz=UTC)
    assert message.type == raw_message["type"]
    assert content_subset.items() <= message.content.items()
    assert preview(message) == expected_preview
    assert message.reply_to == reply_to


def test_content_is_the_raw_object_meta_sent() -> None:
    raw = _media("image", caption="hi")
    raw["image"]["url"] = "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1"
    raw["image"]["new_media_flag"] = {"nested": [1, 2]}

    message = _single_message(raw)

    assert message.content == raw["image"]


def test_reaction_removal_flag() -> None:
    removed = _single_message(payloads.reaction_message(WA_ID, WAMID, TARGET, None, timestamp=TS))
    empty = _single_message(_msg("reaction", {"message_id": TARGET, "emoji": ""}))
    kept = _single_message(payloads.reaction_message(WA_ID, WAMID, TARGET, "❤️", timestamp=TS))
    text = _single_message(_msg("text", {"body": ""}))

    assert removed.is_reaction_removal
    assert empty.is_reaction_removal
    assert not kept.is_reaction_removal
    assert not text.is_reaction_removal


def test_preview_is_one_line_and_truncated() -> None:
    long_body = "line one\n\nline two " + "x" * 500
    message = _single_message(_msg("text", {"body": long_body}))

    assert len(preview(message)) == 200
    assert preview(message).startswith("line one line two x")
    assert preview(message).endswith("…")


def test_context_fields_are_parsed() -> None:
    raw = payloads.text_message(WA_ID, WAMID, "is it in stock?", timestamp=TS)
    raw["context"] = {
        "from": "15550000000",
        "id": TARGET,
        "referred_product": {"catalog_id": "c1", "product_retailer_id": "sku-1"},
    }
    context = _single_message(raw).context

    assert context is not None
    assert context.from_ == "15550000000"
    assert context.referred_product == {"catalog_id": "c1", "product_retailer_id": "sku-1"}
    assert context.forwarded is None


def test_unknown_fields_are_kept_everywhere() -> None:
    body = payloads.text_webhook(PHONE_NUMBER_ID, WA_ID, "Sheena", "hi", wamid=WAMID, timestamp=TS)
    entry = body["entry"][0]
    entry["time"] = 1750090702
    value = entry["changes"][0]["value"]
    value["brand_new_value_key"] = {"a": [1, 2, 3]}
    value["contacts"][0]["identity_key_hash"] = "DF2lS5v2W6x="
    value["contacts"][0]["profile"]["username"] = "@sheena"
    message = value["messages"][0]
    message["from_user_id"] = "US.16505551234"
    message["group_id"] = "g-1"
    message["text"]["formatting"] = "bold"

    envelope = parse_envelope(_encode(body))
    parsed_value = envelope.entry[0].changes[0].value
    parsed_message = parsed_value.messages[0]

    assert envelope.entry[0].model_extra == {"time": 1750090702}
    assert parsed_value.model_extra == {"brand_new_value_key": {"a": [1, 2, 3]}}
    assert parsed_value.contacts[0].model_extra == {"identity_key_hash": "DF2lS5v2W6x="}
    assert parsed_message.from_user_id == "US.16505551234"
    assert parsed_message.model_extra == {"group_id": "g-1"}
    assert parsed_message.content == {"body": "hi", "formatting": "bold"}
    dumped = envelope.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    assert dumped == body


def test_dumped_envelope_reparses_to_the_same_model() -> None:
    body = payloads.webhook(
        PHONE_NUMBER_ID,
        messages=[_media("audio", voice=True)],
        statuses=[payloads.status(TARGET, "read", WA_ID, timestamp=TS)],
    )
    envelope = parse_envelope(_encode(body))

    again = parse_envelope(orjson.dumps(envelope.model_dump(mode="json", by_alias=True)))

    assert again == envelope


def test_contact_identity_fields() -> None:
    body = payloads.webhook(PHONE_NUMBER_ID, contacts=[payloads.contact(WA_ID, "Sheena")])
    body["entry"][0]["changes"][0]["value"]["contacts"].append(
        {"profile": {"name": "Pablo M.", "username": "@pablo"}, "wa_id": "", "user_id": "US.x"}
    )

    [event] = iter_changes(parse_envelope(_encode(body)))

    first, second = event.contacts
    assert (first.wa_id, first.user_id) == (WA_ID, f"US.{WA_ID}")
    assert first.profile is not None
    assert first.profile.name == "Sheena"
    assert (second.wa_id, second.user_id) == ("", "US.x")


def test_statuses_including_failed_with_error_details() -> None:
    body = payloads.webhook(
        PHONE_NUMBER_ID,
        statuses=[
            payloads.status(TARGET, "sent", WA_ID, timestamp=TS),
            payloads.status(WAMID, "failed", WA_ID, timestamp=TS + 1),
        ],
    )

    [event] = iter_changes(parse_envelope(_encode(body)))

    sent, failed = event.statuses
    assert sent.status == "sent"
    assert sent.timestamp == datetime(2025, 6, 16, 16, 18, 22, tzinfo=UTC)
    assert sent.recipient_id == WA_ID
    assert sent.pricing is not None
    assert sent.pricing["category"] == "service"
    assert sent.errors == []
    assert failed.status == "failed"
    [error] = failed.errors
    assert error.code == 131026
    assert error.title == "Message undeliverable"
    assert error.error_data is not None
    assert error.error_data.details == "Message Undeliverable."
    assert error.href is not None


def test_value_level_errors() -> None:
    body = payloads.webhook(PHONE_NUMBER_ID)
    body["entry"][0]["changes"][0]["value"]["errors"] = [
        payloads.meta_error(130429, "Rate limit hit", "Too many messages")
    ]

    [event] = iter_changes(parse_envelope(_encode(body)))

    [error] = event.errors
    assert (error.code, error.message) == (130429, "Rate limit hit")
    assert event.messages == ()
    assert event.statuses == ()


def test_non_messages_field_parses_with_its_own_keys() -> None:
    body = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "time": 1750090702,
                "changes": [
                    {
                        "field": "message_template_status_update",
                        "value": {"event": "APPROVED", "message_template_id": 12345},
                    }
                ],
            }
        ],
    }

    [event] = iter_changes(parse_envelope(_encode(body)))

    assert event.field == "message_template_status_update"
    assert event.phone_number_id is None
    assert event.value.model_extra == {"event": "APPROVED", "message_template_id": 12345}


def test_batched_entries_and_changes_are_flattened_in_order() -> None:
    def change(number_id: str, tag: str) -> dict[str, Any]:
        one_change = payloads.webhook(
            number_id,
            display_phone_number=f"1555{number_id}",
            contacts=[payloads.contact(WA_ID, "Sheena")],
            messages=[
                payloads.text_message(WA_ID, f"wamid.{tag}.m{i}", f"{tag}-{i}", timestamp=TS + i)
                for i in range(3)
            ],
            statuses=[payloads.status(f"wamid.{tag}.s{i}", "delivered", WA_ID) for i in range(2)],
        )
        changed: dict[str, Any] = one_change["entry"][0]["changes"][0]
        return changed

    body = {
        "object": "whatsapp_business_account",
        "entry": [
            {"id": "WABA_1", "changes": [change("111", "a"), change("222", "b")]},
            {"id": "WABA_2", "changes": [change("333", "c"), change("444", "d")]},
        ],
    }

    events = list(iter_changes(parse_envelope(_encode(body))))

    assert [(e.waba_id, e.phone_number_id) for e in events] == [
        ("WABA_1", "111"),
        ("WABA_1", "222"),
        ("WABA_2", "333"),
        ("WABA_2", "444"),
    ]
    assert [e.display_phone_number for e in events] == ["1555111", "1555222", "1555333", "1555444"]
    assert [preview(m) for e in events for m in e.messages] == [
        f"{tag}-{i}" for tag in "abcd" for i in range(3)
    ]
    assert [s.id for e in events for s in e.statuses] == [
        f"wamid.{tag}.s{i}" for tag in "abcd" for i in range(2)
    ]
    assert all(e.field == "messages" and len(e.contacts) == 1 for e in events)


def test_samples_are_meta_shaped() -> None:
    wamid = payloads.new_wamid()
    body = payloads.text_webhook(PHONE_NUMBER_ID, WA_ID, "Sheena", "hello", wamid=wamid)

    value = body["entry"][0]["changes"][0]["value"]

    assert wamid.startswith("wamid.HBgL")
    assert payloads.new_wamid() != wamid
    assert set(value) == {"messaging_product", "metadata", "contacts", "messages"}
    assert value["messages"][0]["timestamp"].isdigit()
    assert payloads.media_message("image", WA_ID, WAMID) == payloads.media_message(
        "image", WA_ID, WAMID
    )


@pytest.mark.parametrize(
    ("raw", "reason", "fragment"),
    [
        pytest.param(
            b'{"object": "x", "entry": [', "invalid_json", "not valid JSON", id="truncated"
        ),
        pytest.param(b"", "invalid_json", "not valid JSON", id="empty"),
        pytest.param(b'{"object": "\xff\xfe"}', "invalid_json", "UTF-8", id="non-utf8"),
        pytest.param(b"[" * 5000 + b"]" * 5000, "invalid_json", "depth", id="deep-nesting"),
        pytest.param(b'{"n": ' + b"9" * 400 + b"}", "invalid_json", "number", id="huge-number"),
        pytest.param(b"[1, 2]", "not_an_object", "an array", id="top-level-list"),
        pytest.param(b'"hello"', "not_an_object", "expected an object", id="top-level-string"),
        pytest.param(b'{"object": "whatsapp_business_account"}', "schema", "entry", id="no-entry"),
    ],
)
def test_parse_envelope_rejects(raw: bytes, reason: str, fragment: str) -> None:
    with pytest.raises(InvalidEnvelope) as caught:
        parse_envelope(raw)

    assert caught.value.reason == reason
    assert fragment in str(caught.value)


def test_schema_error_names_the_location_not_the_value() -> None:
    body = payloads.text_webhook(PHONE_NUMBER_ID, WA_ID, "Sheena", "secret words", timestamp=TS)
    body["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] = "secret words"

    with pytest.raises(InvalidEnvelope) as caught:
        parse_envelope(_encode(body))

    message = str(caught.value)
    assert caught.value.reason == "schema"
    assert "entry.0.changes.0.value.messages.0.timestamp" in message
    assert "secret" not in message


@pytest.mark.parametrize("timestamp", ["1" * 13, "-5", "12.5", "", True, 2**62])
def test_bad_timestamps_are_schema_errors(timestamp: object) -> None:
    body = payloads.text_webhook(PHONE_NUMBER_ID, WA_ID, "Sheena", "hi")
    body["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] = timestamp

    with pytest.raises(InvalidEnvelope) as caught:
        parse_envelope(_encode(body))

    assert caught.value.reason == "schema"


def test_integer_timestamp_is_accepted() -> None:
    body = payloads.text_webhook(PHONE_NUMBER_ID, WA_ID, "Sheena", "hi")
    body["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] = TS

    [event] = iter_changes(parse_envelope(_encode(body)))

    assert event.messages[0].timestamp == datetime.fromtimestamp(TS, tz=UTC)


def _parse_or_invalid(raw: bytes) -> None:
    try:
        result = parse_envelope(raw)
    except InvalidEnvelope as exc:
        reason = exc.reason
    else:
        assert isinstance(result, WebhookEnvelope)
        return
    assert reason in {"invalid_json", "not_an_object", "schema"}


@settings(max_examples=200, deadline=None, database=None)
@given(st.binary(max_size=256))
def test_arbitrary_bytes_never_raise_anything_else(raw: bytes) -> None:
    _parse_or_invalid(raw)


_JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["whatsapp_business_account", "messages", "text", "1750090702"])
)
_META_KEYS = [
    "object",
    "entry",
    "id",
    "changes",
    "field",
    "value",
    "messages",
    "statuses",
    "contacts",
    "from",
    "timestamp",
    "type",
    "text",
    "body",
    "errors",
    "code",
    "metadata",
    "status",
]
_KEYS = st.sampled_from(_META_KEYS) | st.text(max_size=8)
_JSON_VALUES = st.recursive(
    _JSON_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_KEYS, children, max_size=5),
    max_leaves=30,
)


# Paths into a valid body where an arbitrary value is planted, to reach the schema checks.
_PLANT_PATHS: list[tuple[str | int, ...]] = [
    (),
    ("entry",),
    ("entry", 0, "changes", 0, "value"),
    ("entry", 0, "changes", 0, "value", "metadata"),
    ("entry", 0, "changes", 0, "value", "contacts", 0),
    ("entry", 0, "changes", 0, "value", "messages", 0),
    ("entry", 0, "changes", 0, "value", "messages", 0, "timestamp"),
    ("entry", 0, "changes", 0, "value", "messages", 0, "type"),
    ("entry", 0, "changes", 0, "value", "messages", 0, "text"),
    ("entry", 0, "changes", 0, "value", "messages", 0, "context"),
    ("entry", 0, "changes", 0, "value", "messages", 0, "errors"),
    ("entry", 0, "changes", 0, "value", "statuses", 0, "errors", 0, "code"),
]


def _planted(path: tuple[str | int, ...], value: Any) -> Any:
    body: Any = payloads.webhook(
        PHONE_NUMBER_ID,
        contacts=[payloads.contact(WA_ID, "Sheena")],
        messages=[payloads.text_message(WA_ID, WAMID, "hi", timestamp=TS)],
        statuses=[payloads.status(TARGET, "failed", WA_ID, timestamp=TS)],
    )
    if not path:
        return value
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return body


@settings(max_examples=200, deadline=None, database=None)
@given(_JSON_VALUES | st.builds(_planted, st.sampled_from(_PLANT_PATHS), _JSON_VALUES))
def test_arbitrary_json_never_raises_anything_else(value: Any) -> None:
    _parse_or_invalid(orjson.dumps(value))
