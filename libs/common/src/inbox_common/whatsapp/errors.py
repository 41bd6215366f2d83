"""Meta's error codes mapped onto the project's error tree: one table for every caller.

The sender (a refused send), the status consumer (a ``failed`` status webhook's ``errors[]``)
and the retry logic read the same :data:`TABLE`, so a code means the same thing wherever it
shows up. Each entry says what happens to the work:

- ``retry``: Meta or the network is unavailable, or a rate limit was hit. The work waits in a
  delay tier (``TABLE`` gives the first one; :func:`next_tier` walks up on repeated failures)
  and is never dead-lettered for that cause.
- ``permanent``: the same request can never succeed (outside the 24-hour window, undeliverable,
  a refused template, bad parameters). Recorded failed at once, never resent unchanged.
- ``stop_channel``: the channel itself cannot send (token refused, account blocked or locked):
  it is disconnected with the reason, its sends are held, an alert is raised.

A code the table does not know is ``permanent``: reporting it is safe, looping on it is not.
Only Graph's own signal that a failure is transient (``is_transient``, or an HTTP 5xx) makes an
unknown code retryable, and then the tiers still end.

:mod:`inbox_common.whatsapp.classify` turns what the client or a webhook saw into a
:class:`CloudApiError` by this table. Codes and meanings follow Meta's error codes page
(developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NoReturn

from inbox_common.broker.topology import RETRY_TIERS
from inbox_common.errors import (
    ChannelStoppedError,
    PermanentError,
    ProcessingError,
    TransientError,
)

__all__ = [
    "TABLE",
    "TIERS",
    "UNKNOWN",
    "Classification",
    "CloudApiError",
    "Rule",
    "next_tier",
    "rule_for",
]

TIERS: tuple[str, ...] = tuple(name for name, _ in RETRY_TIERS)
FIRST_TIER = TIERS[0]


class Classification(StrEnum):
    """What happens to work that failed with a Cloud API error."""

    RETRY = "retry"
    PERMANENT = "permanent"
    STOP_CHANNEL = "stop_channel"


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the table: the keys it covers, their fate, and words for the operator.

    ``keys`` are Meta codes (ints, or a ``range`` for a family) or the names of failures that
    carry no Meta code (``"timeout"``, ``"http_5xx"``...). ``tier`` is the first delay tier of
    a retryable failure. ``meaning`` says what happened and ``action`` what to do; together
    they are the message of the error raised.
    """

    keys: Collection[int | str]
    classification: Classification
    meaning: str
    action: str
    tier: str | None = None


_RETRY = Classification.RETRY
_PERMANENT = Classification.PERMANENT
_STOP = Classification.STOP_CHANNEL
_BACKOFF = "retried with backoff"
_FIX_REQUEST = "fix the request; resending it unchanged fails again"
_HELD = "the channel's sends are held"

