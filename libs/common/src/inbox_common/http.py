"""One JSON error shape for every HTTP answer that is not a success.

``{"error": {"code": "...", "message": "...", "details": ...}}``: handlers raise
:class:`ApiError` (or let aiohttp raise its ``HTTPException``s) and :func:`error_middleware`
maps both, so no handler builds an error body by hand.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import orjson
import structlog
from aiohttp import web

from inbox_common.logging import bind_message_context, get_logger

log = get_logger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

MAX_BODY_KEY = web.AppKey("max_body_bytes", int)
REQUEST_ID = web.RequestKey("request_id", str)

HandlerT = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error answer: HTTP ``status``, a stable machine ``code`` and a human ``message``."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response serialized with orjson (datetimes as ISO 8601)."""
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return json_response({"error": error}, status=status, headers=headers)


_MESSAGES = {
    404: "no such resource; check the path and the id",
    405: "this method is not allowed on this path",
    413: "the request body is larger than this endpoint accepts",
}


def _code(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "http_error"


@web.middleware
async def error_middleware(request: web.Request, handler: HandlerT) -> web.StreamResponse:
    """Bind the request id and map every failure to the JSON error shape."""
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    # A keep-alive connection serves its requests in one task: start each with clean ids.
    structlog.contextvars.clear_contextvars()
    bind_message_context(request_id=request_id)
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = _MESSAGES.get(exc.status) or exc.reason
        if exc.status == 413 and MAX_BODY_KEY in request.app:
            message = f"{message} ({request.app[MAX_BODY_KEY]} bytes at most)"
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, _code(exc.status), message, headers=headers)
    except Exception:
        log.exception("http.unhandled", path=request.path)
        return error_response(
            500,
            "internal_error",
            f"unexpected error; quote request id {request_id} when reporting it",
        )
