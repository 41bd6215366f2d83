"""retry-worker's settings (environment variables; see the README's table).

:class:`RetryJobSettings` is what one pass needs (``retry-worker --once``, ``inbox-ops job
campaign-retry``); :class:`RetryWorkerSettings` adds the daemon's: its port, its interval and
the token of its jobs API.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from inbox_common.settings import BrokerSettings, LoggingSettings, MongoSettings, ServiceSettings


class RetryJobSettings(BrokerSettings, MongoSettings, LoggingSettings):
    retry_worker_stale_seconds: float = Field(
        default=30.0,
        ge=2,
        le=3600,
        description="seconds without a heartbeat after which the job lock is stale and "
        "another worker takes it over (2 to 3600)",
    )
    retry_worker_failure_threshold: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="consecutive failed passes that make the health degraded (1 to 1000)",
    )
    retry_worker_pass_limit: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="due jobs one pass takes at most before it records itself (1 to 1000000)",
    )

    @property
    def stale_after(self) -> timedelta:
        return timedelta(seconds=self.retry_worker_stale_seconds)


class RetryWorkerSettings(RetryJobSettings, ServiceSettings):
    retry_worker_port: int = Field(default=8082, ge=1, le=65535, description="a TCP port")
    jobs_api_token: SecretStr = Field(
        description="the token of GET/POST /api/jobs/campaign-retry?token=... (not blank)"
    )
    retry_worker_interval_seconds: float = Field(
        default=1.0,
        gt=0,
        le=600,
        description="seconds between two passes, less than half RETRY_WORKER_STALE_SECONDS",
    )

    @field_validator("jobs_api_token")
    @classmethod
    def _not_blank(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("retry_worker_interval_seconds")
    @classmethod
    def _renewed_in_time(cls, value: float, info: ValidationInfo) -> float:
        # The daemon renews its lock once per interval: a longer wait would let it go stale.
        stale = info.data.get("retry_worker_stale_seconds")
        if stale is not None and value * 2 >= stale:
            raise ValueError(f"must be less than half RETRY_WORKER_STALE_SECONDS ({stale:g})")
        return value

    @property
    def http_port(self) -> int:
        return self.retry_worker_port
