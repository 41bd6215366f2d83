"""inbox-ops's settings: the store it works on, and its own log format; where the services
answer (``healthcheck``); what ``readiness`` and ``incident`` judge by."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from pydantic_settings import BaseSettings

from inbox_common.settings import (
    SETTINGS_CONFIG,
    BrokerSettings,
    LoggingSettings,
    MongoSettings,
    url_with_scheme,
)
from inbox_retry.settings import RetryJobSettings

HttpUrl = Annotated[str, url_with_scheme("http", "https")]


class ConsoleLogging(LoggingSettings):
    """A terminal command's logging: console lines unless ``LOG_FORMAT`` says otherwise. Put
    it first among the bases, before any class that brings :class:`LoggingSettings`."""

    log_format: Literal["json", "console"] = Field(
        default="console", description="json or console (the default for a terminal command)"
    )


class OpsSettings(ConsoleLogging, MongoSettings, BrokerSettings):
    pass


class HealthTargets(BaseSettings):
    """The base URL of each service whose ``/api/health`` ``healthcheck`` reads."""

    model_config = SETTINGS_CONFIG

    webhook_ingest_url: HttpUrl = Field(
        default="http://127.0.0.1:8080", description="webhook-ingest's http:// or https:// URL"
    )
    inbox_api_url: HttpUrl = Field(
        default="http://127.0.0.1:8081", description="inbox-api's http:// or https:// URL"
    )
    retry_worker_url: HttpUrl = Field(
        default="http://127.0.0.1:8082", description="retry-worker's http:// or https:// URL"
    )
    maintenance_url: HttpUrl = Field(
        default="http://127.0.0.1:8083", description="maintenance's http:// or https:// URL"
    )
    healthcheck_timeout_seconds: float = Field(
        default=5.0, gt=0, le=60, description="seconds to wait for each /api/health answer"
    )

    def urls(self) -> dict[str, str]:
        """Each service's base URL, by the service's name."""
        return {
            "webhook-ingest": self.webhook_ingest_url,
            "inbox-api": self.inbox_api_url,
            "retry-worker": self.retry_worker_url,
            "maintenance": self.maintenance_url,
        }


class ReadinessSettings(ConsoleLogging, RetryJobSettings):
    """What readiness reads: the store and the broker, the retry-worker's lock bounds
    (``RETRY_WORKER_STALE_SECONDS``, ``RETRY_WORKER_FAILURE_THRESHOLD``) and its own
    thresholds."""

    readiness_webhook_failure_rate: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="the share (0 to 1) of failed webhooks in the last hour above which "
        "readiness warns",
    )
    readiness_broker_timeout_seconds: float = Field(
        default=5.0, gt=0, le=60, description="seconds to wait for RabbitMQ's answers"
    )
