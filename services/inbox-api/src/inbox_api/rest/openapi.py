"""The OpenAPI 3.1 document at ``/api/openapi.json``, built from the pydantic schemas: one
entry per route, with its request body (validation schema), its success answer
(serialization schema) and the error codes it can answer (the one error shape)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from inbox_api.campaigns.service import BUCKETS
from inbox_api.rest.campaign_schemas import (
    CampaignCreate,
    CampaignCreated,
    CampaignOut,
    CampaignRecipientOut,
    CampaignStart,
    RecipientsAdd,
    RecipientsReport,
)
from inbox_api.rest.outgoing import OutgoingMessage
from inbox_api.rest.schemas import (
    AgentCreate,
    AgentCreated,
    AgentOut,
    AlertOut,
    AssignBody,
    ChannelCreate,
    ChannelCreated,
    ChannelOut,
    ChannelReconnect,
    ChannelReconnected,
    ConversationOut,
    ErrorBody,
    LabelsBody,
    MessageOut,
    NoteBody,
    Page,
    TokenOut,
    WebhookLogDetail,
    WebhookLogPage,
    WebhookReplay,
    WebhookReplayed,
)
from inbox_common import __version__
from inbox_common.alerts import AlertKind, AlertStatus, Severity
from inbox_common.health import HealthReport
from inbox_common.store.campaigns import STATUSES as CAMPAIGN_STATUSES

OPENAPI = web.AppKey("openapi", bytes)

_REF = "#/components/schemas/{model}"


def _query(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": "string", **schema},
    }


_PAGING = [
    _query("cursor", "next_cursor of the previous page"),
    _query("limit", "items per page", type="integer", minimum=1, maximum=200),
]
_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
_CONVERSATION_FILTERS = [
    _query("status", "open or closed", enum=["open", "closed"]),
    _query("channel_id", "one channel"),
    _query("wa_id", "the customer's phone"),
    _query("user_id", "the customer's business-scoped user id (BSUID)"),
    _query("assignee", "me, none, or an agent id"),
    _query("label", "conversations with this label"),
    _query("q", "search: the contact's name, phone, BSUID or username, or message text"),
]
_ALERT_FILTERS = [
    _query("status", "open, acknowledged or resolved", enum=[s.value for s in AlertStatus]),
    _query("severity", "P0 (critical) to P3 (low)", enum=[s.value for s in Severity]),
    _query("kind", "one kind of alert", enum=[k.value for k in AlertKind]),
]
_WEBHOOK_LOG_FILTERS = [
    _query("status", "received, processed or failed", enum=["received", "processed", "failed"]),
    _query(
        "since",
        "received at or after: an ISO 8601 time (2026-12-01T09:00:00Z) or a "
        "duration back from now (30m, 2h, 7d)",
    ),
    _query("phone_number_id", "events naming this number", pattern="^[0-9]{1,32}$"),
    _query(
        "reason",
        "events that failed with this error code (unknown_channel, store_refused, "
        "invalid_payload:invalid_json...)",
    ),
]
_IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "description": "the same key again returns the same message and sends nothing new",
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
}


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    summary: str
    ok: type[BaseModel] | None
    status: str = "200"
    body: type[BaseModel] | None = None
    params: list[dict[str, Any]] = field(default_factory=list)
    errors: tuple[str, ...] = ("401",)
    public: bool = False


ROUTES: tuple[Route, ...] = (
    Route("get", "/api/health", "Health of the service and its dependencies (no token)",
          HealthReport, errors=("503",), public=True),
    Route("post", "/api/channels", "Connect a WhatsApp number (admin)", ChannelCreated,
          status="201", body=ChannelCreate, errors=("400", "401", "403", "409", "422")),
    Route("get", "/api/channels", "The tenant's channels", Page[ChannelOut]),
    Route("post", "/api/channels/{id}/reconnect",
          "A new token for a channel Meta stopped (190, 368...); its held messages go out",
          ChannelReconnected, body=ChannelReconnect, params=_ID,
          errors=("400", "401", "403", "404", "422", "503")),
    Route("get", "/api/conversations", "Conversations, newest first", Page[ConversationOut],
          params=[*_CONVERSATION_FILTERS, *_PAGING], errors=("400", "401")),
    Route("get", "/api/conversations/{id}", "One conversation", ConversationOut,
          params=_ID, errors=("401", "404")),
    Route("get", "/api/conversations/{id}/messages",
          "Messages and notes, oldest first within a page; the cursor walks back in time",
          Page[MessageOut], params=[*_ID, *_PAGING], errors=("400", "401", "404")),
    Route("post", "/api/conversations/{id}/messages",
          "Send a message (stored and queued: 202); outside the 24-hour window only templates",
          MessageOut, status="202", body=OutgoingMessage, params=[*_ID, _IDEMPOTENCY],
          errors=("400", "401", "404", "409", "422", "503")),
    Route("post", "/api/conversations/{id}/assign", "Assign to an agent (null: unassign)",
          ConversationOut, body=AssignBody, params=_ID, errors=("400", "401", "404", "422")),
    Route("post", "/api/conversations/{id}/close", "Close", ConversationOut, params=_ID,
          errors=("401", "404")),
    Route("post", "/api/conversations/{id}/reopen", "Reopen", ConversationOut, params=_ID,
          errors=("401", "404")),
    Route("post", "/api/conversations/{id}/read",
          "Mark read: the unread marks go, and Meta is told the last inbound message was read",
          ConversationOut, params=_ID, errors=("401", "404")),
    Route("put", "/api/conversations/{id}/labels", "Set the labels", ConversationOut,
          body=LabelsBody, params=_ID, errors=("400", "401", "404", "422")),
    Route("post", "/api/conversations/{id}/notes",
          "Add an internal note (listed with the messages, never sent)", MessageOut,
          status="201", body=NoteBody, params=_ID, errors=("400", "401", "404", "422")),
    Route("post", "/api/agents", "Create an agent and its token (admin)", AgentCreated,
          status="201", body=AgentCreate, errors=("400", "401", "403", "409", "422")),
    Route("get", "/api/agents", "The tenant's agents", Page[AgentOut]),
    Route("get", "/api/tokens", "The tenant's API tokens, without their secrets (admin)",
          Page[TokenOut], errors=("401", "403")),
    Route("delete", "/api/tokens/{id}", "Revoke a token: it stops working within seconds",
          None, status="204", params=_ID, errors=("401", "403", "404")),
    Route("get", "/api/admin/webhook-logs",
          "The webhook ledger, newest first (admin: own channels; superadmin: all), with the "
          "filter's failures by reason",
          WebhookLogPage, params=[*_WEBHOOK_LOG_FILTERS, *_PAGING],
          errors=("400", "401", "403")),
    Route("get", "/api/admin/webhook-logs/{id}", "One webhook event with its raw body",
          WebhookLogDetail, params=_ID, errors=("401", "403", "404")),
    Route("post", "/api/admin/webhook-logs/replay",
          "Replay the failed (or received) events a filter selects through the consumer, oldest "
          "first, up to limit (202: RabbitMQ has them)", WebhookReplayed, status="202",
          body=WebhookReplay, errors=("400", "401", "403", "422", "503")),
    Route("post", "/api/admin/webhook-logs/{id}/replay",
          "Replay one event's raw body through the consumer, whatever its status (202; a "
          "processed event stays as it is)", WebhookReplayed, status="202", params=_ID,
          errors=("401", "403", "404", "503")),
    Route("get", "/api/admin/alerts",
          "Alerts, newest first (admin: own tenant's; superadmin: all, platform-wide too)",
          Page[AlertOut], params=[*_ALERT_FILTERS, *_PAGING], errors=("400", "401", "403")),
    Route("get", "/api/admin/alerts/{id}", "One alert", AlertOut, params=_ID,
          errors=("401", "403", "404")),
    Route("post", "/api/admin/alerts/{id}/ack",
          "Acknowledge an open alert (an acknowledged one stays as it is; resolved: 409)",
          AlertOut, params=_ID, errors=("401", "403", "404", "409")),
    Route("post", "/api/admin/alerts/{id}/resolve",
          "Resolve an alert by hand (a resolved one answers as it is)", AlertOut, params=_ID,
          errors=("401", "403", "404")),
    Route("post", "/api/campaigns",
          "Create a template campaign with its recipients (admin); it starts now, at "
          "schedule_at, or stays a draft", CampaignCreated, status="201", body=CampaignCreate,
          errors=("400", "401", "403", "409", "422")),
    Route("get", "/api/campaigns", "Campaigns, newest first", Page[CampaignOut],
          params=[_query("status", "one status", enum=list(CAMPAIGN_STATUSES)), *_PAGING],
          errors=("400", "401")),
    Route("get", "/api/campaigns/{id}", "One campaign with its funnel", CampaignOut,
          params=_ID, errors=("401", "404")),
    Route("post", "/api/campaigns/{id}/recipients",
          "Add recipients to a draft: JSON, or text/csv (a header naming wa_id and the "
          "placeholders), each row checked; the refused ones reported", RecipientsReport,
          body=RecipientsAdd, params=_ID, errors=("400", "401", "403", "404", "409", "413",
                                                   "415", "422")),
    Route("get", "/api/campaigns/{id}/recipients",
          "The recipients queued, with their message's state (filter by bucket and code)",
          Page[CampaignRecipientOut],
          params=[*_ID, _query("status", "a funnel bucket", enum=list(BUCKETS)),
                  _query("code", "Meta's error code", type="integer"), *_PAGING],
          errors=("400", "401", "404")),
    Route("post", "/api/campaigns/{id}/start", "Start a draft now or at schedule_at",
          CampaignOut, body=CampaignStart, params=_ID,
          errors=("400", "401", "403", "404", "409", "422")),
    Route("post", "/api/campaigns/{id}/pause",
          "Pause: no new send starts (within a send); the fan-out stops", CampaignOut,
          params=_ID, errors=("401", "403", "404", "409")),
    Route("post", "/api/campaigns/{id}/resume",
          "Resume a paused campaign: its waiting messages are queued again", CampaignOut,
          params=_ID, errors=("401", "403", "404", "409")),
    Route("post", "/api/campaigns/{id}/cancel",
          "Cancel: every message not yet sent is cancelled, also those waiting for a retry",
          CampaignOut, params=_ID, errors=("401", "403", "404", "409")),
    Route("get", "/api/ws",
          "Live updates over a WebSocket (upgrade; the token in the Authorization header or "
          "the first message; see docs/api.md)", None, status="101",
          params=[_query("last_event_id", "resume after this event (or be told to reload)")],
          errors=("400", "503"), public=True),
)  # fmt: skip


@functools.cache  # the routes and schemas are fixed: built once per process
def build_openapi() -> bytes:
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorBody, "serialization")]
    for route in ROUTES:
        if route.ok is not None:
            wanted.append((route.ok, "serialization"))
        if route.body is not None:
            wanted.append((route.body, "validation"))
    refs, schemas = models_json_schema(list(dict.fromkeys(wanted)), ref_template=_REF)

    def content(model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        return {"application/json": {"schema": refs[(model, mode)]}}

    error = {"description": "error", "content": content(ErrorBody, "serialization")}
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        answer: dict[str, Any] = {"description": "success"}
        if route.ok is not None:
            answer["content"] = content(route.ok, "serialization")
        op: dict[str, Any] = {
            "summary": route.summary,
            "operationId": f"{route.method}_{route.path.strip('/').replace('/', '_')}",
            "parameters": route.params,
            "responses": {route.status: answer, **dict.fromkeys(route.errors, error)},
        }
        if route.body is not None:
            op["requestBody"] = {"required": True, "content": content(route.body, "validation")}
        if route.public:
            op["security"] = []
        paths.setdefault(route.path, {})[route.method] = op
    health = paths["/api/health"]["get"]
    health["responses"]["503"] = {
        "description": "a critical dependency is down",
        "content": content(HealthReport, "serialization"),
    }
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "WhatsApp Inbox API", "version": __version__},
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
    return orjson.dumps(doc)
