"""REST handlers of conversations: read them, send from them, and work them."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from inbox_api.keys import AGENTS, CONVERSATIONS, EVENTS, OUTBOUND
from inbox_api.rest import pagination, views
from inbox_api.rest.auth import PRINCIPAL, Principal
from inbox_api.rest.bodies import out, read_body
from inbox_api.rest.outgoing import OutgoingMessage
from inbox_api.rest.schemas import AssignBody, LabelsBody, NoteBody, Page
from inbox_common.http import ApiError
from inbox_common.store.client import Document

IDEMPOTENCY_HEADER = "Idempotency-Key"
_STATUSES = ("open", "closed")


async def list_conversations(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    service = request.app[CONVERSATIONS]
    query: dict[str, Any] = principal.scope()
    params = request.query
    if "status" in params:
        if params["status"] not in _STATUSES:
            raise ApiError(
                400, "invalid_status", "status must be open or closed", {"field": "status"}
            )
        query["status"] = params["status"]
    if "channel_id" in params:
        query["channel_id"] = pagination.object_id(params["channel_id"], "channel", status=400)
    for identifier in ("wa_id", "user_id"):  # the phone, or the business-scoped user id
        if identifier in params:
            query[identifier] = params[identifier]
    if "assignee" in params:
        query["assignee"] = _assignee(principal, params["assignee"])
    if "label" in params:
        query["labels"] = params["label"]
    if params.get("q"):
        query = {"$and": [query, await service.search(params["q"][:200], principal.scope())]}
    limit = pagination.limit(params.get("limit"))
    after = pagination.decode(params["cursor"]) if "cursor" in params else None
    docs, more = await service.page(query, after=after, limit=limit)
    cursor = pagination.encode(docs[-1].get("last_message_at"), docs[-1]["_id"]) if more else None
    return out(Page(items=[views.conversation(d) for d in docs], next_cursor=cursor))


def _assignee(principal: Principal, value: str) -> str | None:
    if value == "none":
        return None
    if value == "me":
        if principal.agent_id is None:
            raise ApiError(
                400,
                "not_an_agent",
                "assignee=me needs an agent's token (create one with POST /api/agents)",
                {"field": "assignee"},
            )
        return principal.agent_id
    return value


async def _conversation(request: web.Request) -> Document:
    oid = pagination.object_id(request.match_info["id"], "conversation")
    return await request.app[CONVERSATIONS].get(oid, request[PRINCIPAL].scope())


async def get_conversation(request: web.Request) -> web.Response:
    return out(views.conversation(await _conversation(request)))


async def list_messages(request: web.Request) -> web.Response:
    conversation = await _conversation(request)
    params = request.query
    limit = pagination.limit(params.get("limit"))
    before = pagination.decode_position(params["cursor"]) if "cursor" in params else None
    docs, more = await request.app[CONVERSATIONS].messages(conversation, before=before, limit=limit)
    cursor = pagination.encode(docs[-1]["timestamp"], docs[-1]["_id"]) if more else None
    docs.reverse()  # oldest first within the page; the cursor walks back in time
    return out(Page(items=[views.message(d) for d in docs], next_cursor=cursor))


async def send_message(request: web.Request) -> web.Response:
    """202: stored and queued; the same Idempotency-Key again returns the same message."""
    principal = request[PRINCIPAL]
    oid = pagination.object_id(request.match_info["id"], "conversation")
    message = await read_body(request, OutgoingMessage)
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is not None and not 1 <= len(key) <= 200:
        raise ApiError(
            400, "invalid_idempotency_key", f"{IDEMPOTENCY_HEADER} has 1 to 200 characters"
        )
    doc, new = await request.app[OUTBOUND].send(
        oid,
        principal.scope(),
        message,
        idempotency_key=key,
        sender=principal.agent_id or principal.token_hash[:12],
    )
    if new:
        events = request.app[EVENTS]
        events.message(doc, created=True)
        events.conversation(await request.app[CONVERSATIONS].get(oid, principal.scope()))
    return out(views.message(doc), status=202)


async def assign(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    body = await read_body(request, AssignBody)
    agent_id = None
    if body.agent_id is not None:
        agent_id = await request.app[AGENTS].known_id(body.agent_id, principal.tenant)
        if agent_id is None:
            raise ApiError(
                422, "unknown_agent", f"no agent {body.agent_id[:64]} in tenant {principal.tenant}",
                {"field": "agent_id"},
            )  # fmt: skip
    oid = pagination.object_id(request.match_info["id"], "conversation")
    doc = await request.app[CONVERSATIONS].assign(oid, principal.scope(), agent_id)
    return _changed(request, doc)


async def close(request: web.Request) -> web.Response:
    return await _set_status(request, "closed")


async def reopen(request: web.Request) -> web.Response:
    return await _set_status(request, "open")


async def _set_status(request: web.Request, status: str) -> web.Response:
    oid = pagination.object_id(request.match_info["id"], "conversation")
    doc = await request.app[CONVERSATIONS].set_status(oid, request[PRINCIPAL].scope(), status)
    return _changed(request, doc)


async def mark_read(request: web.Request) -> web.Response:
    """The unread marks go, and Meta is told the last inbound message was read."""
    oid = pagination.object_id(request.match_info["id"], "conversation")
    doc, last = await request.app[CONVERSATIONS].mark_read(oid, request[PRINCIPAL].scope())
    if last is not None:
        await request.app[OUTBOUND].queue_read(doc["channel_id"], last["wamid"])
    return _changed(request, doc)


async def set_labels(request: web.Request) -> web.Response:
    body = await read_body(request, LabelsBody)
    oid = pagination.object_id(request.match_info["id"], "conversation")
    doc = await request.app[CONVERSATIONS].set_labels(oid, request[PRINCIPAL].scope(), body.labels)
    return _changed(request, doc)


async def add_note(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    body = await read_body(request, NoteBody)
    oid = pagination.object_id(request.match_info["id"], "conversation")
    note = await request.app[CONVERSATIONS].add_note(
        oid, principal.scope(), body.body, author=principal.agent_id or "admin"
    )
    request.app[EVENTS].message(note, created=True)
    return out(views.message(note), status=201)


def _changed(request: web.Request, conversation: Document) -> web.Response:
    """Announce the conversation as it is now, and answer with it."""
    request.app[EVENTS].conversation(conversation)
    return out(views.conversation(conversation))
