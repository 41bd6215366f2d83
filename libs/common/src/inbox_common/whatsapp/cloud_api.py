"""The project's one Cloud API client: sends, read receipts and a channel's number node.

A send is never retried here. Meta's send API takes no idempotency key, so repeating a send
whose answer was lost (a timeout, a broken connection) can deliver the message twice; only the
caller knows how to avoid that (record ``sending`` first, send its id as
``biz_opaque_callback_data``, wait for a status webhook before resending). Every failure is
therefore raised as a classified :class:`CloudApiError`, and one that may have reached Meta
says so (``maybe_sent``). Read receipts and reading the number node are idempotent, so those
are retried on transient failures, briefly.

Access tokens go into the ``Authorization`` header and nowhere else: no log line, error
message or exception carries one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Annotated, Any, Self, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp
import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from inbox_common import tracing
from inbox_common.logging import get_logger
from inbox_common.service import CleanupCtx
from inbox_common.settings import url_with_scheme
from inbox_common.whatsapp.classify import (
    error_from_exception,
    error_from_response,
    unreadable_answer,
)
from inbox_common.whatsapp.errors import Classification, CloudApiError
from inbox_common.whatsapp.messages import read_receipt

log = get_logger(__name__)

__all__ = [
    "CLOUD_API",
    "CloudApiClient",
    "CloudApiSettings",
    "SendResult",
    "SentContact",
    "cloud_api_ctx",
]

DEFAULT_BASE_URL = "https://graph.facebook.com"
DEFAULT_API_VERSION = "v21.0"
# One number sends up to 80 messages/s by default (1,000 at most), and an answer takes tens of
# milliseconds: 100 connections carry that; more sends wait for a free one.
MAX_CONNECTIONS = 100
KEEPALIVE_SECONDS = 30.0
# The longest wait for a connection (from the pool, then TCP and TLS); a send that waited this
# long was never sent, unlike one that timed out later.
CONNECT_TIMEOUT_SECONDS = 5.0
PHONE_NUMBER_FIELDS = ("display_phone_number", "verified_name", "quality_rating")

T = TypeVar("T")


class CloudApiSettings(BaseSettings):
    """Where the Cloud API is: a settings mixin for the services that call it."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", validate_default=True)

    whatsapp_api_base_url: Annotated[str, url_with_scheme("http", "https")] = Field(
        default=DEFAULT_BASE_URL,
        description="the http:// or https:// base URL of the Graph API (Meta's, or the "
        "sandbox's in development)",
    )
    whatsapp_api_version: str = Field(
        default=DEFAULT_API_VERSION,
        pattern=r"^v\d+\.\d+$",
        description="the Graph API version, like v21.0",
    )
    whatsapp_api_timeout_seconds: float = Field(
        default=10.0, gt=0, le=120, description="seconds to wait for a Cloud API answer"
    )