# The one table. Order does not matter: a key appears once (checked at import).
TABLE: tuple[Rule, ...] = (
    # --- retry later --------------------------------------------------------------------
    # Throughput is counted per second: a 30 s wait lets the number's bucket refill fully.
    Rule((130429,), _RETRY, "the number's message throughput was exceeded",
         "retried after a wait; lower the send rate if it keeps happening", "30s"),
    # Pair rate: about one message per 6 s to the same user, bursts borrowing ahead, so after
    # a burst the pair needs minutes, not seconds.
    Rule((131056,), _RETRY, "too many messages to the same user in a short time (pair rate)",
         "retried after a wait of minutes; Meta allows about one message every 6 s to one "
         "user", "2m"),
    Rule((131000,), _RETRY, "Meta failed to send for an unknown reason", _BACKOFF, FIRST_TIER),
    Rule((131016,), _RETRY, "the Cloud API is temporarily unavailable",
         f"{_BACKOFF}; check Meta's status page if it lasts", FIRST_TIER),
    Rule((4,), _RETRY, "the app reached its Graph API call rate limit", _BACKOFF, FIRST_TIER),
    Rule((80007,), _RETRY, "the WhatsApp Business Account reached its rate limit", _BACKOFF,
         FIRST_TIER),
    Rule((1, 2), _RETRY, "the Graph API failed transiently", _BACKOFF, FIRST_TIER),
    Rule(("http_5xx",), _RETRY, "the Cloud API answered an HTTP server error without a Graph "
         "error body", _BACKOFF, FIRST_TIER),
    Rule(("http_429",), _RETRY, "the Cloud API answered HTTP 429 (too many requests)", _BACKOFF,
         FIRST_TIER),
    Rule(("unknown_transient",), _RETRY, "Meta answered an error code this inbox does not "
         "know, marked transient", f"{_BACKOFF}; report the code if it lasts", FIRST_TIER),
    Rule(("timeout",), _RETRY, "the Cloud API did not answer in time, so Meta may have "
         "accepted the request", "do not resend before checking for its status webhook; "
         "retried later", FIRST_TIER),
    Rule(("connection_lost",), _RETRY, "the connection to the Cloud API broke during the "
         "request, so Meta may have accepted it", "do not resend before checking for its "
         "status webhook; retried later", FIRST_TIER),
    Rule(("unreadable_answer",), _RETRY, "the Cloud API answered 200 without a readable "
         "message id, so Meta probably accepted the send", "do not resend before checking "
         "for its status webhook", FIRST_TIER),
    Rule(("connect_timeout", "connection"), _RETRY, "the Cloud API could not be reached "
         "(nothing was sent)", f"{_BACKOFF}; check WHATSAPP_API_BASE_URL and the network if "
         "it lasts", FIRST_TIER),
    # --- permanent ----------------------------------------------------------------------
    Rule((131047,), _PERMANENT, "more than 24 hours passed since the customer last wrote (the "
         "customer service window is closed)", "only a template message can be sent now"),
    Rule((131026,), _PERMANENT, "the message is undeliverable (the number may not be on "
         "WhatsApp, or the user has not accepted the current terms or has an old app)",
         "not retried; check the recipient"),
    Rule((131049,), _PERMANENT, "Meta chose not to deliver this marketing message (per-user "
         "marketing limit, to keep engagement healthy)",
         "do not resend it unchanged; try later or with another message"),
    Rule((131050,), _PERMANENT, "the user stopped marketing messages from this business",
         "do not send them marketing messages"),
    Rule(range(132000, 133000), _PERMANENT, "the template message was refused (it does not "
         "exist, is not approved, is paused or disabled, or its parameters do not match)",
         "fix the template or its parameters"),
    Rule((100,), _PERMANENT, "a parameter is invalid, unknown or misspelled (or the object "
         "does not exist for this token)", _FIX_REQUEST),
    Rule((131008,), _PERMANENT, "a required parameter is missing", _FIX_REQUEST),
    Rule((131009,), _PERMANENT, "a parameter value is not valid", _FIX_REQUEST),
    Rule((131051,), _PERMANENT, "the message type is not supported", "send a supported type"),
    Rule((131052,), _PERMANENT, "the media the user sent could not be downloaded",
         "ask the user to send it again"),
    Rule((131053,), _PERMANENT, "the media could not be uploaded (unsupported type or too "
         "large)", "check the media's type and size"),
    Rule(("http_4xx",), _PERMANENT, "the Cloud API refused the request without a Graph error "
         "body", "check WHATSAPP_API_BASE_URL and WHATSAPP_API_VERSION"),
    # --- stop the channel ---------------------------------------------------------------
    Rule((190,), _STOP, "the channel's access token was refused (expired or revoked)",
         "reconnect the channel with a new token"),
    Rule((368,), _STOP, "the WhatsApp Business Account is temporarily blocked for policy "
         "violations", f"{_HELD}; reconnect the channel once Meta lifts the block"),
    Rule((131048,), _STOP, "the number hit Meta's spam rate limit (too many of its messages "
         "were blocked or reported)", f"{_HELD}; improve message quality, reconnect the "
         "channel once the limit is lifted"),
    Rule((131031,), _STOP, "the business account is locked (a policy violation or failed "
         "verification)", f"{_HELD}; resolve it in WhatsApp Manager, then reconnect the "
         "channel"),
)  # fmt: skip

