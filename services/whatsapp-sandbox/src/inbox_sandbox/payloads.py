"""Builders of webhook bodies in Meta's exact format.

The sandbox posts these to the ingest as Meta would; the dev stack's sample request, the
tests and the benchmarks use them too, so that everything downstream of the ingest sees what
Meta would send. Like Meta, the builders omit
empty lists and absent optional fields rather than sending nulls.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Iterable
from typing import Any

__all__ = [
    "contact",
    "echo",
    "echoes_webhook",
    "edit_message",
    "edited",
    "media_content",
    "media_message",
    "message",
    "meta_error",
    "new_wamid",
    "outbound_status",
    "reaction_message",
    "revoke_message",
    "status",
    "text_message",
    "text_webhook",
    "user_contact",
    "user_message",
    "webhook",
]

ERROR_CODES_URL = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"

_DEFAULT_MIME_TYPES = {
    "image": "image/jpeg",
    "video": "video/mp4",
    "audio": "audio/ogg; codecs=opus",
    "sticker": "image/webp",
    "document": "application/pdf",
}


def new_wamid() -> str:
    """A fresh, unique message id shaped like Meta's (``wamid.HBgL...``)."""
    return "wamid.HBgL" + secrets.token_urlsafe(36)


def webhook(
    phone_number_id: str,
    *,
    display_phone_number: str = "15550000000",
    waba_id: str = "WABA_ID",
    contacts: Iterable[dict[str, Any]] = (),
    messages: Iterable[dict[str, Any]] = (),
    statuses: Iterable[dict[str, Any]] = (),
) -> dict[str, Any]:
    """A whole ``messages`` webhook body with one entry and one change."""
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {
            "display_phone_number": display_phone_number,
            "phone_number_id": phone_number_id,
        },
    }
    for key, items in (("contacts", contacts), ("messages", messages), ("statuses", statuses)):
        listed = list(items)
        if listed:
            value[key] = listed
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": waba_id, "changes": [{"value": value, "field": "messages"}]}],
    }


def contact(wa_id: str, name: str) -> dict[str, Any]:
    """The ``contacts[]`` item for a user, with a deterministic BSUID (``user_id``)."""
    return {"profile": {"name": name}, "wa_id": wa_id, "user_id": f"US.{wa_id}"}


def message(
    type_: str,
    wa_id: str,
    wamid: str,
    content: Any,
    *,
    timestamp: int | None = None,
    reply_to: str | None = None,
    business_number: str = "15550000000",
) -> dict[str, Any]:
    """An inbound message of any type; ``content`` is the object named by ``type_``.

    ``content=None`` builds a message without a type object (``request_welcome``).
    """
    built: dict[str, Any] = {
        "from": wa_id,
        "id": wamid,
        "timestamp": str(int(time.time()) if timestamp is None else timestamp),
        "type": type_,
    }
    if reply_to is not None:
        built["context"] = {"from": business_number, "id": reply_to}
    if content is not None:
        built[type_] = content
    return built


def text_message(
    wa_id: str,
    wamid: str,
    body: str,
    *,
    timestamp: int | None = None,
    reply_to: str | None = None,
) -> dict[str, Any]:
    """An inbound text message, optionally replying to ``reply_to``."""
    return message("text", wa_id, wamid, {"body": body}, timestamp=timestamp, reply_to=reply_to)


def media_message(
    type_: str,
    wa_id: str,
    wamid: str,
    *,
    media_id: str | None = None,
    mime_type: str | None = None,
    caption: str | None = None,
    filename: str | None = None,
    voice: bool | None = None,
    animated: bool | None = None,
    timestamp: int | None = None,
    reply_to: str | None = None,
) -> dict[str, Any]:
    """An inbound image, video, audio, sticker or document message.

    The media id and hash derive from the wamid, so the same call builds the same body.
    """
    digest = hashlib.sha256(wamid.encode()).digest()
    media_id = media_id or str(int.from_bytes(digest[:7], "big"))
    media: dict[str, Any] = {
        "mime_type": mime_type or _DEFAULT_MIME_TYPES.get(type_, "application/octet-stream"),
        "sha256": base64.b64encode(hashlib.sha256(media_id.encode()).digest()).decode(),
        "id": media_id,
    }
    optional = {"caption": caption, "filename": filename, "voice": voice, "animated": animated}
    media.update({key: value for key, value in optional.items() if value is not None})
    return message(type_, wa_id, wamid, media, timestamp=timestamp, reply_to=reply_to)


