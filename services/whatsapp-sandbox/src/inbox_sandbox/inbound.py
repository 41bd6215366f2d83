"""Customer messages made through ``POST /sandbox/inbound`` and the webhook Meta would send.

The request names the business number, the customer (``from``, a phone number, and/or
``user_id``, a BSUID; ``username`` and ``name`` optionally), the ``type`` and the object named
by the type exactly as Meta's webhook carries it (``"text": {"body": "Halo"}``). Media objects
get Meta's ``id``, ``mime_type`` and ``sha256`` when the request leaves them out. Types the
sandbox does not know pass through as they are: Meta adds types, and the inbox must keep them.
``edit`` (``{"original_message_id", "message": <the whole new version>}``) and ``revoke``
(``{"original_message_id"}``) change an earlier message, as Meta reports for numbers also used
in the WhatsApp Business app.
"""

from __future__ import annotations

import re
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from inbox_sandbox import payloads
from inbox_sandbox.customers import Customer
from inbox_sandbox.numbers import PHONE_NUMBER_ID, BusinessNumber
from inbox_sandbox.schema import BSUID

__all__ = ["CustomerMessage", "inbound_webhook"]

MEDIA_TYPES = frozenset({"image", "video", "audio", "sticker", "document"})
# Message-level fields besides the type's object that Meta sends with some messages.
_MESSAGE_FIELDS = frozenset({"errors", "referral"})
_CONTEXT_FIELDS = ("forwarded", "frequently_forwarded", "referred_product")
_PHONE = re.compile(r"\+?[0-9]{5,20}")


class CustomerMessage(BaseModel):
    """A customer's message to a business number."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    phone_number_id: str
    from_: str | None = Field(default=None, alias="from")
    user_id: str | None = None
    username: str | None = Field(default=None, min_length=1, max_length=64)
    name: str | None = Field(default=None, min_length=1, max_length=256)
    type: str = Field(pattern=r"^[a-z_]{1,40}$")
    context: dict[str, Any] | None = None
    timestamp: int | None = Field(default=None, ge=0, le=10**11)

    @field_validator("phone_number_id")
    @classmethod
    def _phone_number_id(cls, value: str) -> str:
        if not PHONE_NUMBER_ID.fullmatch(value):
            raise ValueError("must be the digits of a business number's id")
        return value

    @field_validator("from_")
    @classmethod
    def _from(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _PHONE.fullmatch(value):
            raise ValueError("must be the customer's phone number (wa_id), like 15551234567")
        return value.removeprefix("+")

    @field_validator("user_id")
    @classmethod
    def _user_id(cls, value: str | None) -> str | None:
        if value is not None and not BSUID.fullmatch(value):
            raise ValueError("must be a business-scoped user ID, like US.13491208655302741918")
        return value

    @model_validator(mode="after")
    def _complete(self) -> CustomerMessage:
        if self.from_ is None and self.user_id is None:
            raise ValueError("give the customer's 'from' (phone number) or 'user_id' (BSUID)")
        unknown = set(self.model_extra or {}) - {self.type} - _MESSAGE_FIELDS
        if unknown:
            raise ValueError(
                f"unexpected field(s) {sorted(unknown)}: the content goes under the key named "
                f"by type ({self.type!r})"
            )
        problem = _content_problem(self.type, self.content)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def content(self) -> Any:
        """The object named by ``type``, as given (``None`` when absent)."""
        return (self.model_extra or {}).get(self.type)

    @property
    def message_fields(self) -> dict[str, Any]:
        return {k: v for k, v in (self.model_extra or {}).items() if k in _MESSAGE_FIELDS}


_EXAMPLES = {
    "text": '{"body": "Halo"}',
    "location": '{"latitude": -6.2, "longitude": 106.8}',
    "interactive": '{"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes"}}',
    "reaction": '{"message_id": "wamid....", "emoji": "👍"}',
    "button": '{"text": "Stop promotions", "payload": "stop"}',
    "edit": '{"original_message_id": "wamid....", "message": {"type": "text", "text": {"body": '
    '"Halo!"}}}',
    "revoke": '{"original_message_id": "wamid...."}',
}


def _content_problem(type_: str, content: Any) -> str | None:
    if type_ in MEDIA_TYPES:
        return (
            None if content is None or isinstance(content, dict) else f"'{type_}' must be an object"
        )
    required: dict[str, tuple[str, ...]] = {
        "text": ("body",),
        "location": ("latitude", "longitude"),
        "interactive": ("type",),
        "reaction": ("message_id",),
        "button": ("text",),
        "edit": ("original_message_id", "message"),
        "revoke": ("original_message_id",),
    }
    if type_ == "contacts":
        if not isinstance(content, list) or not content:
            return "'contacts' must be a non-empty list of contact cards"
        return None
    if type_ not in required:
        return None
    if not isinstance(content, dict):
        return f"type {type_!r} needs its object under '{type_}', like {_EXAMPLES[type_]}"
    missing = [key for key in required[type_] if key not in content]
    if missing:
        return f"'{type_}' must have {', '.join(missing)}, like {_EXAMPLES[type_]}"
    if type_ == "interactive":
        kind = content["type"]
        if not isinstance(kind, str) or not isinstance(content.get(kind), dict):
            return "'interactive' must carry the object its type names, like " + _EXAMPLES[type_]
    if type_ == "edit":
        new = content["message"]
        if (
            not isinstance(new, dict)
            or not isinstance(new.get("type"), str)
            or new["type"] not in new
        ):
            return "'edit.message' must be the new version with its type, like " + _EXAMPLES[type_]
    return None


def inbound_webhook(
    number: BusinessNumber, message: CustomerMessage, customer: Customer, wamid: str
) -> dict[str, Any]:
    """The ``messages`` webhook Meta sends for ``message`` from ``customer`` to ``number``."""
    content = message.content
    if message.type in MEDIA_TYPES:
        content = payloads.media_content(message.type, wamid, content)
    built = payloads.user_message(
        message.type,
        wamid,
        content,
        wa_id=message.from_,
        user_id=customer.user_id,
        timestamp=message.timestamp if message.timestamp is not None else int(time.time()),
        context=_context(message.context, number),
        extra=message.message_fields,
    )
    name = message.name or customer.name or message.username or message.from_ or "WhatsApp User"
    contact = payloads.user_contact(
        customer.user_id, wa_id=message.from_, name=name, username=message.username
    )
    return payloads.webhook(
        number.phone_number_id,
        display_phone_number=number.webhook_number,
        waba_id=number.waba_id,
        contacts=[contact],
        messages=[built],
    )


def _context(given: dict[str, Any] | None, number: BusinessNumber) -> dict[str, Any] | None:
    """Meta's ``context``: the business number and the wamid replied to, forward flags."""
    if not given:
        return None
    context: dict[str, Any] = {}
    replied = given.get("message_id") or given.get("id")
    if replied:
        context["from"] = number.webhook_number
        context["id"] = replied
    context.update({key: given[key] for key in _CONTEXT_FIELDS if key in given})
    return context or None
