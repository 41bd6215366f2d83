"""Meta's errors: the Graph API answer body, its HTTP status, and the webhook ``errors[]`` item.

Meta reports some errors synchronously (the send is refused: an error body and a 4xx/5xx) and
some asynchronously (the send is accepted with a wamid, then a ``failed`` status webhook carries
the error). Which is which, the titles, the details and the HTTP statuses follow Meta's error
codes page (developers.facebook.com/documentation/business-messaging/whatsapp/support/
error-codes): the message is ``(#<code>) <title>`` and the specifics go to
``error_data.details``. Graph-level errors (an unknown object, a bad token, a transient
failure) carry no ``error_data``, as Graph's do; ``error_subcode`` is left out where Meta
deprecated it (v16.0+).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from inbox_sandbox import payloads

__all__ = [
    "ASYNC_CODES",
    "CATALOG",
    "GRAPH_DOCS",
    "GraphError",
    "MetaCode",
    "bad_token",
    "failed_status_error",
    "meta_error",
    "nonexisting_field",
    "token_expired",
    "transient",
    "unknown_object",
]

GRAPH_DOCS = "https://developers.facebook.com/docs/graph-api"


@dataclass(frozen=True, slots=True)
class MetaCode:
    """One of Meta's WhatsApp error codes and how Meta reports it."""

    code: int
    title: str
    details: str
    http_status: int = 400
    asynchronous: bool = False


_CODES = [
    MetaCode(
        4, "Application request limit reached", "The app has reached its API call rate limit."
    ),
    MetaCode(
        80007, "Rate limit issues", "The WhatsApp Business Account has reached its rate limit."
    ),
    MetaCode(
        100,
        "Invalid parameter",
        "The request included one or more unsupported or misspelled parameters.",
    ),
    MetaCode(130429, "Rate limit hit", "Cloud API message throughput has been reached."),
    MetaCode(
        131056,
        "(Business Account, Consumer Account) pair rate limit hit",
        "Message failed to send because there were too many messages sent from this phone "
        "number to the same phone number in a short period of time.",
    ),
    MetaCode(
        368,
        "Temporarily blocked for policies violations",
        "The WhatsApp Business Account associated with the app has been restricted or "
        "disabled for violating a platform policy.",
        http_status=403,
    ),
    MetaCode(
        131000, "Something went wrong", "Message failed to send due to an unknown error.", 500
    ),
    MetaCode(
        131008, "Required parameter is missing", "The request is missing a required parameter."
    ),
    MetaCode(131009, "Parameter value is not valid", "One or more parameter values are invalid."),
    MetaCode(
        132001,
        "Template name does not exist in the translation",
        "The template does not exist in the specified language or the template has not been "
        "approved.",
        http_status=404,
    ),
    MetaCode(132015, "Template is Paused", "The template is paused due to low quality."),
    MetaCode(131026, "Message undeliverable", "Message Undeliverable.", asynchronous=True),
    MetaCode(
        131047,
        "Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the customer last "
        "replied to this number.",
        asynchronous=True,
    ),
    MetaCode(
        131048,
        "Spam rate limit hit",
        "Message failed to send because there are restrictions on how many messages can be sent "
        "from this phone number. This may be because too many previous messages were blocked or "
        "flagged as spam.",
        asynchronous=True,
    ),
]

CATALOG: dict[int, MetaCode] = {code.code: code for code in _CODES}
ASYNC_CODES = frozenset(code.code for code in _CODES if code.asynchronous)


def fbtrace_id() -> str:
    """A trace id shaped like Graph's (``Az8or2yhqkZfEZ-_4Qn_Bam``)."""
    return "A" + secrets.token_urlsafe(16)[:22]


class GraphError(Exception):
    """A Graph API error answer: Meta's body and the HTTP status Meta sends with it."""

    def __init__(self, status: int, code: int | str, body: dict[str, Any]) -> None:
        super().__init__(body["error"]["message"])
        self.status = status
        # The metric label: Meta's code, or the fault's name for HTTP-level failures.
        self.code = str(code)
        self.body = body


def meta_error(code: int, details: str | None = None) -> GraphError:
    """A WhatsApp error from the catalogue, with ``error_data.details`` (``details`` or Meta's)."""
    known = CATALOG[code]
    body = {
        "error": {
            "message": f"(#{code}) {known.title}",
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details or known.details},
            "fbtrace_id": fbtrace_id(),
        }
    }
    return GraphError(known.http_status, code, body)


def unknown_object(object_id: str, method: str) -> GraphError:
    """Graph's answer for an id that is not a node this token can see."""
    return GraphError(
        400,
        100,
        {
            "error": {
                "message": f"Unsupported {method} request. Object with ID '{object_id}' does not "
                "exist, cannot be loaded due to missing permissions, or does not support this "
                f"operation. Please read the Graph API documentation at {GRAPH_DOCS}",
                "type": "GraphMethodException",
                "code": 100,
                "error_subcode": 33,
                "fbtrace_id": fbtrace_id(),
            }
        },
    )


def bad_token() -> GraphError:
    """Graph's answer for a missing or wrong access token."""
    return _oauth(401, 190, "Invalid OAuth access token - Cannot parse access token")


def token_expired() -> GraphError:
    """Graph's answer for an expired token (subcode 463), as the ``190`` fault gives it."""
    now = datetime.now(UTC)
    expired = now - timedelta(hours=1)
    message = (
        f"Error validating access token: Session has expired on {_graph_time(expired)}. "
        f"The current time is {_graph_time(now)}."
    )
    return _oauth(401, 190, message, subcode=463)


def transient(status: int) -> GraphError:
    """Graph's transient error body, answered with HTTP ``status`` (500 or 503)."""
    if status == 503:
        body = _graph_body(
            2, "An unexpected error has occurred. Please retry your request later.", transient=True
        )
        return GraphError(503, "http_503", body)
    body = _graph_body(1, "An unknown error has occurred.", transient=True)
    return GraphError(status, f"http_{status}", body)


def nonexisting_field(field: str) -> GraphError:
    return meta_error(
        100,
        f"Tried accessing nonexisting field ({field}) on node type (WhatsAppBusinessPhoneNumber)",
    )


def failed_status_error(code: int) -> dict[str, Any]:
    """The ``errors[]`` item of a ``failed`` status webhook for ``code``."""
    known = CATALOG[code]
    return payloads.meta_error(code, known.title, known.details)


def _oauth(status: int, code: int, message: str, *, subcode: int | None = None) -> GraphError:
    body = _graph_body(code, message, subcode=subcode)
    return GraphError(status, code, body)


def _graph_body(
    code: int, message: str, *, subcode: int | None = None, transient: bool = False
) -> dict[str, Any]:
    error: dict[str, Any] = {"message": message, "type": "OAuthException"}
    if transient:
        error["is_transient"] = True
    error["code"] = code
    if subcode is not None:
        error["error_subcode"] = subcode
    error["fbtrace_id"] = fbtrace_id()
    return {"error": error}


def _graph_time(moment: datetime) -> str:
    # Graph writes these instants in Pacific time; the sandbox writes UTC and says so.
    return moment.strftime("%A, %d-%b-%y %H:%M:%S UTC")
