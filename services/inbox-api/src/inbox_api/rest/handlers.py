"""REST handlers: channels, conversations, messages, webhook logs."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError
from pymongo.errors import DuplicateKeyError

from inbox_api.keys import CHANNELS, DB, INBOX, LEDGER, NAMES, PRINCIPAL, PUBLISHER
from inbox_api.rest import pagination, views
from inbox_api.rest.openapi import OPENAPI_KEY
from inbox_api.rest.schemas import ChannelCreate, ChannelCreated, Page
from inbox_common.broker.publisher import PublishFailedError
from inbox_common.http import ApiError, json_response
from inbox_common.logging import get_logger
from inbox_common.replay import ReplayFilter, replay_webhooks
from inbox_common.tokens import Role

log = get_logger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)
_WEBHOOK_STATUSES = ("received", "processed", "failed")


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
    fields = body.model_dump(exclude={"tenant"})
    try:
        doc = await request.app[CHANNELS].create(tenant=tenant, fields=fields)
    except DuplicateKeyError:
        raise ApiError(
            409,
            "conflict",
            f"a channel with phone_number_id {body.phone_number_id} already exists",
            {"field": "phone_number_id"},
        ) from None
    replayed = await _replay_unknown_channel(request, body.phone_number_id)
    created = ChannelCreated(**views.channel(doc).model_dump(), replayed_webhooks=replayed)
    return _out(created, status=201)


async def _replay_unknown_channel(request: web.Request, phone_number_id: str) -> int:
    """Meta got a 200 for events that arrived before the channel existed and will not resend
    them: replay them now. A broker outage does not fail the creation (replay them later with
    ``inbox-ops webhooks replay --error-code unknown_channel``)."""
    app = request.app
    selection = ReplayFilter(error_code="unknown_channel", phone_number_id=phone_number_id)
    try:
        replayed = await replay_webhooks(app[DB], app[PUBLISHER], app[NAMES], selection)
    except PublishFailedError as exc:
        log.warning("channel.replay_failed", phone_number_id=phone_number_id, error=str(exc))
        return 0
    if replayed:
        log.info("channel.replayed", phone_number_id=phone_number_id, events=replayed)
    return replayed


async def list_channels(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    tenant = None if principal.role is Role.SUPERADMIN else principal.tenant
    docs = await request.app[CHANNELS].for_tenant(tenant)
    return json_response(
        {"items": [views.channel(d).model_dump(mode="json") for d in docs], "next_cursor": None}
    )


async def list_conversations(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    query: dict[str, Any] = principal.scope()
    params = request.query
    if "status" in params:
        query["status"] = params["status"]
    if "channel_id" in params:
        query["channel_id"] = pagination.object_id(params["channel_id"], "channel", status=400)
    if "wa_id" in params:
        query["wa_id"] = params["wa_id"]
    limit = pagination.limit(params.get("limit"))
    after = pagination.decode(params["cursor"]) if "cursor" in params else None
    docs = await request.app[INBOX].conversations(query, after=after, limit=limit + 1)
    more = len(docs) > limit
    docs = docs[:limit]
    cursor = pagination.encode(docs[-1].get("last_message_at"), docs[-1]["_id"]) if more else None
    return _out(Page(items=[views.conversation(d) for d in docs], next_cursor=cursor))


async def _conversation(request: web.Request) -> dict[str, Any]:
    oid = pagination.object_id(request.match_info["id"], "conversation")
    doc = await request.app[INBOX].conversation({"_id": oid, **request[PRINCIPAL].scope()})
    if doc is None:
        # Another tenant's conversation is as absent as a missing one (404, never 403).
        raise ApiError(404, "not_found", f"no conversation with id {oid}")
    return doc


async def get_conversation(request: web.Request) -> web.Response:
    return _out(views.conversation(await _conversation(request)))


async def list_messages(request: web.Request) -> web.Response:
    conversation = await _conversation(request)
    params = request.query
    limit = pagination.limit(params.get("limit"))
    before = pagination.decode_position(params["cursor"]) if "cursor" in params else None
    docs = await request.app[INBOX].messages(conversation["_id"], before=before, limit=limit + 1)
    more = len(docs) > limit
    docs = docs[:limit]
    cursor = pagination.encode(docs[-1]["timestamp"], docs[-1]["_id"]) if more else None
    docs.reverse()  # oldest first within the page; the cursor walks back in time
    return _out(Page(items=[views.message(d) for d in docs], next_cursor=cursor))


async def _webhook_scope(request: web.Request) -> list[str] | None:
    principal = request[PRINCIPAL]
    principal.require(Role.ADMIN)
    if principal.role is Role.SUPERADMIN:
        return None
    return await request.app[CHANNELS].phone_number_ids(principal.tenant)


async def list_webhook_logs(request: web.Request) -> web.Response:
    numbers = await _webhook_scope(request)
    params = request.query
    status = params.get("status")
    if status is not None and status not in _WEBHOOK_STATUSES:
        raise ApiError(
            400,
            "invalid_status",
            f"status must be one of {', '.join(_WEBHOOK_STATUSES)}",
            {"field": "status"},
        )
    limit = pagination.limit(params.get("limit"))
    before = pagination.decode(params["cursor"])[1] if "cursor" in params else None
    docs = await request.app[LEDGER].page(
        status=status, phone_number_ids=numbers, before=before, limit=limit + 1
    )
    more = len(docs) > limit
    docs = docs[:limit]
    cursor = pagination.encode(None, docs[-1]["_id"]) if more else None
    return _out(Page(items=[views.webhook_log(d) for d in docs], next_cursor=cursor))


async def get_webhook_log(request: web.Request) -> web.Response:
    numbers = await _webhook_scope(request)
    oid = pagination.object_id(request.match_info["id"], "webhook event")
    doc = await request.app[LEDGER].get(oid)
    if doc is None or (
        numbers is not None and not set(doc.get("phone_number_ids") or []) & set(numbers)
    ):
        raise ApiError(404, "not_found", f"no webhook event with id {oid}")
    return _out(views.webhook_log_detail(doc))


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI_KEY], content_type="application/json")


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
