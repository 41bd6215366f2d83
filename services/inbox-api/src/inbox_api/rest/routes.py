"""Every route of the REST API, the OpenAPI document and the page that browses it."""

from __future__ import annotations

from aiohttp import web
from swagger_ui_bundle import swagger_ui_path

from inbox_api.rest import admin, alerts, conversations
from inbox_api.rest.campaigns import add_campaign_routes
from inbox_api.rest.openapi import OPENAPI

DOCS = "/api/docs"
# The Swagger UI files the page needs, served from the package (no CDN: nothing outside
# this machine has to be reachable).
_ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "application/javascript",
    "swagger-ui-standalone-preset.js": "application/javascript",
    "favicon-32x32.png": "image/png",
}
_PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>WhatsApp Inbox API</title>
<link rel="stylesheet" href="{DOCS}/assets/swagger-ui.css">
<link rel="icon" href="{DOCS}/assets/favicon-32x32.png"></head>
<body><div id="swagger-ui"></div>
<script src="{DOCS}/assets/swagger-ui-bundle.js"></script>
<script src="{DOCS}/assets/swagger-ui-standalone-preset.js"></script>
<script src="{DOCS}/init.js"></script></body></html>
"""
_INIT = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/api/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout",
  });
};
"""


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


async def docs_page(_: web.Request) -> web.Response:
    return web.Response(text=_PAGE, content_type="text/html")


async def docs_init(_: web.Request) -> web.Response:
    return web.Response(text=_INIT, content_type="application/javascript")


async def docs_asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in _ASSETS:
        raise web.HTTPNotFound()
    return web.FileResponse(swagger_ui_path / name, headers={"Content-Type": _ASSETS[name]})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/openapi.json", openapi)
    r.add_get(DOCS, docs_page)
    r.add_get(f"{DOCS}/init.js", docs_init)
    r.add_get(DOCS + "/assets/{name}", docs_asset)
    r.add_post("/api/channels", admin.create_channel)
    r.add_get("/api/channels", admin.list_channels)
    r.add_post("/api/channels/{id}/reconnect", admin.reconnect_channel)
    r.add_get("/api/conversations", conversations.list_conversations)
    r.add_get("/api/conversations/{id}", conversations.get_conversation)
    r.add_get("/api/conversations/{id}/messages", conversations.list_messages)
    r.add_post("/api/conversations/{id}/messages", conversations.send_message)
    r.add_post("/api/conversations/{id}/assign", conversations.assign)
    r.add_post("/api/conversations/{id}/close", conversations.close)
    r.add_post("/api/conversations/{id}/reopen", conversations.reopen)
    r.add_post("/api/conversations/{id}/read", conversations.mark_read)
    r.add_put("/api/conversations/{id}/labels", conversations.set_labels)
    r.add_post("/api/conversations/{id}/notes", conversations.add_note)
    r.add_post("/api/agents", admin.create_agent)
    r.add_get("/api/agents", admin.list_agents)
    r.add_get("/api/tokens", admin.list_tokens)
    r.add_delete("/api/tokens/{id}", admin.revoke_token)
    r.add_get("/api/admin/webhook-logs", admin.list_webhook_logs)
    r.add_get("/api/admin/webhook-logs/{id}", admin.get_webhook_log)
    r.add_post("/api/admin/webhook-logs/replay", admin.replay_webhook_logs)
    r.add_post("/api/admin/webhook-logs/{id}/replay", admin.replay_webhook_log)
    r.add_get("/api/admin/alerts", alerts.list_alerts)
    r.add_get("/api/admin/alerts/{id}", alerts.get_alert)
    r.add_post("/api/admin/alerts/{id}/ack", alerts.acknowledge_alert)
    r.add_post("/api/admin/alerts/{id}/resolve", alerts.resolve_alert)
    add_campaign_routes(app)
