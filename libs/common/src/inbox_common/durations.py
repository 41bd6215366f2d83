"""Durations as operators type them (``30s``, ``5m``, ``2h``, ``7d``), and "since" times.

One grammar for every place a person gives a span of time: ``MAINTENANCE_SCHEDULE``'s
periods, ``inbox-ops webhooks replay --since`` and the webhook logs' ``since`` filter. A
"since" is either a moment (ISO 8601) or a duration back from now, so that the same ``2h``
means the same thing on the command line and in the API.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

# Whole units only, at most 7 digits: big enough for any retention, small enough that
# ``now - duration`` never leaves the calendar.
_DURATION = re.compile(r"([0-9]{1,7})(s|m|h|d)")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

DURATION_FORM = "a duration like 30s, 30m, 2h or 7d"
SINCE_FORM = (
    "an ISO 8601 time (2026-12-01T09:00:00Z; in a URL write + as %2B) or a duration back "
    "from now (30m, 2h, 7d)"
)


def parse_duration(text: str) -> timedelta:
    """``30s``, ``5m``, ``2h``, ``7d``: a positive whole number of one unit.

    Raises ``ValueError`` naming the allowed form.
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None or int(match[1]) == 0:
        raise ValueError(f"{text[:40]!r} is not {DURATION_FORM}")
    return timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """A moment, in UTC: an ISO 8601 time (a time without an offset is UTC), or a duration
    before ``now`` (default: the current time).

    Raises ``ValueError`` naming the allowed forms.
    """
    value = text.strip()
    if _DURATION.fullmatch(value):
        try:
            return (now or datetime.now(UTC)) - parse_duration(value)
        except OverflowError:
            raise ValueError(f"{text[:40]!r} reaches back before the year 1") from None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{text[:40]!r} is not {SINCE_FORM}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
