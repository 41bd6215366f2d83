"""The request bodies of Meta's Messages API (``POST /{phone_number_id}/messages``).

A recipient is a phone number (``to``) or a business-scoped user id (``recipient``, a BSUID
like ``US.13491208655302741918``): users who adopt a username may share only the BSUID. When
both are known Meta's rule is to send ``to``, so :func:`address` never puts both in a body.

A body that could never be accepted (no recipient, a malformed BSUID, an oversized callback
token) raises :class:`PermanentError` here rather than costing a call Meta would refuse.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from inbox_common.errors import PermanentError

__all__ = ["BSUID", "address", "message", "read_receipt", "template", "text"]

# Two capital letters (the country), a dot, then letters and digits; ``ENT.`` marks the id of a
# managed business portfolio. The same shape the sandbox checks.
BSUID = re.compile(r"[A-Z]{2}\.(?:ENT\.)?[A-Za-z0-9]{1,128}")
# Meta echoes it in the message's status webhooks, up to 512 characters.
MAX_CALLBACK_DATA = 512


def address(*, phone: str | None = None, user_id: str | None = None) -> dict[str, str]:
    """The recipient part of a body: ``{"to": phone}``, else ``{"recipient": user_id}``."""
    if phone:
        return {"to": phone}
    if user_id:
        if not BSUID.fullmatch(user_id):
            raise PermanentError(
                "invalid_recipient",
                f"the business-scoped user id {user_id!r} is malformed: it must look like "
                "US.13491208655302741918 (two capital letters, a dot, letters and digits)",
            )
        return {"recipient": user_id}
    raise PermanentError(
        "no_recipient", "the message has neither a phone number nor a business-scoped user id"
    )


def message(
    recipient: Mapping[str, str],
    kind: str,
    content: Any,
    *,
    reply_to: str | None = None,
    callback_data: str | None = None,
) -> dict[str, Any]:
    """A message of type ``kind`` with its ``content`` object, to ``recipient``
    (:func:`address`).

    ``reply_to`` quotes an earlier message (its wamid); ``callback_data`` is echoed by Meta as
    ``biz_opaque_callback_data`` in the message's status webhooks (the sender puts its own
    message id there, to recognise a send whose answer it never got).
    """
    body: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        **recipient,
        "type": kind,
        kind: content,
    }
    if reply_to is not None:
        body["context"] = {"message_id": reply_to}
    if callback_data is not None:
        if len(callback_data) > MAX_CALLBACK_DATA:
            raise PermanentError(
                "callback_data_too_long",
                f"biz_opaque_callback_data is {len(callback_data)} characters; Meta accepts "
                f"at most {MAX_CALLBACK_DATA}",
            )
        body["biz_opaque_callback_data"] = callback_data
    return body


def text(
    recipient: Mapping[str, str],
    body: str,
    *,
    preview_url: bool = False,
    reply_to: str | None = None,
    callback_data: str | None = None,
) -> dict[str, Any]:
    """A text message (sent only inside the 24-hour customer service window)."""
    content = {"body": body, "preview_url": preview_url}
    return message(recipient, "text", content, reply_to=reply_to, callback_data=callback_data)


def template(
    recipient: Mapping[str, str],
    name: str,
    language: str,
    *,
    components: Sequence[Mapping[str, Any]] | None = None,
    callback_data: str | None = None,
) -> dict[str, Any]:
    """A template message (the only kind allowed outside the customer service window)."""
    content: dict[str, Any] = {"name": name, "language": {"code": language}}
    if components:
        content["components"] = [dict(component) for component in components]
    return message(recipient, "template", content, callback_data=callback_data)


def read_receipt(wamid: str) -> dict[str, Any]:
    """The body that marks an inbound message (and the ones before it) as read."""
    return {"messaging_product": "whatsapp", "status": "read", "message_id": wamid}
