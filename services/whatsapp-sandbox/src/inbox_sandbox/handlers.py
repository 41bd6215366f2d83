"""The Graph API edge: ``POST /{version}/{phone_number_id}/messages`` and
``GET /{version}/{phone_number_id}``, answered in Meta's shapes (errors too, not the project's).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import hdrs, web

from inbox_common.http import json_response
from inbox_common.logging import bind_message_context
from inbox_sandbox.errors import GraphError, meta_error, nonexisting_field, transient
from inbox_sandbox.keys import SANDBOX
from inbox_sandbox.schema import MarkRead, parse_request
from inbox_sandbox.service import HoldRequestError

__all__ = ["GRAPH_MESSAGES", "GRAPH_NODE", "phone_number", "send_message"]

_VERSION = r"{version:v\d{1,3}\.\d{1,3}}"
GRAPH_NODE = "/" + _VERSION + "/{phone_number_id:[^/]+}"
GRAPH_MESSAGES = GRAPH_NODE + "/messages"

# What ``GET /{phone_number_id}`` returns when no ``fields`` are asked for.
DEFAULT_FIELDS = (
    "verified_name", "code_verification_status", "display_phone_number", "quality_rating",
    "platform_type", "throughput", "id",
)  # fmt: skip


async def send_message(request: web.Request) -> web.Response:
    """Send a message, or mark an inbound one as read, as the Cloud API does."""
    sandbox = request.app[SANDBOX]
    phone_number_id = request.match_info["phone_number_id"]
    bind_message_context(phone_number_id=phone_number_id)
    try:
        number = sandbox.number(phone_number_id, method="post")
        sandbox.authorize(number, request.headers.get(hdrs.AUTHORIZATION))
        raw = await _json_body(request)
        parsed = parse_request(raw)
        if isinstance(parsed, MarkRead):
            answer = sandbox.mark_read(number, parsed)
        else:
            answer = sandbox.send(number, parsed, raw, _major(request.match_info["version"]))
    except GraphError as exc:
        sandbox.metrics.refused(exc.code)
        return graph_error_response(exc)
    except HoldRequestError as hold:
        # The client should have given up long before; whatever it gets now is not an answer.
        sandbox.metrics.refused("timeout")
        await asyncio.sleep(hold.seconds)
        return graph_error_response(transient(503))
    return json_response(answer)


async def phone_number(request: web.Request) -> web.Response:
    """The business number's node: the inbox reads it to check a channel's token."""
    sandbox = request.app[SANDBOX]
    phone_number_id = request.match_info["phone_number_id"]
    try:
        number = sandbox.number(phone_number_id, method="get")
        sandbox.authorize(number, request.headers.get(hdrs.AUTHORIZATION))
        info = sandbox.phone_number_info(number)
        wanted = request.query.get("fields")
        names = [name.strip() for name in wanted.split(",") if name.strip()] if wanted else []
        for name in names:
            if name not in info:
                raise nonexisting_field(name)
        fields = [*names, "id"] if names else list(DEFAULT_FIELDS)
    except GraphError as exc:
        return graph_error_response(exc)
    return json_response({name: info[name] for name in fields})


def graph_error_response(error: GraphError) -> web.Response:
    """Meta's error body with Meta's status (and Graph's ``WWW-Authenticate`` on a 401)."""
    headers = None
    if error.status == 401:
        message = error.body["error"]["message"].replace('"', "'")
        headers = {"WWW-Authenticate": f'OAuth "Facebook Platform" "invalid_token" "{message}"'}
    return json_response(error.body, status=error.status, headers=headers)


async def _json_body(request: web.Request) -> dict[str, Any]:
    body = await request.read()
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise meta_error(100, f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(decoded, dict):
        raise meta_error(100, "The request body must be a JSON object.")
    return decoded


def _major(version: str) -> int:
    return int(version[1:].split(".", 1)[0])
