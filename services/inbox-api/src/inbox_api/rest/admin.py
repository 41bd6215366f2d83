"""REST handlers of the admin side: channels, the webhook logs, agents and their tokens."""

from __future__ import annotations

from aiohttp import web

from inbox_api.keys import AGENTS, CHANNELS, EVENTS, WEBHOOK_LOGS
from inbox_api.live import LIVE, TOKEN_REVOKED
from inbox_api.rest import pagination, views
from inbox_api.rest.auth import PRINCIPAL, TOKEN_CACHE, Principal
from inbox_api.rest.bodies import out, read_body
from inbox_api.rest.schemas import (
    AgentCreate,
    AgentCreated,
    ChannelCreate,
    ChannelCreated,
    ChannelReconnect,
    ChannelReconnected,
    Page,
)
from inbox_api.webhook_logs import WEBHOOK_STATUSES
from inbox_common.http import ApiError
from inbox_common.tokens import Role


def _tenant_or_all(principal: Principal) -> str | None:
    return None if principal.role is Role.SUPERADMIN else principal.tenant


async def create_channel(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    principal.require(Role.ADMIN)
    body = await read_body(request, ChannelCreate)
    tenant = principal.tenant
    if body.tenant is not None and body.tenant != tenant:
        principal.require(Role.SUPERADMIN)
        tenant = body.tenant
    doc, replayed = await request.app[CHANNELS].create(
        tenant=tenant, fields=body.model_dump(exclude={"tenant"})
    )
    created = ChannelCreated(**views.channel(doc).model_dump(), replayed_webhooks=replayed)
    return out(created, status=201)


async def reconnect_channel(request: web.Request) -> web.Response:
    """A new token for a channel Meta stopped (190...); its held messages go out now."""
    principal = request[PRINCIPAL]
    principal.require(Role.ADMIN)
    body = await read_body(request, ChannelReconnect)
    oid = pagination.object_id(request.match_info["id"], "channel")
    doc, requeued = await request.app[CHANNELS].reconnect(
        oid, _tenant_or_all(principal), body.access_token
    )
    request.app[EVENTS].channel(doc)
    return out(ChannelReconnected(**views.channel(doc).model_dump(), requeued_messages=requeued))


async def list_channels(request: web.Request) -> web.Response:
    docs = await request.app[CHANNELS].for_tenant(_tenant_or_all(request[PRINCIPAL]))
    return out(Page(items=[views.channel(d) for d in docs], next_cursor=None))


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
    return out(Page(items=[views.webhook_log(d, numbers) for d in docs], next_cursor=cursor))


async def get_webhook_log(request: web.Request) -> web.Response:
    numbers = await _webhook_scope(request)
    oid = pagination.object_id(request.match_info["id"], "webhook event")
    doc = await request.app[WEBHOOK_LOGS].get(oid, numbers=numbers)
    return out(views.webhook_log_detail(doc, numbers))


async def create_agent(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    principal.require(Role.ADMIN)
    body = await read_body(request, AgentCreate)
    doc, token = await request.app[AGENTS].create(
        tenant=principal.tenant, name=body.name, role=Role(body.role)
    )
    return out(AgentCreated(**views.agent(doc).model_dump(), token=token), status=201)


async def list_agents(request: web.Request) -> web.Response:
    docs = await request.app[AGENTS].for_tenant(_tenant_or_all(request[PRINCIPAL]))
    return out(Page(items=[views.agent(d) for d in docs], next_cursor=None))


async def list_tokens(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    principal.require(Role.ADMIN)
    docs = await request.app[AGENTS].tokens(_tenant_or_all(principal))
    return out(Page(items=[views.token(d) for d in docs], next_cursor=None))


async def revoke_token(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    principal.require(Role.ADMIN)
    oid = pagination.object_id(request.match_info["id"], "token")
    token_hash = await request.app[AGENTS].revoke(oid, _tenant_or_all(principal))
    request.app[TOKEN_CACHE].forget(token_hash)
    # Every replica's cache forgets it now (and their entries expire within seconds anyway).
    request.app[LIVE].publish(principal.tenant, TOKEN_REVOKED, {"token_hash": token_hash})
    return web.Response(status=204)
