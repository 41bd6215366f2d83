"""Request and response bodies of the REST API; the OpenAPI document is built from these."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

ItemT = TypeVar("ItemT")


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class Page(BaseModel, Generic[ItemT]):
    items: list[ItemT]
    next_cursor: str | None = Field(
        description="pass as ?cursor= for the next page; null on the last page"
    )


# A Cloud API token travels in an Authorization header: printable ASCII, no spaces.
ACCESS_TOKEN_PATTERN = r"^[!-~]+$"  # noqa: S105 - a pattern, not a secret


class ChannelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=100)
    phone_number_id: str = Field(pattern=r"^[0-9]{1,32}$", description="Meta's phone number ID")
    waba_id: str = Field(
        pattern=r"^[0-9A-Za-z_]{1,64}$", description="the WhatsApp Business Account ID"
    )
    display_phone_number: str = Field(min_length=1, max_length=32)
    access_token: str = Field(
        min_length=1,
        max_length=4096,
        pattern=ACCESS_TOKEN_PATTERN,
        description="the Cloud API token; stored, never returned",
    )
    tenant: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="superadmin only: the tenant that owns the channel (default: the token's)",
    )


class ChannelReconnect(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    access_token: str = Field(
        min_length=1,
        max_length=4096,
        pattern=ACCESS_TOKEN_PATTERN,
        description="a new Cloud API token; stored, never returned",
    )


class ChannelOut(BaseModel):
    id: str
    tenant: str
    name: str
    phone_number_id: str
    waba_id: str
    display_phone_number: str
    status: Literal["connected", "disconnected"]
    disconnected_reason: str | None = Field(
        default=None, description="why Meta stopped the channel (190, 368...) and what to do"
    )
    created_at: datetime


class ChannelReconnected(ChannelOut):
    requeued_messages: int = Field(
        description="messages held while the channel was disconnected, queued to be sent now"
    )


class ChannelCreated(ChannelOut):
    replayed_webhooks: int = Field(
        description="earlier webhooks for this number (failed as unknown_channel) sent to be "
        "processed again now that the channel exists"
    )


class ContactOut(BaseModel):
    wa_id: str | None = Field(
        description="the phone number; null when Meta does not share it (a username customer)"
    )
    user_id: str | None = Field(description="the business-scoped user id (BSUID)")
    username: str | None = Field(description="the customer's WhatsApp username, when set")
    name: str | None


class ConversationOut(BaseModel):
    id: str
    channel_id: str
    contact: ContactOut
    status: Literal["open", "closed"]
    assignee: str | None = Field(description="the assigned agent's id, or null")
    labels: list[str]
    unread_count: int
    last_message_at: datetime | None
    last_message_preview: str | None
    last_inbound_at: datetime | None = Field(
        description="opens the 24-hour customer service window"
    )


class StatusEntry(BaseModel):
    status: str
    timestamp: datetime
    errors: list[dict[str, Any]] | None = None


class ReactionOut(BaseModel):
    by: str
    emoji: str
    timestamp: datetime


SendState = Literal[
    "queued", "sending", "accepted", "retrying", "held", "failed", "paused", "cancelled"
]


class MessageOut(BaseModel):
    id: str
    conversation_id: str | None
    wamid: str = Field(description="Meta's id; local:<id> until Meta accepted an outbound one")
    direction: Literal["inbound", "outbound", "note"]
    type: str
    content: dict[str, Any] = Field(description="Meta's type-specific object, e.g. {'body': 'hi'}")
    status: str | None
    statuses: list[StatusEntry]
    timestamp: datetime
    reply_to: str | None = Field(description="the wamid this message answers (context.id)")
    reactions: list[ReactionOut]
    send_state: SendState | None = Field(
        default=None,
        description="outbound only: where its sending is (paused and cancelled: its campaign's)",
    )
    error: dict[str, Any] | None = Field(
        default=None, description="outbound only: Meta's code, title and details when it failed"
    )
    attempts: int = Field(default=0, description="outbound only: Cloud API calls made for it")
    last_error: dict[str, Any] | None = Field(
        default=None, description="outbound only: the last retryable failure, while it retries"
    )
    retry_due_at: datetime | None = Field(
        default=None, description="outbound only: when its next attempt is due, while it retries"
    )
    held_reason: str | None = Field(
        default=None, description="outbound only: why it is held (its channel is disconnected)"
    )
    possible_duplicate: bool = Field(
        default=False,
        description="outbound only: a call's outcome was unknown and it was sent again; the "
        "customer may have received it twice",
    )
    author: str | None = Field(default=None, description="notes: who wrote it")
    edited: bool = Field(default=False, description="the customer edited it (history kept)")
    deleted: bool = Field(default=False, description="the customer deleted it for everyone")


class AssignBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_id: str | None = Field(description="the agent to assign, or null to unassign")


class LabelsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: list[str] = Field(max_length=50)

    @field_validator("labels")
    @classmethod
    def _short(cls, labels: list[str]) -> list[str]:
        for label in labels:
            if not 1 <= len(label) <= 50:
                raise ValueError("each label has 1 to 50 characters")
        return labels


class NoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    body: str = Field(min_length=1, max_length=4096)


class AgentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=100)
    role: Literal["agent", "admin"] = "agent"


class AgentOut(BaseModel):
    id: str
    tenant: str
    name: str
    role: str
    created_at: datetime


class AgentCreated(AgentOut):
    token: str = Field(description="the agent's bearer token: shown once, never stored")


class TokenOut(BaseModel):
    id: str
    tenant: str
    role: str
    name: str
    agent_id: str | None
    created_at: datetime
    revoked_at: datetime | None


class WebhookLogOut(BaseModel):
    id: str
    sha256: str
    request_id: str
    trace_id: str | None = Field(
        description="the trace of the request that brought the body (32 hex digits; find "
        "its spans in your tracing backend and its log lines by trace_id)"
    )
    status: Literal["received", "processed", "failed"]
    error: ErrorDetail | None
    attempts: int
    phone_number_ids: list[str] = Field(
        description="the numbers the body carried changes for (a tenant's admin: their own)"
    )
    body_bytes: int
    received_at: datetime
    finished_at: datetime | None


class WebhookLogDetail(WebhookLogOut):
    body: str = Field(description="the raw body as received (UTF-8, invalid bytes replaced)")
    body_filtered: bool = Field(
        description="the body also carried other tenants' numbers: only the changes of the "
        "reader's own numbers are shown, re-serialized (a superadmin sees every body whole)"
    )


class WebhookLogPage(Page[WebhookLogOut]):
    reasons: dict[str, int] = Field(
        description="the failed events of the whole filter (not only this page) by error code "
        "(the reason filter's values), most first"
    )


class WebhookReplay(BaseModel):
    """A replay by filter: the listing's filters, as strings (a wrong one is a 400 naming it),
    and how many events at most."""

    model_config = ConfigDict(extra="forbid")

    status: str = Field(
        default="failed",
        description="failed or received (a processed event needs no replay; replay one by id "
        "to send it again anyway)",
    )
    since: str | None = Field(
        default=None,
        description="received at or after: an ISO 8601 time (2026-12-01T09:00:00Z) or a "
        "duration back from now (30m, 2h, 7d)",
    )
    phone_number_id: str | None = Field(default=None, description="events naming this number")
    reason: str | None = Field(
        default=None, description="events that failed with this error code (unknown_channel...)"
    )
    limit: int = Field(
        default=100, ge=1, le=1000, description="at most this many events, the oldest first"
    )


class WebhookReplayed(BaseModel):
    replayed: int = Field(
        description="events published to the consumer again, each confirmed by RabbitMQ; their "
        "new status shows in the listing once the consumer has applied them (seconds)"
    )
    matched: int = Field(
        description="events the filter selected when the replay began; more than replayed when "
        "the limit cut it (the rest are newer: run the replay again once these are processed)"
    )


class AlertOut(BaseModel):
    id: str
    kind: str = Field(
        description="what the condition is (channel_disconnected, job_failing...; see "
        "docs/api.md); a string, so that a kind added later still reads"
    )
    severity: Literal["P0", "P1", "P2", "P3"] = Field(
        description="the runbook's triage of the kind: P0 critical ... P3 low"
    )
    status: Literal["open", "acknowledged", "resolved"]
    tenant: str | None = Field(description="the tenant it concerns; null: platform-wide")
    title: str
    evidence: dict[str, Any] = Field(description="what the check saw, as it last saw it")
    runbook: str = Field(description="the section of docs/runbook.md that says what to do")
    first_seen: datetime
    last_seen: datetime
    count: int = Field(description="how many times the condition was seen while it lasted")
    acknowledged_by: str | None = Field(
        description="agent:<id>, or token:<role>@<tenant> for a token of no agent"
    )
    acknowledged_at: datetime | None
    resolved_by: str | None = Field(
        description="as acknowledged_by, or maintenance:<task> when its condition cleared"
    )
    resolved_at: datetime | None
