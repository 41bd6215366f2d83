"""The sandbox's own API under ``/sandbox``: customers writing in, the ledger of sends, the
read receipts, fault injection and business numbers. Its errors use the project's JSON error shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from inbox_common.http import ApiError, json_response
from inbox_common.logging import bind_message_context, get_logger
from inbox_common.settings import redact_url
from inbox_sandbox.faults import FAULT_CODES, FaultCode
from inbox_sandbox.inbound import CustomerMessage
from inbox_sandbox.keys import SANDBOX, WEBHOOKS
from inbox_sandbox.numbers import PHONE_NUMBER_ID, BusinessNumber, valid_display_number
from inbox_sandbox.service import Sandbox
from inbox_sandbox.webhooks import IngestUnreachableError

log = get_logger(__name__)

__all__ = ["add_routes"]

ModelT = TypeVar("ModelT", bound=BaseModel)

DEFAULT_LIMIT = 1000
MAX_LIMIT = 100_000


class FaultRequest(BaseModel):
    """``POST /sandbox/faults``: the next ``count`` sends (to one number, or any) fail."""

    model_config = ConfigDict(extra="forbid")

    phone_number_id: str | None = None
    code: FaultCode
    count: int = Field(default=1, ge=1, le=1_000_000)

    @field_validator("code")
    @classmethod
    def _known(cls, value: FaultCode) -> FaultCode:
        if value not in FAULT_CODES:
            raise ValueError(f"must be one of {', '.join(str(code) for code in FAULT_CODES)}")
        return value


class NumberRequest(BaseModel):
    """``POST /sandbox/numbers``: a number to register; left-out fields keep their values."""

    model_config = ConfigDict(extra="forbid")

    phone_number_id: str
    access_token: str = Field(min_length=1, max_length=1024)
    waba_id: str | None = None
    display_phone_number: str | None = None
    verified_name: str | None = Field(default=None, min_length=1, max_length=256)
    throughput: int | None = Field(default=None, ge=1, le=1000)

    @field_validator("phone_number_id", "waba_id")
    @classmethod
    def _digits(cls, value: str | None) -> str | None:
        if value is not None and not PHONE_NUMBER_ID.fullmatch(value):
            raise ValueError("must be digits")
        return value

    @field_validator("display_phone_number")
    @classmethod
    def _display(cls, value: str | None) -> str | None:
        if value is not None and not valid_display_number(value):
            raise ValueError("must look like +1 555 010 0001")
        return value


def add_routes(app: web.Application) -> None:
    app.router.add_post("/sandbox/inbound", post_inbound)
    app.router.add_get("/sandbox/sent", get_sent)
    app.router.add_get("/sandbox/read-receipts", get_read_receipts)
    app.router.add_post("/sandbox/faults", post_faults)
    app.router.add_get("/sandbox/faults", get_faults)
    app.router.add_delete("/sandbox/faults", delete_faults)
    app.router.add_post("/sandbox/numbers", post_numbers)
    app.router.add_get("/sandbox/numbers", get_numbers)


async def post_inbound(request: web.Request) -> web.Response:
    """A customer writes to a business number: the webhook goes to the ingest, signed."""
    sandbox = request.app[SANDBOX]
    message = await _body(request, CustomerMessage)
    number = _known_number(sandbox, message.phone_number_id)
    bind_message_context(phone_number_id=number.phone_number_id)
    try:
        wamid, status = await sandbox.inbound(number, message)
    except IngestUnreachableError as exc:
        url = redact_url(request.app[WEBHOOKS].url)
        raise ApiError(
            502,
            "ingest_unreachable",
            f"the webhook was not delivered: {url} did not answer ({exc}); check "
            "SANDBOX_WEBHOOK_URL and that webhook-ingest is running (the sandbox keeps "
            "retrying it for SANDBOX_WEBHOOK_RETRY_SECONDS, as Meta would)",
        ) from exc
    return json_response({"wamid": wamid, "ingest_status": status})


async def get_sent(request: web.Request) -> web.Response:
    """The ledger of accepted sends, oldest first: the ground truth of what Meta received."""
    sandbox = request.app[SANDBOX]
    query = request.query
    limit = _int_param(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    after = _int_param(query, "after", 0, 0, 2**62)
    since = _since(query.get("since"))
    items, total = sandbox.ledger.query(
        phone_number_id=query.get("phone_number_id") or None,
        to=query.get("to") or None,
        since=since,
        after=after,
        limit=limit,
    )
    return json_response(
        {
            "items": [item.as_json() for item in items],
            "total": total,
            "dropped": sandbox.ledger.dropped,
        }
    )


async def get_read_receipts(request: web.Request) -> web.Response:
    """The read receipts answered, oldest first: which inbound messages were marked read."""
    receipts = request.app[SANDBOX].read_receipts
    query = request.query
    limit = _int_param(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    items, total = receipts.query(phone_number_id=query.get("phone_number_id") or None, limit=limit)
    return json_response(
        {"items": [item.as_json() for item in items], "total": total, "dropped": receipts.dropped}
    )


async def post_faults(request: web.Request) -> web.Response:
    """Make the next ``count`` sends (to one number, or any) fail the chosen way."""
    sandbox = request.app[SANDBOX]
    wanted = await _body(request, FaultRequest)
    if wanted.phone_number_id is not None:
        _known_number(sandbox, wanted.phone_number_id)
    try:
        fault = sandbox.faults.add(wanted.code, wanted.count, wanted.phone_number_id)
    except OverflowError as exc:
        message = f"{exc}; clear them with DELETE /sandbox/faults"
        raise ApiError(409, "too_many_faults", message) from exc
    log.info(
        "sandbox.fault_added",
        phone_number_id=wanted.phone_number_id,
        fault=wanted.code,
        count=wanted.count,
    )
    return json_response({"fault": fault.as_json()}, status=201)


async def get_faults(request: web.Request) -> web.Response:
    faults = request.app[SANDBOX].faults.pending()
    return json_response({"faults": [fault.as_json() for fault in faults]})


async def delete_faults(request: web.Request) -> web.Response:
    return json_response({"cleared": request.app[SANDBOX].faults.clear()})


async def post_numbers(request: web.Request) -> web.Response:
    """Register a business number (or replace one: a new token, a new throughput)."""
    sandbox = request.app[SANDBOX]
    wanted = await _body(request, NumberRequest)
    known = sandbox.numbers.get(wanted.phone_number_id)
    values: dict[str, Any] = {
        "waba_id": wanted.waba_id or (known.waba_id if known else None),
        "display_phone_number": wanted.display_phone_number
        or (known.display_phone_number if known else None),
        "verified_name": wanted.verified_name or (known.verified_name if known else None),
        "throughput": wanted.throughput
        or (known.throughput if known else sandbox.default_throughput),
    }
    number = BusinessNumber(
        wanted.phone_number_id,
        wanted.access_token,
        **{key: value for key, value in values.items() if value is not None},
    )
    try:
        created = sandbox.numbers.put(number)
    except OverflowError as exc:
        raise ApiError(409, "too_many_numbers", str(exc)) from exc
    log.info("sandbox.number_registered", phone_number_id=number.phone_number_id, new=created)
    return json_response(number.public(), status=201 if created else 200)


async def get_numbers(request: web.Request) -> web.Response:
    numbers = request.app[SANDBOX].numbers.all()
    return json_response({"numbers": [number.public() for number in numbers]})


def _known_number(sandbox: Sandbox, phone_number_id: str) -> BusinessNumber:
    number = sandbox.numbers.get(phone_number_id)
    if number is None:
        raise ApiError(
            404,
            "unknown_number",
            f"the sandbox has no business number {phone_number_id}; list them with GET "
            "/sandbox/numbers, add one with POST /sandbox/numbers or SANDBOX_NUMBERS",
        )
    return number


async def _body(request: web.Request, model: type[ModelT]) -> ModelT:
    raw = await request.read()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        details = [
            {"loc": ".".join(str(part) for part in error["loc"]), "message": error["msg"]}
            for error in errors
        ]
        first = details[0]
        where = f"{first['loc']}: " if first["loc"] else ""
        raise ApiError(
            400, "invalid_body", f"the body is not valid: {where}{first['message']}", details
        ) from None


def _int_param(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    value = query.get(name)
    if value is None or value == "":
        return default
    if not value.isdigit() or not low <= int(value) <= high:
        raise ApiError(400, "invalid_query", f"{name} must be a whole number from {low} to {high}")
    return int(value)


def _since(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        if value.replace(".", "", 1).isdigit():
            return datetime.fromtimestamp(float(value), tz=UTC)
        moment = datetime.fromisoformat(value)
    except (ValueError, OverflowError, OSError):
        raise ApiError(
            400, "invalid_query", "since must be an ISO 8601 time or unix seconds"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
