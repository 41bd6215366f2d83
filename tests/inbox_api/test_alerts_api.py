"""The alerts API (``/api/admin/alerts``) served by the real app over the real store.

Alerts are raised as the maintenance service raises them (``Alerts.raise_alert``), for two
tenants and for the platform itself, then listed, filtered, paged, acknowledged and resolved
through the API by each role.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import ClientResponse
from bson import ObjectId

from inbox_common.alerts import RULES, AlertKind, Alerts
from inbox_common.store.client import Database
from inbox_common.store.collections import ALERTS
from inbox_common.tokens import hash_token
from inbox_testkit.plugin import ApiClient
from inbox_testkit.tenants import Tokens, bearer

pytestmark = pytest.mark.integration

ALERTS_PATH = "/api/admin/alerts"
ALERT_FIELDS = {
    "id", "kind", "severity", "status", "tenant", "title", "evidence", "runbook",
    "first_seen", "last_seen", "count", "acknowledged_by", "acknowledged_at",
    "resolved_by", "resolved_at",
}  # fmt: skip
# name → (kind, tenant), raised in this order; ``acme_dead_letters`` is resolved at once.
SEEN: dict[str, tuple[AlertKind, str | None]] = {
    "acme_disconnected": (AlertKind.CHANNEL_DISCONNECTED, "acme"),
    "acme_quiet": (AlertKind.CHANNEL_QUIET, "acme"),
    "acme_dead_letters": (AlertKind.DEAD_LETTERS, "acme"),
    "globex_disconnected": (AlertKind.CHANNEL_DISCONNECTED, "globex"),
    "acme_many_disconnected": (AlertKind.CHANNELS_DISCONNECTED, "acme"),
    "platform_store": (AlertKind.STORE_UNREACHABLE, None),
}
NEWEST_FIRST = list(reversed(SEEN))


async def error_of(response: ClientResponse, status: int) -> dict[str, Any]:
    """Assert the status and the one error shape; return the error object."""
    assert response.status == status, await response.text()
    body = await response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert isinstance(error["code"], str), error
    assert isinstance(error["message"], str), error
    assert error["message"], error
    return error


async def ok(api: ApiClient, method: str, path: str, token: str) -> Any:
    response = await api.request(method, path, headers=bearer(token))
    assert response.status == 200, (method, path, await response.text())
    return await response.json()


async def listed(api: ApiClient, token: str, query: str = "") -> list[str]:
    """The ids the listing shows on its first page, in its order."""
    page = await ok(api, "GET", f"{ALERTS_PATH}{query}", token)
    return [item["id"] for item in page["items"]]


def iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.fixture
async def raised(db: Database) -> dict[str, str]:
    """The alerts of ``SEEN`` raised one after the other: name → id."""
    alerts = Alerts(db)
    ids = {}
    for name, (kind, tenant) in SEEN.items():
        doc = await alerts.raise_alert(
            kind,
            title=f"{name} seen",
            subject=name,
            tenant=tenant,
            evidence={"name": name, "since": datetime(2026, 1, 2, tzinfo=UTC)},
        )
        ids[name] = str(doc["_id"])
    resolved = await alerts.resolve(
        AlertKind.DEAD_LETTERS, subject="acme_dead_letters", tenant="acme", by="maintenance:test"
    )
    assert resolved is not None
    return ids


# --- listing --------------------------------------------------------------------------------


async def test_a_superadmin_lists_every_tenants_alerts_and_the_platforms_newest_first(
    api: ApiClient, tokens: Tokens, raised: dict[str, str]
) -> None:
    page = await ok(api, "GET", ALERTS_PATH, tokens.superadmin)

    assert [item["id"] for item in page["items"]] == [raised[n] for n in NEWEST_FIRST]
    assert page["next_cursor"] is None
    by_id = {item["id"]: item for item in page["items"]}
    for name, (kind, tenant) in SEEN.items():
        item = by_id[raised[name]]
        assert set(item) == ALERT_FIELDS, item
        assert (item["kind"], item["tenant"], item["title"]) == (kind.value, tenant, f"{name} seen")
        assert item["severity"] == RULES[kind].severity.value
        assert item["runbook"] == RULES[kind].runbook
        assert item["evidence"] == {"name": name, "since": "2026-01-02T00:00:00Z"}
        assert item["count"] == 1
        assert iso(item["first_seen"]) == iso(item["last_seen"])
    platform = by_id[raised["platform_store"]]
    assert (platform["tenant"], platform["severity"]) == (None, "P0")
    resolved = by_id[raised["acme_dead_letters"]]
    assert (resolved["status"], resolved["resolved_by"]) == ("resolved", "maintenance:test")


async def test_an_admin_lists_only_its_own_tenants_alerts(
    api: ApiClient, tokens: Tokens, raised: dict[str, str]
) -> None:
    acme = await listed(api, tokens.acme_admin)
    globex = await listed(api, tokens.globex_admin)

    assert acme == [raised[n] for n in NEWEST_FIRST if SEEN[n][1] == "acme"]
    assert globex == [raised["globex_disconnected"]]


@pytest.mark.parametrize(
    ("who", "query", "expected"),
    [
        ("superadmin", "?status=open",
         [n for n in NEWEST_FIRST if n != "acme_dead_letters"]),
        ("superadmin", "?status=resolved", ["acme_dead_letters"]),
        ("superadmin", "?status=acknowledged", []),
        ("superadmin", "?severity=P2",
         ["globex_disconnected", "acme_dead_letters", "acme_disconnected"]),
        ("superadmin", "?severity=P0", ["platform_store"]),
        ("superadmin", "?kind=channel_disconnected", ["globex_disconnected", "acme_disconnected"]),
        ("acme_admin", "?kind=channel_disconnected", ["acme_disconnected"]),
        ("acme_admin", "?severity=P2&status=open", ["acme_disconnected"]),
        ("acme_admin", "?severity=P0", []),
        ("acme_admin", "?kind=channel_quiet&severity=P3&status=open", ["acme_quiet"]),
    ],
)  # fmt: skip
async def test_the_listing_filters_by_status_severity_and_kind(
    api: ApiClient,
    tokens: Tokens,
    raised: dict[str, str],
    who: str,
    query: str,
    expected: list[str],
) -> None:
    assert await listed(api, getattr(tokens, who), query) == [raised[n] for n in expected]


@pytest.mark.parametrize(
    ("query", "code", "field"),
    [
        ("?status=lost", "invalid_status", "status"),
        ("?status=OPEN", "invalid_status", "status"),
        ("?severity=P4", "invalid_severity", "severity"),
        ("?severity=p0", "invalid_severity", "severity"),
        ("?kind=fire", "invalid_kind", "kind"),
        ("?limit=0", "invalid_limit", "limit"),
        ("?limit=201", "invalid_limit", "limit"),
    ],
)
async def test_a_bad_filter_is_400_naming_the_field_and_its_values(
    api: ApiClient, tokens: Tokens, query: str, code: str, field: str
) -> None:
    response = await api.get(f"{ALERTS_PATH}{query}", headers=bearer(tokens.superadmin))

    error = await error_of(response, 400)
    assert (error["code"], error["details"]) == (code, {"field": field})
    if field == "severity":
        assert "P0, P1, P2, P3" in error["message"]


async def test_a_cursor_this_api_did_not_return_is_400(api: ApiClient, tokens: Tokens) -> None:
    response = await api.get(f"{ALERTS_PATH}?cursor=zzz", headers=bearer(tokens.acme_admin))

    assert (await error_of(response, 400))["code"] == "invalid_cursor"


@pytest.mark.parametrize(("limit", "sizes"), [(2, [2, 2, 2]), (3, [3, 3]), (4, [4, 2]), (6, [6])])
async def test_the_listing_pages_with_a_cursor(
    api: ApiClient, tokens: Tokens, raised: dict[str, str], limit: int, sizes: list[int]
) -> None:
    """Every alert once, in the listing's order, and no empty page after a full last one."""
    seen: list[str] = []
    pages: list[int] = []
    path = f"{ALERTS_PATH}?limit={limit}"
    while True:
        page = await ok(api, "GET", path, tokens.superadmin)
        seen += [item["id"] for item in page["items"]]
        pages.append(len(page["items"]))
        if page["next_cursor"] is None:
            break
        path = f"{ALERTS_PATH}?limit={limit}&cursor={page['next_cursor']}"

    assert seen == [raised[n] for n in NEWEST_FIRST]
    assert pages == sizes


