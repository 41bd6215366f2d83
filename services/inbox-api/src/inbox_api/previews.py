"""One-line summaries of messages for the conversation list (presentation, not the wire
contract): the text itself, a caption, ``[location] …``, ``[voice message]``, ...

An edited message is summarised by its new version, and a deleted one by
:data:`DELETED_PREVIEW` alone: what the customer deleted does not stay in the list."""

from __future__ import annotations

from typing import Any

from inbox_common.contracts.webhook import (
    MEDIA_TYPES,
    InboundMessage,
    InteractiveContent,
    MessageContent,
)

PREVIEW_MAX_CHARS = 200
DELETED_PREVIEW = "[deleted message]"


def preview(message: MessageContent) -> str:
    """A one-line summary of ``message``, at most 200 characters."""
    return clip(_describe(message))


def clip(text: str) -> str:
    """``text`` on one line, at most :data:`PREVIEW_MAX_CHARS` characters."""
    text = " ".join(text.split())
    if len(text) > PREVIEW_MAX_CHARS:
        text = text[: PREVIEW_MAX_CHARS - 1] + "…"
    return text


def _describe(message: MessageContent) -> str:
    if message.type in MEDIA_TYPES:
        return _describe_media(message)
    match message.type:
        case "text":
            return message.text.body if message.text and message.text.body else "[text]"
        case "location":
            location = message.location
            place = location.name or location.address if location else None
            return f"[location] {place}" if place else "[location]"
        case "contacts":
            return _describe_contacts(message.contacts or [])
        case "interactive":
            return _describe_interactive(message.interactive)
        case "button":
            button = message.button
            label = button.text or button.payload if button else None
            return label or "[button]"
        case "reaction":
            emoji = message.reaction.emoji if message.reaction else None
            return f"[reaction] {emoji}" if emoji else "[reaction removed]"
        case "unsupported":
            return "[unsupported message]"
        case "system":
            body = message.system.body if message.system else None
            return body or "[system]"
        case "order":
            items = (message.order or {}).get("product_items")
            return f"[order] {len(items)} items" if isinstance(items, list) else "[order]"
        case "edit":
            edited = message.edit.message if message.edit else None
            return _describe(edited) if edited is not None and edited.type else "[edited message]"
        case "revoke":
            return DELETED_PREVIEW
    return f"[{message.type}]"


def _describe_media(message: MessageContent) -> str:
    media = getattr(message, message.type)
    if media is None:
        return f"[{message.type}]"
    if media.caption:
        return str(media.caption)
    if message.type == "audio" and media.voice:
        return "[voice message]"
    if message.type == "document" and media.filename:
        return f"[document] {media.filename}"
    return f"[{message.type}]"


def _describe_contacts(cards: list[dict[str, Any]]) -> str:
    if not cards:
        return "[contact]"
    name = cards[0].get("name")
    formatted = name.get("formatted_name") if isinstance(name, dict) else None
    text = f"[contact] {formatted}" if isinstance(formatted, str) and formatted else "[contact]"
    return f"{text} (+{len(cards) - 1} more)" if len(cards) > 1 else text


def _describe_interactive(interactive: InteractiveContent | None) -> str:
    if interactive is None:
        return "[interactive]"
    reply = interactive.button_reply or interactive.list_reply
    if reply is not None and reply.title:
        return reply.title
    if interactive.nfm_reply is not None:
        return "[form response]"
    return "[interactive]"


def outbound_preview(type_: str, content: Any) -> str:
    """The preview of a message the inbox sends (Meta's request object for ``type_``)."""
    if type_ == "template" and isinstance(content, dict):
        return clip(f"[template] {content.get('name', '')}")
    message = InboundMessage.model_validate(
        {"id": "outbound", "timestamp": 0, "type": type_, type_: content}
    )
    return preview(message)