# Any code not in the table: report it, never loop on it.
UNKNOWN = Rule(
    (),
    _PERMANENT,
    "Meta answered an error code this inbox does not know",
    "not retried; look the code up on Meta's error codes page and report it",
)


def _index(table: Sequence[Rule]) -> tuple[dict[int | str, Rule], tuple[Rule, ...]]:
    exact: dict[int | str, Rule] = {}
    families = tuple(rule for rule in table if isinstance(rule.keys, range))
    for rule in table:
        if isinstance(rule.keys, range):
            continue
        for key in rule.keys:
            if key in exact:
                raise ValueError(f"the Cloud API error table lists {key!r} twice")
            exact[key] = rule
    for rule in table:
        if rule.classification is _RETRY and rule.tier not in TIERS:
            raise ValueError(f"a retryable rule needs a tier among {TIERS}: {rule.keys!r}")
    return exact, families


_EXACT, _FAMILIES = _index(TABLE)


def rule_for(key: int | str) -> Rule:
    """The rule of a Meta code or a named failure; :data:`UNKNOWN` when the table lacks it."""
    if (rule := _EXACT.get(key)) is not None:
        return rule
    if isinstance(key, int):
        for family in _FAMILIES:
            if key in family.keys:
                return family
    return UNKNOWN


def next_tier(current: str | None, floor: str) -> str | None:
    """The delay tier of the next retry: one above ``current``, never below ``floor``.

    ``current`` is the tier the work last waited in (``None`` on the first failure), and
    ``floor`` the failure's own first tier. Returns ``None`` once ``current`` is the last tier:
    the caller has waited through every tier and must give up (and say so).
    """
    start = _tier_index(floor)
    if current is None:
        return floor
    after = _tier_index(current) + 1
    if after >= len(TIERS):
        return None
    return TIERS[max(after, start)]


def _tier_index(tier: str) -> int:
    try:
        return TIERS.index(tier)
    except ValueError:
        raise ValueError(f"unknown delay tier {tier!r}; the tiers are {', '.join(TIERS)}") from None


class CloudApiError(Exception):
    """A Cloud API call failed; what Meta said, and what should happen to the work.

    ``code``, ``title``, ``meta_message``, ``details`` (``error_data.details``),
    ``http_status`` and ``fbtrace_id`` are Meta's, where Meta gave them. ``reason`` is a short
    machine code (``meta_130429``, ``http_503``, ``timeout``); ``classification`` and ``tier``
    come from :data:`TABLE`. ``maybe_sent`` is true when the request may have reached Meta
    without an answer (a timeout, a broken connection): a send must not simply be repeated.
    ``str(error)`` says what happened and what to do.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        classification: Classification,
        tier: str | None = None,
        code: int | None = None,
        title: str | None = None,
        meta_message: str | None = None,
        details: str | None = None,
        http_status: int | None = None,
        fbtrace_id: str | None = None,
        maybe_sent: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.classification = classification
        self.tier = tier
        self.code = code
        self.title = title
        self.meta_message = meta_message
        self.details = details
        self.http_status = http_status
        self.fbtrace_id = fbtrace_id
        self.maybe_sent = maybe_sent

    @property
    def retryable(self) -> bool:
        return self.classification is Classification.RETRY

    def to_processing_error(self, *, channel_id: str, tier: str | None = None) -> ProcessingError:
        """The error of the tree for this failure.

        ``tier`` overrides the failure's first tier (the retry logic's :func:`next_tier`);
        ``channel_id`` names the channel a stop applies to.
        """
        if self.classification is Classification.RETRY:
            return TransientError(self.reason, self.message, tier=tier or self.tier)
        if self.classification is Classification.STOP_CHANNEL:
            return ChannelStoppedError(self.reason, self.message, channel_id=channel_id)
        return PermanentError(self.reason, self.message)

    def raise_processing_error(self, *, channel_id: str, tier: str | None = None) -> NoReturn:
        """Raise :meth:`to_processing_error`, chained to this error."""
        raise self.to_processing_error(channel_id=channel_id, tier=tier) from self
