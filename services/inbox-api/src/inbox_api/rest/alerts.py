"""REST handlers of the alerts: what needs an operator, as the services raised it
(``inbox_common.alerts``), listed, acknowledged (someone is on it) and resolved by hand.

Admins only. A tenant's admin sees its own tenant's alerts; a superadmin sees every tenant's
and the platform-wide ones (no tenant). Another tenant's alert answers 404, exactly like an
id that exists nowhere: a 403 would tell that the id exists.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web
from bson import ObjectId

from inbox_api.errors import NotFoundError
from inbox_api.rest import pagination, views
from inbox_api.rest.auth import PRINCIPAL, Principal
from inbox_api.rest.bodies import out
from inbox_api.rest.schemas import Page
from inbox_common.alerts import AlertKind, Alerts, AlertStatus, Severity
from inbox_common.http import ApiError
from inbox_common.store.client import DATABASE, Document
from inbox_common.tokens import Role

# The listing's filters: each one's allowed values (anything else is a 400 naming them).
FILTERS: dict[str, tuple[str, ...]] = {
    "status": tuple(s.value for s in AlertStatus),
    "severity": tuple(s.value for s in Severity),
    "kind": tuple(k.value for k in AlertKind),
}


def _scope(principal: Principal) -> str | None:
    """The reader's tenant (admin), or ``None`` (superadmin: every alert); agents get 403."""
    principal.require(Role.ADMIN)
    return None if principal.role is Role.SUPERADMIN else principal.tenant


def _operator(principal: Principal) -> str:
    """Who acted, as the alert records it: the token's agent, or else the token's role and
    tenant (never the token nor its hash)."""
    if principal.agent_id is not None:
        return f"agent:{principal.agent_id}"
    return f"token:{principal.role.value}@{principal.tenant}"


def _filters(params: Mapping[str, str]) -> Document:
    query: Document = {}
    for name, allowed in FILTERS.items():
        value = params.get(name)
        if value is None:
            continue
        if value not in allowed:
            raise ApiError(
                400,
                f"invalid_{name}",
                f"{name} must be one of {', '.join(allowed)}",
                {"field": name},
            )
        query[name] = value
    return query


async def list_alerts(request: web.Request) -> web.Response:
    """Newest first (by when each alert was opened), filtered by status, severity and kind."""
    params = request.query
    limit = pagination.limit(params.get("limit"))
    before = pagination.decode(params["cursor"])[1] if "cursor" in params else None
    docs = await Alerts(request.app[DATABASE]).page(
        scope=_scope(request[PRINCIPAL]), **_filters(params), before=before, limit=limit + 1
    )
    more = len(docs) > limit
    docs = docs[:limit]
    cursor = pagination.encode(None, docs[-1]["_id"]) if more else None
    return out(Page(items=[views.alert(d) for d in docs], next_cursor=cursor))


def _alert_id(request: web.Request) -> ObjectId:
    return pagination.object_id(request.match_info["id"], "alert")


def _found(doc: Document | None, oid: ObjectId) -> Document:
    if doc is None:
        raise NotFoundError("alert", oid)
    return doc


async def get_alert(request: web.Request) -> web.Response:
    scope = _scope(request[PRINCIPAL])
    oid = _alert_id(request)
    doc = await Alerts(request.app[DATABASE]).get(oid, scope=scope)
    return out(views.alert(_found(doc, oid)))


async def acknowledge_alert(request: web.Request) -> web.Response:
    """Someone is on it: an open alert becomes acknowledged, by the caller. An acknowledged
    one stays as it is (its first acknowledgement kept); a resolved one is a 409."""
    principal = request[PRINCIPAL]
    scope = _scope(principal)
    oid = _alert_id(request)
    alerts = Alerts(request.app[DATABASE])
    doc = _found(await alerts.acknowledge(oid, scope=scope, by=_operator(principal)), oid)
    if doc["status"] == AlertStatus.RESOLVED.value:
        raise ApiError(
            409,
            "alert_resolved",
            f"alert {oid} is resolved: there is nothing to acknowledge; if its condition "
            "comes back, a new alert opens",
        )
    return out(views.alert(doc))


async def resolve_alert(request: web.Request) -> web.Response:
    """Resolve by hand (the condition is dealt with). Idempotent: a resolved alert answers
    200 as it is, with its first resolution. Should the condition still hold, the next check
    opens a new alert."""
    principal = request[PRINCIPAL]
    scope = _scope(principal)
    oid = _alert_id(request)
    alerts = Alerts(request.app[DATABASE])
    doc = await alerts.resolve_id(oid, scope=scope, by=_operator(principal))
    return out(views.alert(_found(doc, oid)))
