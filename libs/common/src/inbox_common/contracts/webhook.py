"""Meta's WhatsApp Cloud API webhook envelope (the ``messages`` field and its siblings, and
the business-account fields ``message_template_status_update`` and
``phone_number_quality_update``).

Every model keeps the fields it does not know in ``model_extra``: Meta adds fields without
notice (``user_id``, ``from_user_id``, ``identity_key_hash``, media ``url`` all arrived that
way), and the raw body is the record of truth, so nothing is ever dropped on parsing.
Only the identity of a message or status is required; content shapes are optional, because
rejecting a whole batch over one surprising sub-object would lose customer messages.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, ValidationError

__all__ = [
    "ACCOUNT_FIELDS",
    "MEDIA_TYPES",
    "QUALITY_FIELD",
    "TEMPLATE_STATUS_FIELD",
    "AccountUpdate",
    "ButtonContent",
    "Change",
    "ChangeEvent",
    "ChangeValue",
    "Contact",
    "EditContent",
    "EditedMessage",
    "Entry",
    "ErrorData",
    "InboundMessage",
    "InteractiveContent",
    "InteractiveReply",
    "InvalidEnvelope",
    "LocationContent",
    "MediaContent",
    "MessageContent",
    "MessageContext",
    "MessageEcho",
    "MessageStatus",
    "MetaError",
    "Metadata",
    "PhoneNumberQualityUpdate",
    "Profile",
    "ReactionContent",
    "RevokeContent",
    "SystemContent",
    "TemplateInfo",
    "TemplateStatusUpdate",
    "TextContent",
    "UnixTimestamp",
    "WebhookEnvelope",
    "account_update",
    "iter_changes",
    "parse_envelope",
]

# Twelve digits reach the year 33658; longer strings are not timestamps and must not be fed
# to int() (Python refuses to convert more than 4300 digits).
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")


def _from_unix_seconds(value: object) -> object:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, str) and _UNIX_SECONDS.fullmatch(value):
        seconds = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    else:
        raise ValueError("timestamp must be unix seconds (a string of digits or an integer)")
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError("timestamp is out of range") from None


def _to_unix_seconds(value: datetime) -> str:
    return str(int(value.timestamp()))


# Dumped back as Meta's unix-seconds string in JSON mode, so a dumped envelope re-parses.
UnixTimestamp = Annotated[
    datetime,
    BeforeValidator(_from_unix_seconds),
    PlainSerializer(_to_unix_seconds, return_type=str, when_used="json"),
]


class _MetaObject(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Metadata(_MetaObject):
    """The business phone number the change is about."""

    phone_number_id: str
    display_phone_number: str | None = None


class Profile(_MetaObject):
    """A WhatsApp user's public profile; ``username`` when the user adopted one."""

    name: str | None = None
    username: str | None = None


class Contact(_MetaObject):
    """The user behind the messages or statuses of a change.

    ``user_id`` is the business-scoped user id (BSUID); ``wa_id`` (the phone) is missing (or
    empty) when Meta may not share it, for users with a username. ``parent_user_id`` is the
    BSUID at the level of a managed business portfolio (``ENT.…``).
    """

    wa_id: str | None = None
    user_id: str | None = None
    parent_user_id: str | None = None
    profile: Profile | None = None


class ErrorData(_MetaObject):
    """Extra detail of a Meta error."""

    details: str | None = None


class MetaError(_MetaObject):
    """An error as Meta reports it in webhooks (on the value, a message or a status)."""

    code: int
    title: str | None = None
    message: str | None = None
    error_data: ErrorData | None = None
    href: str | None = None


class MessageContext(_MetaObject):
    """What an inbound message replies to, or how it was forwarded."""

    from_: str | None = Field(default=None, alias="from")
    id: str | None = None
    forwarded: bool | None = None
    frequently_forwarded: bool | None = None
    referred_product: dict[str, Any] | None = None


class TextContent(_MetaObject):
    """A text message."""

    body: str | None = None


class MediaContent(_MetaObject):
    """An image, video, audio, sticker or document; download it by ``id``."""

    id: str | None = None
    mime_type: str | None = None
    sha256: str | None = None
    caption: str | None = None
    filename: str | None = None
    voice: bool | None = None
    animated: bool | None = None
    url: str | None = None


