"""The request body of ``POST /{version}/{phone_number_id}/messages``, as Meta validates it.

Field names and limits follow Meta's Messages API reference. Every object refuses keys it
does not know, as the Cloud API does, so a misspelled parameter fails here instead of being
silently dropped; the open-ended parts (a template's parameters, an interactive message's
action beyond buttons and lists, a contact card) take any keys. A refusal names the parameter
with Meta's code: 100 for an unknown key or a bad ``messaging_product``, 131008 for a missing
parameter, 131009 for an invalid value.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from inbox_sandbox.errors import GraphError, meta_error

__all__ = ["BSUID", "MarkRead", "SendRequest", "parse_request"]

BSUID = re.compile(r"[A-Z]{2}\.(?:ENT\.)?[A-Za-z0-9]{1,128}")
_PHONE_PUNCTUATION = re.compile(r"[\s().-]")

MessageType = Literal[
    "text", "image", "audio", "video", "document", "sticker", "location", "contacts",
    "interactive", "template", "reaction",
]  # fmt: skip


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Text(_Param):
    body: str = Field(min_length=1, max_length=4096)
    preview_url: bool = False


class _Media(_Param):
    id: str | None = Field(default=None, min_length=1)
    link: str | None = Field(default=None, min_length=1, max_length=2048)

    @model_validator(mode="after")
    def _one_source(self) -> _Media:
        if self.id is None and self.link is None:
            raise PydanticCustomError("meta_missing", "Parameter 'id' or 'link' is required.")
        if self.id is not None and self.link is not None:
            raise PydanticCustomError("meta_invalid", "Give 'id' or 'link', not both.")
        return self


class Audio(_Media):
    pass


class Sticker(_Media):
    pass


class Image(_Media):
    caption: str | None = Field(default=None, max_length=1024)


class Video(_Media):
    caption: str | None = Field(default=None, max_length=1024)


class Document(_Media):
    caption: str | None = Field(default=None, max_length=1024)
    filename: str | None = Field(default=None, min_length=1, max_length=240)


class Location(_Param):
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    name: str | None = Field(default=None, max_length=1024)
    address: str | None = Field(default=None, max_length=1024)


class ContactName(_Open):
    formatted_name: str = Field(min_length=1)


class ContactCard(_Open):
    name: ContactName


class ReplyButton(_Param):
    id: str = Field(min_length=1, max_length=256)
    title: str = Field(min_length=1, max_length=20)


class Button(_Param):
    type: Literal["reply"]
    reply: ReplyButton


class ListRow(_Param):
    id: str = Field(min_length=1, max_length=200)
    title: str = Field(min_length=1, max_length=24)
    description: str | None = Field(default=None, max_length=72)


class ListSection(_Param):
    title: str | None = Field(default=None, max_length=24)
    rows: list[ListRow] = Field(min_length=1, max_length=10)


class Action(_Open):
    buttons: list[Button] | None = Field(default=None, min_length=1, max_length=3)
    button: str | None = Field(default=None, min_length=1, max_length=20)
    sections: list[ListSection] | None = Field(default=None, min_length=1, max_length=10)


class InteractiveText(_Param):
    text: str = Field(min_length=1, max_length=1024)


class Footer(_Param):
    text: str = Field(min_length=1, max_length=60)


class Interactive(_Param):
    type: Literal[
        "button", "list", "cta_url", "flow", "product", "product_list", "catalog_message",
        "location_request_message", "address_message", "contact_request", "voice_call",
        "carousel",
    ]  # fmt: skip
    header: dict[str, Any] | None = None
    body: InteractiveText | None = None
    footer: Footer | None = None
    action: Action

    @model_validator(mode="after")
    def _shape(self) -> Interactive:
        if self.type in ("button", "list") and self.body is None:
            raise PydanticCustomError("meta_missing", "Parameter 'interactive.body' is required.")
        if self.type == "button" and not self.action.buttons:
            raise PydanticCustomError(
                "meta_missing", "Parameter 'interactive.action.buttons' is required."
            )
        if self.type == "list":
            if not self.action.button or not self.action.sections:
                raise PydanticCustomError(
                    "meta_missing",
                    "Parameters 'interactive.action.button' and 'interactive.action.sections' "
                    "are required.",
                )
            if sum(len(section.rows) for section in self.action.sections) > 10:
                raise PydanticCustomError(
                    "meta_invalid", "A list message has at most 10 rows in all its sections."
                )
        return self


class TemplateLanguage(_Param):
    code: str = Field(min_length=2, max_length=15)
    policy: Literal["deterministic"] | None = None


class TemplateComponent(_Open):
    type: str = Field(min_length=1)
    parameters: list[dict[str, Any]] | None = None


class Template(_Param):
    name: str = Field(min_length=1, max_length=512)
    language: TemplateLanguage
    components: list[TemplateComponent] | None = None


class Reaction(_Param):
    message_id: str = Field(min_length=1)
    # An empty emoji removes the reaction.
    emoji: str = Field(max_length=32)


class Context(_Param):
    message_id: str = Field(min_length=1)


class SendRequest(_Param):
    """A message to send: one recipient (``to`` wins over ``recipient``) and one typed object."""

    messaging_product: Literal["whatsapp"]
    recipient_type: Literal["individual"] = "individual"
    to: str | None = None
    recipient: str | None = None
    type: MessageType = "text"
    context: Context | None = None
    biz_opaque_callback_data: str | None = Field(default=None, max_length=512)
    text: Text | None = None
    image: Image | None = None
    audio: Audio | None = None
    video: Video | None = None
    document: Document | None = None
    sticker: Sticker | None = None
    location: Location | None = None
    contacts: list[ContactCard] | None = Field(default=None, min_length=1)
    interactive: Interactive | None = None
    template: Template | None = None
    reaction: Reaction | None = None

    @field_validator("to")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        digits = _PHONE_PUNCTUATION.sub("", value).removeprefix("+")
        if not digits.isdigit() or not 5 <= len(digits) <= 20:
            raise ValueError("must be a phone number in international format, like +16505551234")
        return value

    @field_validator("recipient")
    @classmethod
    def _bsuid(cls, value: str | None) -> str | None:
        if value is not None and not BSUID.fullmatch(value):
            raise ValueError("must be a business-scoped user ID, like US.13491208655302741918")
        return value

    @model_validator(mode="after")
    def _complete(self) -> SendRequest:
        if self.to is None and self.recipient is None:
            raise PydanticCustomError("meta_missing", "Parameter 'to' is required.")
        if getattr(self, self.type) is None:
            raise PydanticCustomError(
                "meta_missing",
                "Parameter '{kind}' is required for type {kind}.",
                {"kind": self.type},
            )
        return self

    @property
    def wa_id(self) -> str | None:
        """The recipient's phone number as digits, when the message goes to one."""
        if self.to is None:
            return None
        return _PHONE_PUNCTUATION.sub("", self.to).removeprefix("+")

    @property
    def is_template(self) -> bool:
        return self.type == "template"


