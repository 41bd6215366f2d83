"""REST handlers of the admin side: channels, the webhook logs (and their replays), agents
and their tokens."""

from __future__ import annotations

import re
from collections.abc import Mapping

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
    WebhookLogPage,
    WebhookReplay,
    WebhookReplayed,
)
from inbox_common.broker.connection import NAMES
from inbox_common.broker.publisher import PUBLISHER
from inbox_common.durations import SINCE_FORM, parse_since
from inbox_common.http import ApiError
from inbox_common.store.ledger import REPLAYABLE, STATUSES, LedgerFilter
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


# The webhook logs' filters besides status: each one's allowed form, named in its 400.
_PHONE_NUMBER_ID = re.compile(r"[0-9]{1,32}")
_REASON = re.compile(r"[a-z0-9_]{1,64}(:[a-z0-9_]{1,64})?")
_PHONE_NUMBER_ID_FORM = "a Meta phone number ID: 1 to 32 digits"
_REASON_FORM = (
    "an error code: unknown_channel, store_refused, invalid_payload:invalid_json, "
    "invalid_payload:not_an_object or invalid_payload:schema (lowercase letters, digits, _ "
    "and one :)"
)
_REPLAY_STATUS_FORM = (
    f"{' or '.join(REPLAYABLE)} (a processed event needs no replay; "
    "POST /api/admin/webhook-logs/{id}/replay sends one event again whatever its status)"
)


def _bad_filter(name: str, form: str) -> ApiError:
    return ApiError(400, f"invalid_{name}", f"{name} must be {form}", {"field": name})


def _webhook_filter(
    values: Mapping[str, str | None], numbers: list[str] | None, *, replay: bool = False
) -> LedgerFilter:
    """The listing's filters (and the bulk replay's), within the reader's numbers; a wrong
    one is a 400 that names it and its allowed form."""
    status = values.get("status")
    allowed = REPLAYABLE if replay else STATUSES
    if status is not None and status not in allowed:
        raise _bad_filter(
            "status", _REPLAY_STATUS_FORM if replay else f"one of {', '.join(allowed)}"
        )
    since = values.get("since")
    try:
        moment = None if since is None else parse_since(since)
    except ValueError:
        raise _bad_filter("since", SINCE_FORM) from None
    number = values.get("phone_number_id")
    if number is not None and not _PHONE_NUMBER_ID.fullmatch(number):
        raise _bad_filter("phone_number_id", _PHONE_NUMBER_ID_FORM)
    reason = values.get("reason")
    if reason is not None and not _REASON.fullmatch(reason):
        raise _bad_filter("reason", _REASON_FORM)
    return LedgerFilter(
        status=status,
        error_code=reason,
        phone_number_id=number,
        since=moment,
        within=None if numbers is None else tuple(numbers),
    )


async def list_webhook_logs(request: web.Request) -> web.Response:
    numbers = await _webhook_scope(request)
    params = request.query
    selection = _webhook_filter(params, numbers)
    limit = pagination.limit(params.get("limit"))
    before = pagination.decode(params["cursor"])[1] if "cursor" in params else None
    logs = request.app[WEBHOOK_LOGS]
    docs, more = await logs.page(selection, before=before, limit=limit)
    cursor = pagination.encode(None, docs[-1]["_id"]) if more else None
    return out(
        WebhookLogPage(
            items=[views.webhook_log(d, numbers) for d in docs],
            next_cursor=cursor,
            reasons=await logs.reasons(selection),
        )
    )


async def get_webhook_log(request: web.Request) -> web.Response:
    numbers = await _webhook_scope(request)
    oid = pagination.object_id(request.match_info["id"], "webhook event")
    doc = await request.app[WEBHOOK_LOGS].get(oid, numbers=numbers)
    return out(views.webhook_log_detail(doc, numbers))


async def replay_webhook_log(request: web.Request) -> web.Response:
    """Send one event's stored body through the consumer again (202: RabbitMQ has it)."""
    numbers = await _webhook_scope(request)
    oid = pagination.object_id(request.match_info["id"], "webhook event")
    app = request.app
    await app[WEBHOOK_LOGS].replay_one(
        oid, numbers=numbers, publisher=app[PUBLISHER], names=app[NAMES]
    )
    return out(WebhookReplayed(replayed=1, matched=1), status=202)


async def replay_webhook_logs(request: web.Request) -> web.Response:
    """Send the events a filter selects through the consumer again, oldest first, up to the
    body's ``limit`` (202: RabbitMQ has them)."""
    numbers = await _webhook_scope(request)
    body = await read_body(request, WebhookReplay)
    selection = _webhook_filter(body.model_dump(exclude={"limit"}), numbers, replay=True)
    app = request.app
    replayed, matched = await app[WEBHOOK_LOGS].replay(
        selection, limit=body.limit, publisher=app[PUBLISHER], names=app[NAMES]
    )
    return out(WebhookReplayed(replayed=replayed, matched=matched), status=202)


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
