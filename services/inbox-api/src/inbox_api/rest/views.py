"""Store documents → response models (the one place that shapes API output)."""

from __future__ import annotations

from typing import Any

from inbox_api.rest.schemas import (
    AgentOut,
    ChannelOut,
    ContactOut,
    ConversationOut,
    ErrorDetail,
    MessageOut,
    ReactionOut,
    StatusEntry,
    TokenOut,
    WebhookLogDetail,
    WebhookLogOut,
)
from inbox_common.store.client import Document
from inbox_common.store.identities import Identity


def channel(doc: Document) -> ChannelOut:
    return ChannelOut(
        id=str(doc["_id"]),
        tenant=doc["tenant"],
        name=doc["name"],
        phone_number_id=doc["phone_number_id"],
        waba_id=doc["waba_id"],
        display_phone_number=doc["display_phone_number"],
        status=doc["status"],
        disconnected_reason=doc.get("disconnected_reason")
        if doc["status"] != "connected"
        else None,
        created_at=doc["created_at"],
    )


def conversation(doc: Document) -> ConversationOut:
    return ConversationOut(
        id=str(doc["_id"]),
        channel_id=str(doc["channel_id"]),
        contact=_contact(doc),
        status=doc.get("status", "open"),
        assignee=doc.get("assignee"),
        labels=doc.get("labels") or [],
        unread_count=doc.get("unread_count", 0),
        last_message_at=doc.get("last_message_at"),
        last_message_preview=doc.get("last_message_preview"),
        last_inbound_at=doc.get("last_inbound_at"),
    )


def _contact(doc: Document) -> ContactOut:
    # Older conversations kept a BSUID in wa_id when the phone was missing.
    identity = Identity.of(doc.get("wa_id"), doc.get("user_id"))
    return ContactOut(
        wa_id=identity.wa_id,
        user_id=identity.user_id,
        username=doc.get("username"),
        name=doc.get("contact_name"),
    )


def message(doc: Document) -> MessageOut:
    reactions = [
        ReactionOut(by=r["by"], emoji=r["emoji"], timestamp=r["timestamp"])
        for r in doc.get("reactions", [])
        if r.get("emoji")
    ]
    return MessageOut(
        id=str(doc["_id"]),
        conversation_id=str(doc["conversation_id"]) if doc.get("conversation_id") else None,
        wamid=doc["wamid"],
        direction=doc["direction"],
        type=doc["type"],
        content=doc.get("content") or {},
        status=doc.get("status"),
        statuses=[StatusEntry.model_validate(s) for s in doc.get("statuses", [])],
        timestamp=doc["timestamp"],
        reply_to=doc.get("reply_to"),
        reactions=reactions,
        send_state=doc.get("send_state"),
        error=doc.get("error"),
        author=doc.get("author"),
        edited=bool(doc.get("edits")),
        deleted=bool(doc.get("deleted")),
    )


def agent(doc: Document) -> AgentOut:
    return AgentOut(
        id=str(doc["_id"]),
        tenant=doc["tenant"],
        name=doc["name"],
        role=doc["role"],
        created_at=doc["created_at"],
    )


def token(doc: Document) -> TokenOut:
    return TokenOut(
        id=str(doc["_id"]),
        tenant=doc["tenant"],
        role=doc["role"],
        name=doc.get("name") or "",
        agent_id=doc.get("agent_id"),
        created_at=doc["created_at"],
        revoked_at=doc.get("revoked_at"),
    )


def webhook_log(doc: Document) -> WebhookLogOut:
    return WebhookLogOut(**_webhook_log_fields(doc))


def webhook_log_detail(doc: Document) -> WebhookLogDetail:
    body = bytes(doc.get("body") or b"").decode("utf-8", "replace")
    return WebhookLogDetail(**_webhook_log_fields(doc), body=body)


def _webhook_log_fields(doc: Document) -> dict[str, Any]:
    error = doc.get("error")
    return {
        "id": str(doc["_id"]),
        "sha256": doc["sha256"],
        "request_id": doc.get("request_id") or "",
        "status": doc["status"],
        "error": ErrorDetail.model_validate(error) if error else None,
        "attempts": doc.get("attempts", 0),
        "phone_number_ids": doc.get("phone_number_ids") or [],
        "body_bytes": doc.get("body_bytes", 0),
        "received_at": doc["received_at"],
        "finished_at": doc.get("finished_at"),
    }
