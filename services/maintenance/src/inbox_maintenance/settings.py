"""maintenance's settings (environment variables; see the README's table).

:class:`MaintenanceTaskSettings` is what the tasks need (``maintenance --once``, ``inbox-ops
maintenance run``); :class:`MaintenanceSettings` adds the daemon's: its port, its schedule and
how its consumer rides out an outage.
"""

from __future__ import annotations

from datetime import timedelta
from functools import cached_property
from typing import Annotated

from pydantic import AfterValidator, Field, field_validator

from inbox_common.durations import parse_duration
from inbox_common.settings import (
    BrokerSettings,
    ConsumerSettings,
    LoggingSettings,
    MongoSettings,
    ServiceSettings,
)
from inbox_common.store.token_cipher import TokenCipherSettings
from inbox_common.whatsapp.cloud_api import CloudApiSettings

# Every task, in the order a run of all of them takes (the evaluation of alerts last, after
# the tasks that detect conditions).
TASKS: tuple[str, ...] = (
    "retention",
    "stale_locks",
    "stuck_sends",
    "channel_health",
    "dead_letters",
    "alerts",
)
# How often the built-in schedule publishes each task (seconds).
DEFAULT_SCHEDULE: dict[str, int] = {
    "retention": 24 * 3600,
    "stale_locks": 60,
    "stuck_sends": 300,
    # One Cloud API call per connected channel: hourly stays far below Graph's rate limits.
    "channel_health": 3600,
    "dead_letters": 300,
    "alerts": 60,
}


def parse_schedule(value: str) -> dict[str, float | None]:
    """``MAINTENANCE_SCHEDULE``: ``task=every`` entries, comma-separated, over the defaults;
    ``every`` is a duration (``30s``, ``5m``, ``1h``, ``1d``) or ``off``. ``off`` alone turns the
    whole schedule off (cron runs ``maintenance --once`` instead). None: not scheduled."""
    periods: dict[str, float | None] = {task: float(s) for task, s in DEFAULT_SCHEDULE.items()}
    text = value.strip()
    if text.lower() == "off":
        return dict.fromkeys(TASKS)
    for entry in filter(None, (part.strip() for part in text.split(","))):
        task, sep, every = (piece.strip() for piece in entry.partition("="))
        if not sep or task not in periods:
            raise ValueError(f"{entry!r} is not task=every with a task among {', '.join(TASKS)}")
        if every.lower() == "off":
            periods[task] = None
            continue
        try:
            periods[task] = parse_duration(every).total_seconds()
        except ValueError:
            raise ValueError(
                f"{every!r} ({task}) is not a duration like 30s, 5m, 1h, 1d, or off"
            ) from None
    return periods


def _schedule(value: str) -> str:
    parse_schedule(value)
    return value


def _urls(value: str) -> str:
    for url in filter(None, (u.strip() for u in value.split(","))):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{url[:100]!r} does not start with http:// or https://")
    return value


class MaintenanceTaskSettings(
    BrokerSettings, MongoSettings, LoggingSettings, CloudApiSettings, TokenCipherSettings
):
    """What the tasks read: their bounds and thresholds."""

    maintenance_lock_stale_seconds: float = Field(
        default=60.0,
        ge=5,
        le=3600,
        description="seconds without a heartbeat after which a running task's lock is stale "
        "and another replica may take the task over (5 to 3600)",
    )
    maintenance_webhook_retention_days: int = Field(
        default=14,
        ge=1,
        le=3650,
        description="days after which processed webhook events are deleted (1 to 3650; "
        "every event goes after 30 days anyway, by the ledger's TTL index)",
    )
    maintenance_alert_retention_days: int = Field(
        default=90, ge=1, le=3650, description="days after which resolved alerts are deleted"
    )
    maintenance_retention_batch: int = Field(
        default=500, ge=1, le=10_000, description="documents one retention delete removes"
    )
    maintenance_retention_pause_seconds: float = Field(
        default=0.2,
        ge=0,
        le=60,
        description="the pause between two retention deletes, so the store keeps serving",
    )
    maintenance_stale_lock_alert_seconds: float = Field(
        default=120.0,
        ge=5,
        le=7 * 86400,
        description="seconds without a heartbeat after which a held job lock raises the P1 "
        "alert; at least the largest stale bound of the jobs (RETRY_WORKER_STALE_SECONDS)",
    )
    maintenance_job_failure_threshold: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="a job's consecutiveFailures that raise the P1 alert (1 to 1000)",
    )
    maintenance_stuck_send_minutes: float = Field(
        default=15.0,
        gt=0,
        le=7 * 1440,
        description="minutes an outbound message may stay queued, sending or due for a retry "
        "before it counts as stuck",
    )
    maintenance_channel_quiet_hours: float = Field(
        default=24.0,
        gt=0,
        le=720,
        description="hours without any webhook for a connected number before its alert",
    )
    maintenance_many_channels_disconnected: int = Field(
        default=3,
        ge=2,
        le=100_000,
        description="disconnected channels that make the platform-wide P1 alert (2 or more)",
    )
    maintenance_webhook_failure_window_minutes: int = Field(
        default=15,
        ge=1,
        le=1440,
        description="the window the webhook failure rate is counted over, in minutes",
    )
    maintenance_webhook_spike_min: int = Field(
        default=20,
        ge=1,
        le=1_000_000,
        description="failed webhooks in the window below which there is no P1 spike",
    )
    maintenance_webhook_spike_factor: float = Field(
        default=3.0,
        ge=1,
        le=1000,
        description="how many times the usual failures per window make a sharp rise",
    )
    maintenance_health_urls: Annotated[str, AfterValidator(_urls)] = Field(
        default="",
        description="comma-separated /api/health URLs of the services whose health the "
        "alert evaluation checks (empty: none)",
    )

    @property
    def lock_stale_after(self) -> timedelta:
        return timedelta(seconds=self.maintenance_lock_stale_seconds)

    @property
    def health_urls(self) -> list[str]:
        return [u.strip() for u in self.maintenance_health_urls.split(",") if u.strip()]


class MaintenanceSettings(MaintenanceTaskSettings, ServiceSettings, ConsumerSettings):
    """The daemon: the tasks' settings, its port and its schedule."""

    maintenance_port: int = Field(default=8083, ge=1, le=65535, description="a TCP port")
    maintenance_schedule: Annotated[str, AfterValidator(_schedule)] = Field(
        default="",
        description="task=every entries over the defaults (every: 30s, 5m, 1h, 1d or off), "
        "comma-separated; off alone turns the schedule off",
    )
    maintenance_tick_seconds: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="seconds between two looks of the schedule at the clock (0 to 60)",
    )

    @field_validator("maintenance_tick_seconds")
    @classmethod
    def _not_tiny(cls, value: float) -> float:
        if value < 0.05:
            raise ValueError("must be at least 0.05")
        return value

    @property
    def http_port(self) -> int:
        return self.maintenance_port

    @cached_property
    def periods(self) -> dict[str, float | None]:
        """Each task's period in seconds (None: not scheduled)."""
        return parse_schedule(self.maintenance_schedule)
