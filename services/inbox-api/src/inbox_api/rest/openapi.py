"""The OpenAPI 3.1 document at ``/api/openapi.json``, built from the pydantic schemas."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, models_json_schema

from inbox_api.rest.schemas import (
    ChannelCreate,
    ChannelCreated,
    ChannelOut,
    ConversationOut,
    ErrorBody,
    MessageOut,
    Page,
    WebhookLogDetail,
    WebhookLogOut,
)
from inbox_common import __version__
from inbox_common.health import HealthReport

OPENAPI = web.AppKey("openapi", bytes)

_REF = "#/components/schemas/{model}"
_PAGING = [
    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}},
]
_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    # The key pydantic gives the model under components/schemas (Page[ChannelOut] becomes
    # Page_ChannelOut_), so that every $ref resolves.
    name = GenerateJsonSchema(ref_template=_REF).normalize_name(model.__name__)
    return {"$ref": _REF.format(model=name)}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _op(
    summary: str,
    ok: type[BaseModel],
    *,
    status: str = "200",
    params: list[dict[str, Any]] | None = None,
    body: type[BaseModel] | None = None,
    errors: tuple[str, ...] = ("401",),
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": params or [],
        "responses": {
            status: _json(ok, "success"),
            **{code: _json(ErrorBody, "error") for code in errors},
        },
    }
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    return op


def build_openapi() -> bytes:
    models: list[type[BaseModel]] = [
        ChannelCreate,
        ChannelCreated,
        ChannelOut,
        ConversationOut,
        MessageOut,
        WebhookLogOut,
        WebhookLogDetail,
        ErrorBody,
        HealthReport,
        Page[ChannelOut],
        Page[ConversationOut],
        Page[MessageOut],
        Page[WebhookLogOut],
    ]
    _, schemas = models_json_schema([(m, "serialization") for m in models], ref_template=_REF)
    status_filter = {"name": "status", "in": "query", "schema": {"type": "string"}}
    health = _op("Health of the service and its dependencies (no token)", HealthReport, errors=())
    health["responses"]["503"] = _json(HealthReport, "a critical dependency is down")
    health["security"] = []
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "WhatsApp Inbox API", "version": __version__},
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/health": {"get": health},
            "/api/channels": {
                "post": _op(
                    "Connect a WhatsApp number (admin)",
                    ChannelCreated,
                    status="201",
                    body=ChannelCreate,
                    errors=("400", "401", "403", "409", "422"),
                ),
                "get": _op("The tenant's channels", Page[ChannelOut]),
            },
            "/api/conversations": {
                "get": _op(
                    "Conversations, newest first",
                    Page[ConversationOut],
                    params=[
                        status_filter,
                        {"name": "channel_id", "in": "query", "schema": {"type": "string"}},
                        {"name": "wa_id", "in": "query", "schema": {"type": "string"}},
                        {"name": "user_id", "in": "query", "schema": {"type": "string"}},
                        *_PAGING,
                    ],
                    errors=("400", "401"),
                )
            },
            "/api/conversations/{id}": {
                "get": _op("One conversation", ConversationOut, params=_ID, errors=("401", "404"))
            },
            "/api/conversations/{id}/messages": {
                "get": _op(
                    "Messages, oldest first within a page; the cursor walks back in time",
                    Page[MessageOut],
                    params=[*_ID, *_PAGING],
                    errors=("400", "401", "404"),
                )
            },
            "/api/admin/webhook-logs": {
                "get": _op(
                    "The webhook ledger, newest first (admin: own channels; superadmin: all)",
                    Page[WebhookLogOut],
                    params=[status_filter, *_PAGING],
                    errors=("400", "401", "403"),
                )
            },
            "/api/admin/webhook-logs/{id}": {
                "get": _op(
                    "One webhook event with its raw body",
                    WebhookLogDetail,
                    params=_ID,
                    errors=("401", "403", "404"),
                )
            },
        },
    }
    return orjson.dumps(doc)