async def test_the_cursor_keeps_the_filters_and_the_tenant(
    api: ApiClient, tokens: Tokens, raised: dict[str, str]
) -> None:
    first = await ok(api, "GET", f"{ALERTS_PATH}?status=open&limit=1", tokens.acme_admin)
    cursor = first["next_cursor"]
    rest = await listed(api, tokens.acme_admin, f"?status=open&cursor={cursor}")

    assert [item["id"] for item in first["items"]] + rest == [
        raised[n] for n in ("acme_many_disconnected", "acme_quiet", "acme_disconnected")
    ]


# --- tenants and roles ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["globex_disconnected", "platform_store"])
async def test_an_admin_gets_404_for_an_alert_not_its_tenants_and_changes_nothing(
    api: ApiClient, tokens: Tokens, raised: dict[str, str], db: Database, name: str
) -> None:
    """Another tenant's alert (or a platform-wide one) answers as an id of nobody's."""
    before = await db[ALERTS].find({}).sort("_id", 1).to_list()
    for method, suffix in (("GET", ""), ("POST", "/ack"), ("POST", "/resolve")):
        theirs = await api.request(
            method, f"{ALERTS_PATH}/{raised[name]}{suffix}", headers=bearer(tokens.acme_admin)
        )
        nobodys = await api.request(
            method, f"{ALERTS_PATH}/{ObjectId()}{suffix}", headers=bearer(tokens.acme_admin)
        )
        error = await error_of(theirs, 404)
        assert error == {"code": "not_found", "message": f"no alert with id {raised[name]}"}
        assert (await error_of(nobodys, 404))["code"] == "not_found"

    assert await db[ALERTS].find({}).sort("_id", 1).to_list() == before


