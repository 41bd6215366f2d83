"""What Meta (or the network) answered, turned into a classified :class:`CloudApiError`.

Four sources, one table (:data:`inbox_common.whatsapp.errors.TABLE`): a Graph API error answer
(a refused call), an answer without a Graph error body (classified by its HTTP status alone), a
call that got no answer (a timeout, a broken connection), and the ``errors[]`` of a webhook (a
``failed`` status). The sender and the status consumer therefore agree on every code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import orjson

from inbox_common.contracts.webhook import MetaError
from inbox_common.whatsapp.errors import UNKNOWN, Classification, CloudApiError, Rule, rule_for

__all__ = [
    "error_from_exception",
    "error_from_response",
    "error_from_status_errors",
    "error_from_webhook",
    "unreadable_answer",
]


def _build(
    rule: Rule,
    reason: str,
    said: str,
    *,
    maybe_sent: bool = False,
    **meta: Any,
) -> CloudApiError:
    message = f"{rule.meaning}: {said}; {rule.action}"
    return CloudApiError(
        message,
        reason=reason,
        classification=rule.classification,
        tier=rule.tier,
        maybe_sent=maybe_sent,
        **meta,
    )


def _meta_rule(code: int, *, transient: bool) -> Rule:
    rule = rule_for(code)
    if rule is UNKNOWN and transient:
        return rule_for("unknown_transient")
    return rule


def error_from_response(http_status: int, body: bytes) -> CloudApiError:
    """Classify a Graph API answer that is not a success (any status, any body).

    A Graph error body (``{"error": {"code", "message", "error_data": {"details"}, ...}}``)
    is classified by its code; without one, by the HTTP status alone.
    """
    error = _graph_error(body)
    if error is None:
        return _http_error(http_status)
    code = error["code"]
    meta_message = _str_or_none(error.get("message"))
    error_data = error.get("error_data")
    details = _str_or_none(error_data.get("details")) if isinstance(error_data, dict) else None
    fbtrace_id = _str_or_none(error.get("fbtrace_id"))
    transient = error.get("is_transient") is True or http_status >= 500
    said = f"Meta answered HTTP {http_status}, {_describe(code, meta_message, details)}"
    if fbtrace_id:
        said += f" (fbtrace_id {fbtrace_id})"
    return _build(
        _meta_rule(code, transient=transient),
        f"meta_{code}",
        said,
        code=code,
        title=_title(code, meta_message),
        meta_message=meta_message,
        details=details,
        http_status=http_status,
        fbtrace_id=fbtrace_id,
    )


def error_from_webhook(error: MetaError | Mapping[str, Any]) -> CloudApiError:
    """Classify one ``errors[]`` item of a webhook (a ``failed`` status, a message, a value)."""
    item = error if isinstance(error, MetaError) else MetaError.model_validate(error)
    details = item.error_data.details if item.error_data else None
    meta_message = item.message or item.title
    said = f"Meta's webhook reported {_describe(item.code, meta_message, details)}"
    return _build(
        rule_for(item.code),
        f"meta_{item.code}",
        said,
        code=item.code,
        title=item.title,
        meta_message=meta_message,
        details=details,
    )


# The gravest outcome wins when a status carries several errors.
_GRAVITY = {Classification.RETRY: 0, Classification.PERMANENT: 1, Classification.STOP_CHANNEL: 2}


def error_from_status_errors(errors: Sequence[MetaError | Mapping[str, Any]]) -> CloudApiError:
    """Classify a ``failed`` status by its ``errors[]``: the gravest of them decides.

    A failed status without errors is permanent (``failed_without_error``): nothing says a
    retry could help.
    """
    if not errors:
        return CloudApiError(
            "Meta reported the message failed without saying why; not retried",
            reason="failed_without_error",
            classification=Classification.PERMANENT,
        )
    classified = [error_from_webhook(error) for error in errors]
    return max(classified, key=lambda found: _GRAVITY[found.classification])


def error_from_exception(
    exc: TimeoutError | aiohttp.ClientError, *, timeout_seconds: float | None = None
) -> CloudApiError:
    """Classify a failure that left no answer: a timeout or a connection error.

    Only a failure before the request could leave (no connection, or none in time) is known
    not to have reached Meta; after that, ``maybe_sent`` is true.
    """
    # ConnectionTimeoutError is also a TimeoutError: test it first.
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        reason, maybe_sent = "connect_timeout", False
    elif isinstance(exc, TimeoutError):
        reason, maybe_sent = "timeout", True
    elif isinstance(exc, aiohttp.ClientConnectorError):
        reason, maybe_sent = "connection", False
    else:
        reason, maybe_sent = "connection_lost", True
    if reason == "timeout" and timeout_seconds is not None:
        problem = f"no answer within {timeout_seconds:g}s"
    else:
        problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return _build(rule_for(reason), reason, problem, maybe_sent=maybe_sent)


def unreadable_answer(problem: str) -> CloudApiError:
    """A 200 whose body does not say what Meta accepted: treat it like a timeout."""
    return _build(
        rule_for("unreadable_answer"),
        "unreadable_answer",
        problem,
        maybe_sent=True,
        http_status=200,
    )


def _http_error(http_status: int) -> CloudApiError:
    if http_status >= 500:
        key = "http_5xx"
    elif http_status == 429:
        key = "http_429"
    else:
        key = "http_4xx"
    return _build(
        rule_for(key), f"http_{http_status}", f"HTTP {http_status}", http_status=http_status
    )


def _graph_error(body: bytes) -> dict[str, Any] | None:
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = decoded.get("error") if isinstance(decoded, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("code"), int):
        return None
    return error


def _describe(code: int, message: str | None, details: str | None) -> str:
    text = f"code {code}"
    if message:
        text += f" {message!r}"
    if details and details != message:
        text += f" ({details})"
    return text


def _title(code: int, message: str | None) -> str | None:
    # Meta writes the title into the message as "(#<code>) <title>".
    prefix = f"(#{code}) "
    if message and message.startswith(prefix):
        return message[len(prefix) :]
    return message


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