class LocationContent(_MetaObject):
    """A shared location."""

    latitude: float | None = None
    longitude: float | None = None
    name: str | None = None
    address: str | None = None
    url: str | None = None


class InteractiveReply(_MetaObject):
    """The button or list row a user picked."""

    id: str | None = None
    title: str | None = None
    description: str | None = None


class InteractiveContent(_MetaObject):
    """A reply to an interactive message (buttons, list, or a Flow's ``nfm_reply``)."""

    type: str | None = None
    button_reply: InteractiveReply | None = None
    list_reply: InteractiveReply | None = None
    nfm_reply: dict[str, Any] | None = None


class ButtonContent(_MetaObject):
    """A tap on a template's quick-reply button."""

    payload: str | None = None
    text: str | None = None


class SystemContent(_MetaObject):
    """A change of the user's identity (``type``: ``user_changed_number``,
    ``user_changed_user_id``): the new ``wa_id`` / ``user_id`` and the previous BSUID."""

    body: str | None = None
    type: str | None = None
    wa_id: str | None = None
    user_id: str | None = None
    parent_user_id: str | None = None
    previous_user_id: str | None = None
    previous_parent_user_id: str | None = None


class ReactionContent(_MetaObject):
    """A reaction to an earlier message; no (or an empty) emoji removes it."""

    message_id: str | None = None
    emoji: str | None = None


class RevokeContent(_MetaObject):
    """The user (or, in an echo, the business) deleted an earlier message for everyone."""

    original_message_id: str | None = None


MEDIA_TYPES = frozenset({"image", "video", "audio", "sticker", "document"})
# Fields of MessageContent that hold the object named by ``type``.
_CONTENT_FIELDS = MEDIA_TYPES | {
    "text", "location", "contacts", "interactive", "button", "reaction", "system", "order",
    "edit", "revoke",
}  # fmt: skip


class MessageContent(_MetaObject):
    """A message's ``type`` and the object it names: what an inbound message, an echo and
    the new version of an edited message have in common.

    ``type`` stays a plain string: Meta adds types (``request_welcome``, ``unsupported``
    with a sub-type, ...) and the object named by an unknown type lands in ``model_extra``.
    """

    type: str
    context: MessageContext | None = None
    errors: list[MetaError] = []
    text: TextContent | None = None
    image: MediaContent | None = None
    video: MediaContent | None = None
    audio: MediaContent | None = None
    sticker: MediaContent | None = None
    document: MediaContent | None = None
    location: LocationContent | None = None
    contacts: list[dict[str, Any]] | None = None
    interactive: InteractiveContent | None = None
    button: ButtonContent | None = None
    reaction: ReactionContent | None = None
    referral: dict[str, Any] | None = None
    system: SystemContent | None = None
    order: dict[str, Any] | None = None
    edit: EditContent | None = None
    revoke: RevokeContent | None = None

    @property
    def content(self) -> dict[str, Any]:
        """The object named by ``type`` as Meta sent it (extra fields included), or ``{}``.

        A list (``contacts``) or a scalar is wrapped as ``{type: value}``; ``unsupported``
        carries the message's ``errors``, which are the only explanation Meta gives.
        """
        if self.type in _CONTENT_FIELDS:
            raw: object = getattr(self, self.type)
        else:
            raw = (self.model_extra or {}).get(self.type)
        content = _as_json(raw)
        if not isinstance(content, dict):
            content = {} if content is None else {self.type: content}
        if self.type == "unsupported":
            content["errors"] = _as_json(self.errors)
        return content

    @property
    def reply_to(self) -> str | None:
        """The wamid this message quotes, if any."""
        return self.context.id if self.context is not None else None

    @property
    def is_reaction_removal(self) -> bool:
        """Whether this is a reaction whose emoji was taken back."""
        return self.type == "reaction" and not (self.reaction and self.reaction.emoji)


class EditedMessage(MessageContent):
    """The new version of an edited message: a type and its object (a text, or a media
    object with its new caption), no id or timestamp of its own. ``type`` is empty when Meta
    left it out (the edit then says nothing that can be shown)."""

    type: str = ""


class EditContent(_MetaObject):
    """The user (or, in an echo, the business) edited an earlier message: its wamid and the
    whole new version of it."""

    original_message_id: str | None = None
    message: EditedMessage | None = None