class SentContact(BaseModel):
    """A recipient as Meta echoes it: what was given (``input``) and who it is."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    input: str | None = None
    wa_id: str | None = None
    user_id: str | None = None


class _SentMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1)
    message_status: str | None = None


class _SendAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    messages: list[_SentMessage] = Field(min_length=1)
    contacts: list[SentContact] = []


class SendResult(BaseModel):
    """Meta accepted a send: its ``wamid``, and the recipients as Meta echoed them.

    ``message_status`` is Meta's pacing word for templates (``accepted``...), else ``None``.
    """

    model_config = ConfigDict(frozen=True)

    wamid: str
    message_status: str | None = None
    contacts: tuple[SentContact, ...] = ()


class CloudApiClient:
    """A Graph API client on one pooled HTTP session (``start``/``close``, or ``async with``).

    ``timeout_seconds`` bounds a whole call; ``connect_timeout_seconds`` the wait for a
    connection. Idempotent calls are tried ``read_attempts`` times, waiting
    ``read_backoff_seconds``, doubled each time, between them.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        api_version: str = DEFAULT_API_VERSION,
        timeout_seconds: float = 10.0,
        connect_timeout_seconds: float = CONNECT_TIMEOUT_SECONDS,
        max_connections: int = MAX_CONNECTIONS,
        read_attempts: int = 3,
        read_backoff_seconds: float = 0.2,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._host = urlsplit(self.base_url).hostname or ""
        self.api_version = api_version
        self.timeout_seconds = timeout_seconds
        self._timeout = aiohttp.ClientTimeout(
            total=timeout_seconds, connect=min(connect_timeout_seconds, timeout_seconds)
        )
        self._max_connections = max_connections
        self._read_attempts = read_attempts
        self._read_backoff = read_backoff_seconds
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: CloudApiSettings) -> CloudApiClient:
        return cls(
            settings.whatsapp_api_base_url,
            api_version=settings.whatsapp_api_version,
            timeout_seconds=settings.whatsapp_api_timeout_seconds,
        )

    async def start(self) -> None:
        """Open the session (idempotent)."""
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, keepalive_timeout=KEEPALIVE_SECONDS
            )
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, raise_for_status=False
            )

    async def close(self) -> None:
        """Close the session and its connections (idempotent)."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def send(self, phone_number_id: str, token: str, payload: dict[str, Any]) -> SendResult:
        """Send one message (a body built with :mod:`inbox_common.whatsapp.messages`).

        Tried once: raises :class:`CloudApiError` on any failure, with ``maybe_sent`` when
        Meta may have accepted it anyway.
        """
        try:
            answer = await self._call("POST", f"{_node(phone_number_id)}/messages", token, payload)
            result = _send_result(answer)
        except CloudApiError as error:
            _log_failure("cloud_api.send_failed", phone_number_id, error)
            raise
        log.debug("cloud_api.sent", phone_number_id=phone_number_id, wamid=result.wamid)
        return result

    async def mark_read(self, phone_number_id: str, token: str, wamid: str) -> None:
        """Mark an inbound message (and the earlier ones) as read; retried while transient."""
        path = f"{_node(phone_number_id)}/messages"
        try:
            await self._retrying(lambda: self._call("POST", path, token, read_receipt(wamid)))
        except CloudApiError as error:
            _log_failure("cloud_api.mark_read_failed", phone_number_id, error, wamid=wamid)
            raise

    async def phone_number(self, phone_number_id: str, token: str) -> dict[str, Any]:
        """The number node (display_phone_number, verified_name, quality_rating, id).

        A token check: a refused token raises the ``stop_channel`` classification (190).
        Retried while transient.
        """
        params = {"fields": ",".join(PHONE_NUMBER_FIELDS)}
        path = _node(phone_number_id)
        try:
            return await self._retrying(lambda: self._call("GET", path, token, params=params))
        except CloudApiError as error:
            _log_failure("cloud_api.phone_number_failed", phone_number_id, error)
            raise

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._read_attempts),
            wait=wait_exponential(multiplier=self._read_backoff, max=2.0),
            retry=retry_if_exception(_transient),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await call()
        raise AssertionError("tenacity neither returned nor raised")  # pragma: no cover

    async def _call(
        self,
        method: str,
        path: str,
        token: str,
        body: dict[str, Any] | None = None,
        *,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        if self._session is None:
            raise RuntimeError("CloudApiClient is not started: call start() or use async with")
        url = f"{self.base_url}/{self.api_version}/{path}"
        # Bounded span names: the node id is not part of them.
        route = f"{method} /{{version}}/{{node}}{'/messages' if path.endswith('/messages') else ''}"
        with tracing.span(
            route,
            kind=tracing.SpanKind.CLIENT,
            attributes={"http.request.method": method, "server.address": self._host},
        ) as span:
            headers = tracing.inject({"Authorization": f"Bearer {token}"})
            data = None
            if body is not None:
                headers["Content-Type"] = "application/json"
                data = orjson.dumps(body)
            try:
                async with self._session.request(
                    method, url, data=data, params=params, headers=headers
                ) as response:
                    status = response.status
                    raw = await response.read()
            except (TimeoutError, aiohttp.ClientError) as exc:
                error = error_from_exception(exc, timeout_seconds=self.timeout_seconds)
                span.set_attribute("error.type", error.reason)
                raise error from exc
            span.set_attribute("http.response.status_code", status)
            if not 200 <= status < 300:
                error = error_from_response(status, raw)
                span.set_attribute("error.type", str(error.code or error.reason))
                raise error
        try:
            decoded = orjson.loads(raw)
        except orjson.JSONDecodeError:
            decoded = None
        if not isinstance(decoded, dict):
            raise unreadable_answer(f"HTTP {status} with a body that is not a JSON object")
        return decoded


def _node(phone_number_id: str) -> str:
    # An id is digits; quoting keeps anything else from reaching another Graph path.
    return quote(phone_number_id, safe="")


def _send_result(answer: dict[str, Any]) -> SendResult:
    try:
        parsed = _SendAnswer.model_validate(answer)
    except ValidationError:
        raise unreadable_answer("HTTP 200 without messages[0].id") from None
    first = parsed.messages[0]
    return SendResult(
        wamid=first.id, message_status=first.message_status, contacts=tuple(parsed.contacts)
    )


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, CloudApiError) and exc.classification is Classification.RETRY


def _log_failure(event: str, phone_number_id: str, error: CloudApiError, **ids: str) -> None:
    # A rate limit is routine under load; a refusal or a stopped channel needs a look.
    level = log.info if error.classification is Classification.RETRY else log.warning
    level(
        event,
        phone_number_id=phone_number_id,
        reason=error.reason,
        classification=str(error.classification),
        code=error.code,
        http_status=error.http_status,
        fbtrace_id=error.fbtrace_id,
        maybe_sent=error.maybe_sent,
        details=error.details,
        **ids,
    )


CLOUD_API: web.AppKey[CloudApiClient] = web.AppKey("cloud_api", CloudApiClient)


def cloud_api_ctx(settings: CloudApiSettings) -> CleanupCtx:
    """The Cloud API client resource: started, under :data:`CLOUD_API`, closed at shutdown."""

    async def cloud_api(app: web.Application) -> AsyncIterator[None]:
        client = CloudApiClient.from_settings(settings)
        await client.start()
        app[CLOUD_API] = client
        yield
        await client.close()

    return cloud_api
