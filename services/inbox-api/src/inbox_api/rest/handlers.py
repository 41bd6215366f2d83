"""REST handlers: parse the request, call a service, answer (channels, conversations,
messages, webhook logs). Errors are the services' to raise and the middleware's to shape."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from inbox_api.keys import CHANNELS, CONVERSATIONS, WEBHOOK_LOGS
from inbox_api.rest import pagination, views
from inbox_api.rest.auth import PRINCIPAL
from inbox_api.rest.openapi import OPENAPI
from inbox_api.rest.schemas import ChannelCreate, ChannelCreated, Page
from inbox_api.webhook_logs import WEBHOOK_STATUSES
from inbox_common.http import ApiError, json_response
from inbox_common.tokens import Role

ModelT = TypeVar("ModelT", bound=BaseModel)


async def _body(request: web.Request, model: type[ModelT]) -> ModelT:
    raw = await request.read()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
            for e in exc.errors()
        ]
        first = details[0]
        raise ApiError(
            422, "validation_error", f"{first['field']}: {first['message']}", details
        ) from None


def _out(model: BaseModel, status: int = 200) -> web.Response:
    return json_response(model.model_dump(mode="json"), status=status)


async def create_channel(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    principal.require(Role.ADMIN)
    body = await _body(request, ChannelCreate)
    tenant = principal.tenant
    if body.tenant is not None and body.tenant != tenant:
        principal.require(Role.SUPERADMIN)
        tenant = body.tenant
    doc, replayed = await request.app[CHANNELS].create(
        tenant=tenant, fields=body.model_dump(exclude={"tenant"})
    )
    created = ChannelCreated(**views.channel(doc).model_dump(), replayed_webhooks=replayed)
    return _out(created, status=201)


async def list_channels(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    tenant = None if principal.role is Role.SUPERADMIN else principal.tenant
    docs = await request.app[CHANNELS].for_tenant(tenant)
    return _out(Page(items=[views.channel(d) for d in docs], next_cursor=None))


async def list_conversations(request: web.Request) -> web.Response:
    query: dict[str, Any] = request[PRINCIPAL].scope()
    params = request.query
    if "status" in params:
        query["status"] = params["status"]
    if "channel_id" in params:
        query["channel_id"] = pagination.object_id(params["channel_id"], "channel", status=400)
    for identifier in ("wa_id", "user_id"):  # the phone, or the business-scoped user id
        if identifier in params:
            query[identifier] = params[identifier]
    limit = pagination.limit(params.get("limit"))
    after = pagination.decode(params["cursor"]) if "cursor" in params else None
    docs, more = await request.app[CONVERSATIONS].page(query, after=after, limit=limit)
    cursor = pagination.encode(docs[-1].get("last_message_at"), docs[-1]["_id"]) if more else None
    return _out(Page(items=[views.conversation(d) for d in docs], next_cursor=cursor))


async def _conversation(request: web.Request) -> dict[str, Any]:
    oid = pagination.object_id(request.match_info["id"], "conversation")
    return await request.app[CONVERSATIONS].get(oid, request[PRINCIPAL].scope())


async def get_conversation(request: web.Request) -> web.Response:
    return _out(views.conversation(await _conversation(request)))


async def list_messages(request: web.Request) -> web.Response:
    conversation = await _conversation(request)
    params = request.query
    limit = pagination.limit(params.get("limit"))
    before = pagination.decode_position(params["cursor"]) if "cursor" in params else None
    docs, more = await request.app[CONVERSATIONS].messages(conversation, before=before, limit=limit)
    cursor = pagination.encode(docs[-1]["timestamp"], docs[-1]["_id"]) if more else None
    docs.reverse()  # oldest first within the page; the cursor walks back in time
    return _out(Page(items=[views.message(d) for d in docs], next_cursor=cursor))


async def _webhook_scope(request: web.Request) -> list[str] | None:
    """The reader's phone_number_ids (admin), or ``None`` (superadmin: every tenant)."""
    principal = request[PRINCIPAL]
    principal.require(Role.ADMIN)
    if principal.role is Role.SUPERADMIN:
        return None
    return await request.app[CHANNELS].phone_number_ids(principal.tenant)


async def list_webhook_logs(request: web.Request) -> web.Response:
    numbers = await _webhook_scope(request)
    params = request.query
    status = params.get("status")
    if status is not None and status not in WEBHOOK_STATUSES:
        raise ApiError(
            400,
            "invalid_status",
            f"status must be one of {', '.join(WEBHOOK_STATUSES)}",
            {"field": "status"},
        )
    limit = pagination.limit(params.get("limit"))
    before = pagination.decode(params["cursor"])[1] if "cursor" in params else None
    docs, more = await request.app[WEBHOOK_LOGS].page(
        numbers=numbers, status=status, before=before, limit=limit
    )
    cursor = pagination.encode(None, docs[-1]["_id"]) if more else None
    return _out(Page(items=[views.webhook_log(d) for d in docs], next_cursor=cursor))


async def get_webhook_log(request: web.Request) -> web.Response:
    numbers = await _webhook_scope(request)
    oid = pagination.object_id(request.match_info["id"], "webhook event")
    doc = await request.app[WEBHOOK_LOGS].get(oid, numbers=numbers)
    return _out(views.webhook_log_detail(doc))


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/openapi.json", openapi)
    r.add_post("/api/channels", create_channel)
    r.add_get("/api/channels", list_channels)
    r.add_get("/api/conversations", list_conversations)
    r.add_get("/api/conversations/{id}", get_conversation)
    r.add_get("/api/conversations/{id}/messages", list_messages)
    r.add_get("/api/admin/webhook-logs", list_webhook_logs)
    r.add_get("/api/admin/webhook-logs/{id}", get_webhook_log)