class InboundMessage(MessageContent):
    """A message a WhatsApp user sent to the business (``from`` its phone, ``from_user_id``
    its BSUID). An ``edit`` or a ``revoke`` changes an earlier message instead of adding
    one."""

    from_: str | None = Field(default=None, alias="from")
    from_user_id: str | None = None
    id: str
    timestamp: UnixTimestamp


class MessageEcho(InboundMessage):
    """A message the business sent from the WhatsApp Business app or a companion device
    (``smb_message_echoes``): ``from`` is the business's display number, ``to`` the
    customer's phone as the business typed it (maybe with a ``+``), ``to_user_id`` the
    customer's BSUID when Meta gives one. An ``edit`` or a ``revoke`` echo changes an
    earlier message of the business."""

    to: str | None = None
    to_user_id: str | None = None
    to_parent_user_id: str | None = None


# MessageContent names EditContent, which holds an EditedMessage (a MessageContent): the
# models are complete only once all three exist.
for _model in (MessageContent, EditedMessage, EditContent, InboundMessage, MessageEcho):
    _model.model_rebuild()


def _as_json(value: object) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(value, list):
        return [_as_json(item) for item in value]
    if isinstance(value, dict):
        return dict(value)
    return value


class MessageStatus(_MetaObject):
    """A delivery status of a message the business sent (sent, delivered, read, failed...)."""

    id: str
    status: str
    timestamp: UnixTimestamp
    recipient_id: str | None = None
    recipient_user_id: str | None = None
    biz_opaque_callback_data: str | None = None
    conversation: dict[str, Any] | None = None
    pricing: dict[str, Any] | None = None
    errors: list[MetaError] = []


class ChangeValue(_MetaObject):
    """The payload of one change: ``messages`` (and ``statuses``) for the ``messages`` field,
    ``message_echoes`` for ``smb_message_echoes``; other fields carry other keys (extras)."""

    messaging_product: str | None = None
    metadata: Metadata | None = None
    contacts: list[Contact] = []
    messages: list[InboundMessage] = []
    statuses: list[MessageStatus] = []
    message_echoes: list[MessageEcho] = []
    errors: list[MetaError] = []


class Change(_MetaObject):
    """One change of a subscribed webhook field."""

    field: str
    value: ChangeValue


class Entry(_MetaObject):
    """The changes of one WhatsApp Business Account."""

    id: str
    changes: list[Change]


class WebhookEnvelope(_MetaObject):
    """The body of one webhook POST; it may batch several entries and changes."""

    object: str
    entry: list[Entry]