class TypingIndicator(_Param):
    type: Literal["text"]


class MarkRead(_Param):
    """``{"messaging_product": "whatsapp", "status": "read", "message_id": ...}``."""

    messaging_product: Literal["whatsapp"]
    status: Literal["read"]
    message_id: str = Field(min_length=1)
    typing_indicator: TypingIndicator | None = None


def parse_request(raw: dict[str, Any]) -> SendRequest | MarkRead:
    """Validate a decoded body; raise :class:`GraphError` with Meta's code otherwise."""
    model: type[SendRequest] | type[MarkRead] = MarkRead if "status" in raw else SendRequest
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise _refusal(_first(exc.errors(include_url=False))) from None


def _first(errors: list[ErrorDetails]) -> ErrorDetails:
    # Meta names a bad product or type first, and an unknown key before what its absence implies
    # (``{"bodyx": ...}`` is an unexpected key, not a missing body).
    for wanted in ("messaging_product", "type", "extra_forbidden"):
        for error in errors:
            if wanted in (error["type"], _path(error["loc"])):
                return error
    return errors[0]


def _refusal(error: ErrorDetails) -> GraphError:
    path = _path(error["loc"])
    kind = error["type"]
    if path == "messaging_product":
        return meta_error(
            100, 'The parameter messaging_product is required and must be "whatsapp".'
        )
    if kind == "extra_forbidden":
        key = str(error["loc"][-1])
        parent = _path(error["loc"][:-1])
        where = f' on param "{parent}"' if parent else ""
        return meta_error(100, f'Unexpected key "{key}"{where}.')
    if kind == "missing":
        return meta_error(131008, f"Parameter '{path}' is required.")
    message = error["msg"].removeprefix("Value error, ")
    if kind == "meta_missing":
        return meta_error(131008, _inside(path, message))
    if kind == "meta_invalid":
        return meta_error(131009, _inside(path, message))
    return meta_error(131009, f"Parameter '{path}' is not valid: {message}.")


def _inside(path: str, message: str) -> str:
    return f"{message} (in '{path}')" if path else message


def _path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path
