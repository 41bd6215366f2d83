"""The campaigns' request and answer bodies (the OpenAPI document is built from these)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from inbox_api.rest.outgoing import TemplateBody


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecipientIn(_Body):
    wa_id: str = Field(
        min_length=1, max_length=40, description="the phone number in international format"
    )
    variables: dict[str, str | int | float] = Field(
        default_factory=dict, description="a value for each {{placeholder}} of the template"
    )


class AudienceIn(_Body):
    label: str = Field(
        min_length=1,
        max_length=100,
        description="every conversation of the campaign's channel with this label",
    )


class CampaignCreate(_Body):
    name: str = Field(min_length=1, max_length=200)
    channel_id: str = Field(
        pattern=r"^[0-9a-f]{24}$", description="the channel (number) to send from"
    )
    template: TemplateBody = Field(
        description="Meta's template object; {{name}} in its components' strings is filled in "
        "per recipient"
    )
    recipients: list[RecipientIn] | None = Field(
        default=None,
        max_length=10_000,
        description="up to 10,000 here; more with a CSV upload to a draft",
    )
    audience: AudienceIn | None = None
    schedule_at: AwareDatetime | None = Field(
        default=None, description="start then (with a time zone); now when absent"
    )
    draft: bool = Field(
        default=False,
        description="keep it a draft (add recipients, then POST /api/campaigns/{id}/start)",
    )

    @model_validator(mode="after")
    def _one_source(self) -> CampaignCreate:
        if self.recipients is not None and self.audience is not None:
            raise ValueError("give recipients or an audience, not both")
        if not self.draft and self.recipients is None and self.audience is None:
            raise ValueError(
                "give recipients or an audience, or create a draft (draft: true) and upload "
                "a CSV of recipients to it"
            )
        return self


class CampaignStart(_Body):
    schedule_at: AwareDatetime | None = Field(
        default=None, description="start then (with a time zone); now when absent"
    )


class RecipientsAdd(_Body):
    recipients: list[RecipientIn] = Field(min_length=1, max_length=10_000)


class RefusedRow(BaseModel):
    row: int = Field(description="the row's number (a CSV's header is row 1)")
    wa_id: str | None
    reason: str


class RecipientsReport(BaseModel):
    accepted: int = Field(description="new recipients stored")
    duplicates: int = Field(description="rows naming a recipient already stored: sent once")
    refused: int
    refused_rows: list[RefusedRow] = Field(description="the first 100 refused rows, and why")


class FailureGroup(BaseModel):
    code: int | None = Field(description="Meta's error code")
    title: str | None
    count: int


class Funnel(BaseModel):
    counts: dict[str, int] = Field(
        description="recipients in each state now: not_queued, queued, sending, retrying, "
        "held, paused, accepted, sent, delivered, read, failed, cancelled"
    )
    reached: dict[str, int] = Field(description="recipients that reached sent, delivered, read")
    failed_by_code: list[FailureGroup]


class PausedOut(BaseModel):
    by: str = Field(description="auto (a risk signal from Meta) or who paused it")
    signal: str | None = Field(description="Meta's error code or the webhook's event")
    reason: str
    at: datetime


class CampaignOut(BaseModel):
    id: str
    name: str
    channel_id: str
    phone_number_id: str
    template: dict[str, Any]
    status: str = Field(description="draft, scheduled, running, paused, cancelled, completed")
    schedule_at: datetime | None
    recipients: int = Field(description="recipients stored")
    queued: int = Field(description="messages the fan-out queued so far")
    fanned_out: bool = Field(description="every recipient has its message")
    paused: PausedOut | None
    created_by: str
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    cancelled_at: datetime | None
    funnel: Funnel | None = Field(default=None, description="in GET /api/campaigns/{id}")


class CampaignCreated(CampaignOut):
    report: RecipientsReport | None = Field(description="what became of the recipients given")


class CampaignRecipientOut(BaseModel):
    message_id: str
    wa_id: str | None
    state: str = Field(description="the recipient's bucket in the funnel")
    send_state: str | None
    status: str | None = Field(description="Meta's last status of the message")
    wamid: str
    conversation_id: str | None
    attempts: int
    error: dict[str, Any] | None = Field(description="Meta's code, title and details")
    last_error: dict[str, Any] | None