def reaction_message(
    wa_id: str,
    wamid: str,
    target_wamid: str,
    emoji: str | None,
    *,
    timestamp: int | None = None,
) -> dict[str, Any]:
    """A reaction to ``target_wamid``; an empty or ``None`` emoji is a removal.

    Meta omits ``emoji`` entirely when a reaction is removed.
    """
    reaction: dict[str, Any] = {"message_id": target_wamid}
    if emoji:
        reaction["emoji"] = emoji
    return message("reaction", wa_id, wamid, reaction, timestamp=timestamp)


def meta_error(code: int, title: str, details: str | None = None) -> dict[str, Any]:
    """An error object shaped like those in statuses, messages and values."""
    error: dict[str, Any] = {"code": code, "title": title, "message": title}
    if details is not None:
        error["error_data"] = {"details": details}
    error["href"] = ERROR_CODES_URL
    return error


def status(
    wamid: str,
    status: str,
    recipient_id: str,
    *,
    timestamp: int | None = None,
    errors: Iterable[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A status of an outbound message.

    A ``failed`` status without explicit ``errors`` carries Meta's 131026 "Message
    undeliverable"; a ``sent`` status carries pricing, as Meta's do.
    """
    built: dict[str, Any] = {
        "id": wamid,
        "status": status,
        "timestamp": str(int(time.time()) if timestamp is None else timestamp),
        "recipient_id": recipient_id,
    }
    if status == "sent":
        built["pricing"] = {
            "billable": True,
            "pricing_model": "PMP",
            "type": "regular",
            "category": "service",
        }
    if errors is None and status == "failed":
        errors = [meta_error(131026, "Message undeliverable", "Message Undeliverable.")]
    if errors is not None:
        built["errors"] = list(errors)
    return built


def text_webhook(
    phone_number_id: str,
    wa_id: str,
    name: str,
    body: str,
    *,
    wamid: str | None = None,
    timestamp: int | None = None,
) -> dict[str, Any]:
    """A webhook body carrying one text message from ``wa_id``."""
    return webhook(
        phone_number_id,
        contacts=[contact(wa_id, name)],
        messages=[text_message(wa_id, wamid or new_wamid(), body, timestamp=timestamp)],
    )


# --- Builders added with the sandbox's Cloud API: BSUID-era identities and statuses. --------


def user_contact(
    user_id: str,
    *,
    wa_id: str | None = None,
    name: str | None = None,
    username: str | None = None,
) -> dict[str, Any]:
    """A ``contacts[]`` item as Meta sends it since business-scoped user ids (BSUIDs).

    ``user_id`` (the BSUID) is always there; ``wa_id`` only when Meta may share the user's
    phone number; ``profile.username`` only for users who adopted a username.
    """
    profile: dict[str, Any] = {}
    if name is not None:
        profile["name"] = name
    if username is not None:
        profile["username"] = username
    built: dict[str, Any] = {}
    if profile:
        built["profile"] = profile
    if wa_id is not None:
        built["wa_id"] = wa_id
    built["user_id"] = user_id
    return built


def user_message(
    type_: str,
    wamid: str,
    content: Any,
    *,
    wa_id: str | None = None,
    user_id: str | None = None,
    timestamp: int | None = None,
    context: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An inbound message from a user known by phone number (``from``), BSUID
    (``from_user_id``) or both; ``content`` is the object named by ``type_`` (``None``: none).

    ``extra`` adds message-level fields Meta sends with some types (``errors``, ``referral``).
    """
    built: dict[str, Any] = {}
    if wa_id is not None:
        built["from"] = wa_id
    if user_id is not None:
        built["from_user_id"] = user_id
    built["id"] = wamid
    built["timestamp"] = str(int(time.time()) if timestamp is None else timestamp)
    built["type"] = type_
    if context:
        built["context"] = dict(context)
    if content is not None:
        built[type_] = content
    if extra:
        built.update(extra)
    return built


def media_content(type_: str, wamid: str, given: dict[str, Any] | None = None) -> dict[str, Any]:
    """The media object of an inbound ``type_`` message: Meta's ``mime_type``, ``sha256`` and
    ``id`` (derived from ``wamid``, so one wamid always builds the same object), overlaid with
    the fields ``given``."""
    digest = hashlib.sha256(wamid.encode()).digest()
    media_id = str(int.from_bytes(digest[:7], "big"))
    media: dict[str, Any] = {
        "mime_type": _DEFAULT_MIME_TYPES.get(type_, "application/octet-stream"),
        "sha256": base64.b64encode(hashlib.sha256(media_id.encode()).digest()).decode(),
        "id": media_id,
    }
    media.update(given or {})
    return media


def outbound_status(
    wamid: str,
    status: str,
    *,
    timestamp: int,
    recipient_id: str | None = None,
    recipient_user_id: str | None = None,
    biz_opaque_callback_data: str | None = None,
    conversation: dict[str, Any] | None = None,
    pricing: dict[str, Any] | None = None,
    errors: Iterable[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A ``statuses[]`` item with Meta's keys in Meta's order; absent ones are left out.

    ``recipient_id`` is the phone number the message went to (left out when it went to a BSUID
    and the number may not be shared), ``recipient_user_id`` the BSUID (left out of a
    ``failed`` status of a message sent to a phone number).
    """
    built: dict[str, Any] = {"id": wamid, "status": status, "timestamp": str(timestamp)}
    optional: dict[str, Any] = {
        "recipient_id": recipient_id,
        "recipient_user_id": recipient_user_id,
        "biz_opaque_callback_data": biz_opaque_callback_data,
        "conversation": conversation,
        "pricing": pricing,
    }
    built.update({key: value for key, value in optional.items() if value is not None})
    if errors is not None:
        built["errors"] = list(errors)
    return built


# --- Coexistence (numbers also used in the WhatsApp Business app): edits, revokes, echoes. ---
# Meta's references: "Edit messages webhook reference", "Revoke messages webhook reference"
# and "smb_message_echoes webhook reference" (developers.facebook.com, WhatsApp webhooks).


def edited(type_: str, content: Any, *, context_id: str | None = None) -> dict[str, Any]:
    """The ``edit.message`` object: the whole new version of an edited message, a type and
    its object (a text, or a media object with the new caption), no id or timestamp; with
    ``context`` first when the message replied to one."""
    built: dict[str, Any] = {}
    if context_id is not None:
        built["context"] = {"id": context_id}
    built["type"] = type_
    built[type_] = content
    return built


def edit_message(
    wamid: str,
    original_wamid: str,
    new_version: dict[str, Any],
    *,
    wa_id: str | None = None,
    user_id: str | None = None,
    timestamp: int | None = None,
) -> dict[str, Any]:
    """A ``messages[]`` item saying the user edited ``original_wamid`` (``type: edit``);
    ``new_version`` is built by :func:`edited`. Meta sends these within 15 minutes of the
    original, for text and captioned media."""
    content = {"original_message_id": original_wamid, "message": new_version}
    return user_message("edit", wamid, content, wa_id=wa_id, user_id=user_id, timestamp=timestamp)


def revoke_message(
    wamid: str,
    original_wamid: str,
    *,
    wa_id: str | None = None,
    user_id: str | None = None,
    timestamp: int | None = None,
) -> dict[str, Any]:
    """A ``messages[]`` item saying the user deleted ``original_wamid`` for everyone
    (``type: revoke``; within two days of the original)."""
    content = {"original_message_id": original_wamid}
    return user_message("revoke", wamid, content, wa_id=wa_id, user_id=user_id, timestamp=timestamp)


def echo(
    wamid: str,
    type_: str,
    content: Any,
    *,
    to: str,
    business_number: str = "15550000000",
    timestamp: int | None = None,
    to_user_id: str | None = None,
) -> dict[str, Any]:
    """A ``message_echoes[]`` item: a message the business sent from the WhatsApp Business app
    (or, with ``type_`` ``edit`` / ``revoke``, an edit or deletion of one of its messages).
    ``to`` is the customer's number as the business entered it (Meta's example:
    ``+16505551234``); ``to_user_id``, the BSUID, only when given."""
    built: dict[str, Any] = {"from": business_number, "to": to}
    if to_user_id is not None:
        built["to_user_id"] = to_user_id
    built["id"] = wamid
    built["timestamp"] = str(int(time.time()) if timestamp is None else timestamp)
    built["type"] = type_
    built[type_] = content
    return built


def echoes_webhook(
    phone_number_id: str,
    echoes: Iterable[dict[str, Any]],
    *,
    display_phone_number: str = "15550000000",
    waba_id: str = "WABA_ID",
) -> dict[str, Any]:
    """A whole ``smb_message_echoes`` webhook body (no ``contacts`` array)."""
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {
            "display_phone_number": display_phone_number,
            "phone_number_id": phone_number_id,
        },
        "message_echoes": list(echoes),
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": waba_id, "changes": [{"value": value, "field": "smb_message_echoes"}]}],
    }