class InvalidEnvelope(ValueError):  # noqa: N818 - named for what the body is, like ValueError
    """A webhook body that is not a Meta envelope; ``reason`` is a short machine code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def parse_envelope(raw: bytes) -> WebhookEnvelope:
    """Parse a raw webhook body; raise ``InvalidEnvelope`` and nothing else on bad input.

    Reasons: ``invalid_json`` (not UTF-8 JSON, nested deeper than 1024, a number out of
    range), ``not_an_object`` and ``schema``. Messages name locations, never values, so they
    can be logged without leaking message content.
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEnvelope("invalid_json", f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        kind = "an array" if isinstance(data, list) else f"a JSON {type(data).__name__}"
        raise InvalidEnvelope("not_an_object", f"body is {kind}, expected an object")
    try:
        return WebhookEnvelope.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        first = errors[0]
        where = ".".join(str(part) for part in first["loc"]) or "<root>"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        message = f"body does not match the webhook schema at {where}: {first['msg']}{more}"
        raise InvalidEnvelope("schema", message) from None


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One change of an envelope with its business phone number, flattened for consumers.

    ``waba_id`` is the entry's id (the WhatsApp Business Account); ``time`` is the entry's
    ``time`` (when Meta triggered the webhook: business-account fields carry it), or None.
    """

    waba_id: str
    phone_number_id: str | None
    display_phone_number: str | None
    field: str
    contacts: tuple[Contact, ...]
    messages: tuple[InboundMessage, ...]
    statuses: tuple[MessageStatus, ...]
    errors: tuple[MetaError, ...]
    value: ChangeValue
    echoes: tuple[MessageEcho, ...] = ()
    time: datetime | None = None


def iter_changes(envelope: WebhookEnvelope) -> Iterator[ChangeEvent]:
    """Yield every change of every entry, in the order Meta sent them."""
    for entry in envelope.entry:
        time = _entry_time(entry)
        for change in entry.changes:
            value = change.value
            metadata = value.metadata
            yield ChangeEvent(
                waba_id=entry.id,
                phone_number_id=metadata.phone_number_id if metadata else None,
                display_phone_number=metadata.display_phone_number if metadata else None,
                field=change.field,
                contacts=tuple(value.contacts),
                messages=tuple(value.messages),
                statuses=tuple(value.statuses),
                errors=tuple(value.errors),
                value=value,
                echoes=tuple(value.message_echoes),
                time=time,
            )


def _entry_time(entry: Entry) -> datetime | None:
    """The entry's ``time``, read leniently: it is not validated with the envelope, since a
    surprising value there must not fail a body full of customer messages."""
    try:
        parsed = _from_unix_seconds((entry.model_extra or {}).get("time"))
    except ValueError:
        return None
    return parsed if isinstance(parsed, datetime) else None


# --- business-account fields ----------------------------------------------------------------

TEMPLATE_STATUS_FIELD = "message_template_status_update"
QUALITY_FIELD = "phone_number_quality_update"
# Changes about the WhatsApp Business Account rather than a number's messages: the entry's id
# is the WABA, and the value has no ``metadata.phone_number_id``.
ACCOUNT_FIELDS = frozenset({TEMPLATE_STATUS_FIELD, QUALITY_FIELD})


class TemplateInfo(_MetaObject):
    """``other_info`` of a template event (a pause, an unpause, a lock): Meta's ``title``
    (``FIRST_PAUSE``, ``SECOND_PAUSE``, ``UNPAUSE``...) and its words for it."""

    title: str | None = None
    description: str | None = None


class TemplateStatusUpdate(_MetaObject):
    """``message_template_status_update``: a template's review or lifecycle event.

    ``event`` stays a plain string (APPROVED, REJECTED, PENDING, PAUSED, DISABLED, FLAGGED,
    REINSTATED, PENDING_DELETION, ARCHIVED, ... : Meta adds values). Meta sends the template
    id as a JSON number; ``reason`` is ``NONE`` for a pause and null for a deletion.
    """

    event: str
    message_template_id: int | str | None = None
    message_template_name: str | None = None
    message_template_language: str | None = None
    message_template_category: str | None = None
    reason: str | None = None
    other_info: TemplateInfo | None = None

    @property
    def template_id(self) -> str | None:
        """The id as text: Graph ids are strings everywhere else, and text never overflows."""
        return None if self.message_template_id is None else str(self.message_template_id)


class PhoneNumberQualityUpdate(_MetaObject):
    """``phone_number_quality_update``: a number's quality or messaging limit changed.

    ``event`` stays a plain string (FLAGGED, UNFLAGGED, DOWNGRADE, UPGRADE, ONBOARDING,
    THROUGHPUT_UPGRADE, ...); limits are Meta's tiers (TIER_250, TIER_1K, TIER_10K,
    TIER_UNLIMITED, ...). ``display_phone_number`` is digits only, as Meta writes it.
    """

    event: str
    display_phone_number: str | None = None
    current_limit: str | None = None
    old_limit: str | None = None
    max_daily_conversations_per_business: str | None = None


AccountUpdate = TemplateStatusUpdate | PhoneNumberQualityUpdate


def account_update(change: ChangeEvent) -> AccountUpdate:
    """The value of a business-account change (``field`` in :data:`ACCOUNT_FIELDS`), typed.

    Raises ``InvalidEnvelope("schema", ...)`` when it does not fit (no ``event``, a field of
    the wrong type): the message names locations, never values.
    """
    model: type[AccountUpdate]
    if change.field == TEMPLATE_STATUS_FIELD:
        model = TemplateStatusUpdate
    elif change.field == QUALITY_FIELD:
        model = PhoneNumberQualityUpdate
    else:
        raise ValueError(f"{change.field} is not a business-account field")
    try:
        return model.model_validate(change.value.model_extra or {})
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        where = ".".join(str(part) for part in errors[0]["loc"]) or "<value>"
        message = f"the {change.field} change does not match Meta's schema at value.{where}: "
        raise InvalidEnvelope("schema", message + errors[0]["msg"]) from None
