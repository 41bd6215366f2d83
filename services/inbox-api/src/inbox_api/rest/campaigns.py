"""REST handlers of the template campaigns (``inbox_api.campaigns``).

Admins create and steer campaigns of their tenant; any token of the tenant reads them. A
superadmin reads every tenant's and steers any (a campaign is created in the token's own
tenant). Another tenant's campaign answers 404, like an id that exists nowhere.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from inbox_api.campaigns.service import BUCKETS, bucket_of
from inbox_api.keys import CAMPAIGNS
from inbox_api.rest import pagination
from inbox_api.rest.auth import PRINCIPAL, Principal
from inbox_api.rest.bodies import out, read_body
from inbox_api.rest.campaign_schemas import (
    CampaignCreate,
    CampaignCreated,
    CampaignOut,
    CampaignRecipientOut,
    CampaignStart,
    Funnel,
    PausedOut,
    RecipientsAdd,
    RecipientsReport,
)
from inbox_api.rest.schemas import Page
from inbox_common.http import ApiError
from inbox_common.store.campaigns import STATUSES
from inbox_common.store.client import Document
from inbox_common.tokens import Role


def _scope(principal: Principal) -> str | None:
    return None if principal.role is Role.SUPERADMIN else principal.tenant


def _operator(principal: Principal) -> str:
    if principal.agent_id is not None:
        return f"agent:{principal.agent_id}"
    return f"token:{principal.role.value}@{principal.tenant}"


def view(doc: Document, funnel: dict[str, Any] | None = None) -> CampaignOut:
    fanout = doc.get("fanout") or {}
    paused = doc.get("paused")
    return CampaignOut(
        id=str(doc["_id"]),
        name=doc["name"],
        channel_id=str(doc["channel_id"]),
        phone_number_id=doc["phone_number_id"],
        template=doc["template"],
        status=doc["status"],
        schedule_at=doc.get("schedule_at"),
        recipients=int(doc.get("recipients") or 0),
        queued=int(fanout.get("queued") or 0),
        fanned_out=bool(fanout.get("done")),
        paused=PausedOut.model_validate(paused) if paused else None,
        created_by=doc["created_by"],
        created_at=doc["created_at"],
        started_at=doc.get("started_at"),
        completed_at=doc.get("completed_at"),
        cancelled_at=doc.get("cancelled_at"),
        funnel=Funnel.model_validate(funnel) if funnel is not None else None,
    )


async def _campaign(request: web.Request, *, steer: bool = False) -> Document:
    principal = request[PRINCIPAL]
    if steer:
        principal.require(Role.ADMIN)
    oid = pagination.object_id(request.match_info["id"], "campaign")
    return await request.app[CAMPAIGNS].get(oid, _scope(principal))


async def create_campaign(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    principal.require(Role.ADMIN)
    body = await read_body(request, CampaignCreate)
    service = request.app[CAMPAIGNS]
    campaign = await service.create(
        tenant=principal.tenant,
        name=body.name,
        channel_id=pagination.object_id(body.channel_id, "channel", status=422),
        template=body.template.model_dump(mode="json", exclude_none=True),
        created_by=_operator(principal),
    )
    report = None
    if body.recipients is not None:
        report = await service.add_list(campaign, body.recipients)
    elif body.audience is not None:
        report = await service.add_label(campaign, body.audience.label)
    campaign = await service.get(campaign["_id"], principal.tenant)
    if not body.draft and campaign.get("recipients"):
        campaign = await service.start(campaign, body.schedule_at)
    created = CampaignCreated(
        **view(campaign).model_dump(),
        report=RecipientsReport.model_validate(report.document()) if report else None,
    )
    return out(created, status=201)


async def list_campaigns(request: web.Request) -> web.Response:
    params = request.query
    status = params.get("status")
    if status is not None and status not in STATUSES:
        raise ApiError(
            400,
            "invalid_status",
            f"status must be one of {', '.join(STATUSES)}",
            {"field": "status"},
        )
    limit = pagination.limit(params.get("limit"))
    before = pagination.decode(params["cursor"])[1] if "cursor" in params else None
    docs = await request.app[CAMPAIGNS].campaigns.page(
        scope=_scope(request[PRINCIPAL]), status=status, before=before, limit=limit + 1
    )
    more = len(docs) > limit
    docs = docs[:limit]
    cursor = pagination.encode(None, docs[-1]["_id"]) if more else None
    return out(Page(items=[view(d) for d in docs], next_cursor=cursor))


async def get_campaign(request: web.Request) -> web.Response:
    campaign = await _campaign(request)
    return out(view(campaign, await request.app[CAMPAIGNS].funnel(campaign)))


async def add_recipients(request: web.Request) -> web.Response:
    """A CSV (``Content-Type: text/csv``: a header naming ``wa_id`` and the placeholders,
    read line by line) or JSON (``{"recipients": [...]}``), to a draft."""
    campaign = await _campaign(request, steer=True)
    service = request.app[CAMPAIGNS]
    if request.content_type == "text/csv":
        report = await service.add_csv(campaign, _lines(request))
    elif request.content_type in ("application/json", ""):
        body = await read_body(request, RecipientsAdd)
        report = await service.add_list(campaign, body.recipients)
    else:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send recipients as text/csv or application/json, not {request.content_type}",
        )
    return out(RecipientsReport.model_validate(report.document()))


async def _lines(request: web.Request) -> AsyncIterator[bytes]:
    try:
        async for line in request.content:
            yield line
    except ValueError as exc:  # aiohttp's bound on one line
        raise ApiError(413, "csv_line_too_long", f"a CSV line is too long ({exc})") from None


async def start_campaign(request: web.Request) -> web.Response:
    campaign = await _campaign(request, steer=True)
    body = await read_body(request, CampaignStart) if request.can_read_body else CampaignStart()
    started = await request.app[CAMPAIGNS].start(campaign, body.schedule_at)
    return out(view(started))


async def pause_campaign(request: web.Request) -> web.Response:
    campaign = await _campaign(request, steer=True)
    paused = await request.app[CAMPAIGNS].pause(campaign, by=_operator(request[PRINCIPAL]))
    return out(view(paused))


async def resume_campaign(request: web.Request) -> web.Response:
    campaign = await _campaign(request, steer=True)
    return out(view(await request.app[CAMPAIGNS].resume(campaign)))


async def cancel_campaign(request: web.Request) -> web.Response:
    campaign = await _campaign(request, steer=True)
    cancelled, _ = await request.app[CAMPAIGNS].cancel(campaign)
    return out(view(cancelled))


async def list_recipients(request: web.Request) -> web.Response:
    """The campaign's queued recipients with their message's state, in the order queued;
    ``status`` is a funnel bucket, ``code`` Meta's error code."""
    campaign = await _campaign(request)
    params = request.query
    bucket = params.get("status")
    if bucket is not None and bucket not in BUCKETS:
        raise ApiError(
            400,
            "invalid_status",
            f"status must be one of {', '.join(BUCKETS)}",
            {"field": "status"},
        )
    code = params.get("code")
    if code is not None and not (code.isascii() and code.isdigit() and len(code) <= 9):
        raise ApiError(400, "invalid_code", "code must be Meta's numeric error code, e.g. 131026")
    limit = pagination.limit(params.get("limit"))
    after = pagination.decode(params["cursor"])[1] if "cursor" in params else None
    docs = await request.app[CAMPAIGNS].recipients_page(
        campaign,
        bucket=bucket,
        code=int(code) if code is not None else None,
        after=after,
        limit=limit + 1,
    )
    more = len(docs) > limit
    docs = docs[:limit]
    cursor = pagination.encode(None, docs[-1]["_id"]) if more else None
    return out(Page(items=[_recipient(d) for d in docs], next_cursor=cursor))


def _recipient(doc: Document) -> CampaignRecipientOut:
    conversation = doc.get("conversation_id")
    return CampaignRecipientOut(
        message_id=str(doc["_id"]),
        wa_id=(doc.get("recipient") or {}).get("wa_id"),
        state=bucket_of(doc.get("send_state"), doc.get("status")),
        send_state=doc.get("send_state"),
        status=doc.get("status"),
        wamid=doc["wamid"],
        conversation_id=str(conversation) if conversation else None,
        attempts=int(doc.get("attempts") or 0),
        error=doc.get("error"),
        last_error=doc.get("last_error"),
    )


def add_campaign_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/campaigns", create_campaign)
    r.add_get("/api/campaigns", list_campaigns)
    r.add_get("/api/campaigns/{id}", get_campaign)
    r.add_post("/api/campaigns/{id}/recipients", add_recipients)
    r.add_get("/api/campaigns/{id}/recipients", list_recipients)
    r.add_post("/api/campaigns/{id}/start", start_campaign)
    r.add_post("/api/campaigns/{id}/pause", pause_campaign)
    r.add_post("/api/campaigns/{id}/resume", resume_campaign)
    r.add_post("/api/campaigns/{id}/cancel", cancel_campaign)
