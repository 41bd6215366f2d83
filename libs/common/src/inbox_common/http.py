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
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from inbox_common import tracing
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


# The observability routes are polled (probes, scrapes): not traced.
_UNTRACED = frozenset({"/livez", "/metrics", "/api/health"})


@web.middleware
async def tracing_middleware(request: web.Request, handler: HandlerT) -> web.StreamResponse:
    """A server span per request, the child of the caller's ``traceparent`` when it sent one,
    named by the route (``POST /api/conversations/{conversation_id}/messages``)."""
    if request.path in _UNTRACED:
        return await handler(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else ""
    with tracing.span(
        f"{request.method} {route}".rstrip(),
        parent=tracing.context_from(request.headers),
        kind=tracing.SpanKind.SERVER,
        attributes={"http.request.method": request.method, "http.route": route},
    ) as span:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            span.set_attribute("http.response.status_code", exc.status)
            raise
        span.set_attribute("http.response.status_code", response.status)
        if response.status >= 500:
            span.set_status(tracing.StatusCode.ERROR)
        return response


# --- errors before any handler: requests aiohttp's parser refuses ---------------------------


class _JsonErrorHandler(RequestHandler):
    """The connection handler, answering a request the HTTP parser refused (oversized
    headers, a malformed request line, a bad chunk) in the JSON error shape instead of
    aiohttp's plain text."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        plain = super().handle_error(request, status, exc, message)
        if status >= 500:
            text = "the server failed while reading the request; try again"
        else:
            reason = (str(exc) if exc is not None else message) or HTTPStatus(status).phrase
            text = f"the request is not valid HTTP ({reason[:300]}); fix the request"
        answer = error_response(status, "bad_http_request" if status < 500 else _code(status), text)
        answer.force_close()  # the connection's state is unknown after a parse error
        del plain
        return answer


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class ServiceRunner(web.AppRunner):
    """An :class:`~aiohttp.web.AppRunner` whose connections answer parser errors in the JSON
    error shape (aiohttp offers no hook for it: the server it makes is given our handler)."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer
        return server
