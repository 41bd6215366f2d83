"""The one grammar of durations and "since" times (the maintenance schedule, the replays'
``--since`` and the webhook logs' ``since``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from inbox_common.durations import DURATION_FORM, SINCE_FORM, parse_duration, parse_since

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("30s", timedelta(seconds=30)),
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        (" 15m ", timedelta(minutes=15)),
        ("9999999d", timedelta(days=9_999_999)),
    ],
)
def test_a_duration_is_a_whole_number_of_one_unit(text: str, span: timedelta) -> None:
    assert parse_duration(text) == span


@pytest.mark.parametrize(
    "text",
    # "\u0661" is ARABIC-INDIC DIGIT ONE: str.isdigit takes it, the grammar does not.
    ["", "0m", "2", "h", "2H", "1.5h", "-2h", "2h30m", "2 h", "2w", "\u0661h", "10000000d", "PT2H"],
)
def test_anything_else_is_refused_naming_the_form(text: str) -> None:
    with pytest.raises(ValueError, match=DURATION_FORM):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("2h", NOW - timedelta(hours=2)),
        ("7d", NOW - timedelta(days=7)),
        ("2026-12-01T09:00:00Z", datetime(2026, 12, 1, 9, tzinfo=UTC)),
        ("2026-12-01T10:00:00+01:00", datetime(2026, 12, 1, 9, tzinfo=UTC)),
        # Without an offset a time is UTC, not the host's zone.
        ("2026-12-01T09:00:00", datetime(2026, 12, 1, 9, tzinfo=UTC)),
        ("2026-12-01", datetime(2026, 12, 1, tzinfo=UTC)),
    ],
)
def test_since_is_a_time_or_a_duration_back_from_now(text: str, moment: datetime) -> None:
    since = parse_since(text, now=NOW)

    assert since == moment
    assert since.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        "yesterday",
        "0m",
        "2026-13-01",
        # A query string's "+" arrives as a space: the form says to write %2B.
        "2026-12-01T10:00:00 01:00",
    ],
)
def test_a_wrong_since_is_refused_naming_both_forms(text: str) -> None:
    with pytest.raises(ValueError, match="is not") as refused:
        parse_since(text, now=NOW)

    assert DURATION_FORM in str(refused.value) or SINCE_FORM in str(refused.value)


def test_a_duration_reaching_before_the_calendar_is_refused_not_a_crash() -> None:
    with pytest.raises(ValueError, match="before the year 1"):
        parse_since("9999999d", now=NOW)
