"""Store documents → response models (the one place that shapes API output)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import orjson

from inbox_api.rest.schemas import (
    AgentOut,
    AlertOut,
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
        attempts=doc.get("attempts", 0),
        last_error=doc.get("last_error"),
        retry_due_at=doc.get("retry_due_at"),
        held_reason=doc.get("held_reason"),
        possible_duplicate=bool(doc.get("possible_duplicate")),
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


def alert(doc: Document) -> AlertOut:
    return AlertOut(
        id=str(doc["_id"]),
        kind=doc["kind"],
        severity=doc["severity"],
        status=doc["status"],
        tenant=doc.get("tenant"),
        title=doc.get("title") or "",
        evidence=doc.get("evidence") or {},
        runbook=doc.get("runbook") or "",
        first_seen=doc["first_seen"],
        last_seen=doc["last_seen"],
        count=doc.get("count", 1),
        acknowledged_by=doc.get("acknowledged_by"),
        acknowledged_at=doc.get("acknowledged_at"),
        resolved_by=doc.get("resolved_by"),
        resolved_at=doc.get("resolved_at"),
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


# A webhook body may batch the entries of several accounts, so of several tenants. A tenant's
# admin (``numbers``: their phone_number_ids; ``None``: a superadmin, who sees everything) is
# shown only their own numbers and, from a body that carried others' too, only the changes
# of their own numbers.


def webhook_log(doc: Document, numbers: Collection[str] | None) -> WebhookLogOut:
    return WebhookLogOut(**_webhook_log_fields(doc, numbers))


def webhook_log_detail(doc: Document, numbers: Collection[str] | None) -> WebhookLogDetail:
    fields = _webhook_log_fields(doc, numbers)
    raw = bytes(doc.get("body") or b"")
    if numbers is not None and not set(doc.get("phone_number_ids") or []) <= set(numbers):
        return WebhookLogDetail(**fields, body=_own_changes(raw, numbers), body_filtered=True)
    return WebhookLogDetail(**fields, body=raw.decode("utf-8", "replace"), body_filtered=False)


def _own_changes(raw: bytes, numbers: Collection[str]) -> str:
    """The body with only the changes of ``numbers`` (re-serialized), or nothing at all when
    it is not shaped as a webhook (no part of it can be attributed)."""
    try:
        envelope = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(envelope, dict) or not isinstance(envelope.get("entry"), list):
        return ""
    kept = []
    for entry in envelope["entry"]:
        changes = entry.get("changes") if isinstance(entry, dict) else None
        own = [c for c in changes if _number_of(c) in numbers] if isinstance(changes, list) else []
        if own:
            kept.append({**entry, "changes": own})
    return orjson.dumps({**envelope, "entry": kept}).decode()


def _number_of(change: Any) -> Any:
    value = change.get("value") if isinstance(change, dict) else None
    metadata = value.get("metadata") if isinstance(value, dict) else None
    return metadata.get("phone_number_id") if isinstance(metadata, dict) else None


def _webhook_log_fields(doc: Document, numbers: Collection[str] | None) -> dict[str, Any]:
    error = doc.get("error")
    shown = doc.get("phone_number_ids") or []
    return {
        "id": str(doc["_id"]),
        "sha256": doc["sha256"],
        "request_id": doc.get("request_id") or "",
        "trace_id": doc.get("trace_id"),
        "status": doc["status"],
        "error": ErrorDetail.model_validate(error) if error else None,
        "attempts": doc.get("attempts", 0),
        "phone_number_ids": [n for n in shown if numbers is None or n in numbers],
        "body_bytes": doc.get("body_bytes", 0),
        "received_at": doc["received_at"],
        "finished_at": doc.get("finished_at"),
    }