async def test_a_superadmin_reads_and_works_any_tenants_alert(
    api: ApiClient, tokens: Tokens, raised: dict[str, str]
) -> None:
    globex = raised["globex_disconnected"]

    shown = await ok(api, "GET", f"{ALERTS_PATH}/{globex}", tokens.superadmin)
    acked = await ok(api, "POST", f"{ALERTS_PATH}/{globex}/ack", tokens.superadmin)
    platform = await ok(
        api, "POST", f"{ALERTS_PATH}/{raised['platform_store']}/resolve", tokens.superadmin
    )

    assert (shown["tenant"], shown["status"]) == ("globex", "open")
    assert (acked["status"], acked["acknowledged_by"]) == ("acknowledged", "token:superadmin@ops")
    assert (platform["status"], platform["resolved_by"]) == ("resolved", "token:superadmin@ops")


async def test_agents_are_forbidden_every_alert_route(
    api: ApiClient, tokens: Tokens, raised: dict[str, str], db: Database
) -> None:
    before = await db[ALERTS].find({}).sort("_id", 1).to_list()
    own = raised["acme_disconnected"]
    for method, path in (
        ("GET", ALERTS_PATH),
        ("GET", f"{ALERTS_PATH}/{own}"),
        ("POST", f"{ALERTS_PATH}/{own}/ack"),
        ("POST", f"{ALERTS_PATH}/{own}/resolve"),
        ("GET", f"{ALERTS_PATH}/{ObjectId()}"),  # the role is refused, whatever the id
    ):
        response = await api.request(method, path, headers=bearer(tokens.acme_agent))
        error = await error_of(response, 403)
        assert error == {"code": "forbidden", "message": "this action needs the admin role"}

    assert await db[ALERTS].find({}).sort("_id", 1).to_list() == before


@pytest.mark.parametrize("ident", ["zzz", "6b105e68debab2c0418071b", "6B105E68DEBAB2C0418071BX"])
async def test_a_malformed_id_is_404(api: ApiClient, tokens: Tokens, ident: str) -> None:
    for method, suffix in (("GET", ""), ("POST", "/ack"), ("POST", "/resolve")):
        response = await api.request(
            method, f"{ALERTS_PATH}/{ident}{suffix}", headers=bearer(tokens.superadmin)
        )
        error = await error_of(response, 404)
        assert (error["code"], error["message"]) == ("not_found", f"no alert with id {ident!r}")


# --- acknowledging and resolving ------------------------------------------------------------


async def test_acknowledge_then_resolve_records_who_and_when(
    api: ApiClient, tokens: Tokens, raised: dict[str, str]
) -> None:
    ident = raised["acme_disconnected"]
    path = f"{ALERTS_PATH}/{ident}"
    ann = await api.post("/api/agents", json={"name": "Ann", "role": "admin"},
                         headers=bearer(tokens.acme_admin))  # fmt: skip
    assert ann.status == 201, await ann.text()
    ann_admin = await ann.json()
    start = datetime.now(UTC)

    acked = await ok(api, "POST", f"{path}/ack", ann_admin["token"])
    again = await ok(api, "POST", f"{path}/ack", tokens.acme_admin)
    resolved = await ok(api, "POST", f"{path}/resolve", tokens.acme_admin)
    resolved_again = await ok(api, "POST", f"{path}/resolve", ann_admin["token"])
    late_ack = await api.post(f"{path}/ack", headers=bearer(tokens.acme_admin))
    shown = await ok(api, "GET", path, tokens.acme_admin)

    assert acked["status"] == "acknowledged"
    assert acked["acknowledged_by"] == f"agent:{ann_admin['id']}"
    assert start <= iso(acked["acknowledged_at"]) <= datetime.now(UTC)
    assert (acked["resolved_by"], acked["resolved_at"]) == (None, None)
    assert again == acked  # the first acknowledgement stays
    assert resolved["status"] == "resolved"
    assert resolved["resolved_by"] == "token:admin@acme"
    assert iso(acked["acknowledged_at"]) <= iso(resolved["resolved_at"]) <= datetime.now(UTC)
    assert (resolved["acknowledged_by"], resolved["acknowledged_at"]) == (
        acked["acknowledged_by"],
        acked["acknowledged_at"],
    )
    assert resolved_again == resolved  # idempotent: the first resolution stays
    error = await error_of(late_ack, 409)
    assert error["code"] == "alert_resolved"
    assert error["message"].startswith(f"alert {ident} is resolved")
    assert shown == resolved
    for answer in (acked, resolved, shown, error):
        text = str(answer)
        for token in (tokens.acme_admin, ann_admin["token"]):
            assert token not in text
            assert hash_token(token)[:12] not in text


async def test_a_condition_seen_again_counts_on_its_alert_until_it_is_resolved(
    api: ApiClient, tokens: Tokens, raised: dict[str, str], db: Database
) -> None:
    """What the next check does after an operator's acknowledgement and resolution."""
    ident = raised["acme_quiet"]
    alerts = Alerts(db)

    async def seen_again() -> str:
        doc = await alerts.raise_alert(
            AlertKind.CHANNEL_QUIET, title="still quiet", subject="acme_quiet", tenant="acme"
        )
        return str(doc["_id"])

    await ok(api, "POST", f"{ALERTS_PATH}/{ident}/ack", tokens.acme_admin)
    assert await seen_again() == ident
    counted = await ok(api, "GET", f"{ALERTS_PATH}/{ident}", tokens.acme_admin)
    await ok(api, "POST", f"{ALERTS_PATH}/{ident}/resolve", tokens.acme_admin)
    reopened = await seen_again()

    assert (counted["status"], counted["count"], counted["title"]) == (
        "acknowledged",
        2,
        "still quiet",
    )
    assert iso(counted["last_seen"]) > iso(counted["first_seen"])
    assert reopened != ident
    assert await listed(api, tokens.acme_admin, "?kind=channel_quiet") == [reopened, ident]
