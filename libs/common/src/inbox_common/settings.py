"""Configuration read once from the environment with pydantic-settings.

Each service composes the mixins it needs into one ``BaseSettings`` class and calls
:func:`load_settings` in its ``__main__``; a bad or missing value stops the process with a
message that names the environment variable and says what to set.
"""

from __future__ import annotations

import sys
from typing import Annotated, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import AfterValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SETTINGS_CONFIG = SettingsConfigDict(case_sensitive=False, extra="ignore", validate_default=True)


def url_with_scheme(*schemes: str) -> AfterValidator:
    """A validator that accepts a URL only with one of ``schemes``."""
    allowed = " or ".join(f"{scheme}://" for scheme in schemes)

    def check(value: str) -> str:
        if urlsplit(value).scheme not in schemes:
            raise ValueError(f"must start with {allowed}")
        return value

    return AfterValidator(check)


class LoggingSettings(BaseSettings):
    """How a process reports: its log lines, and where its spans go (``inbox_common.tracing``:
    both endpoints empty, they are not exported)."""

    model_config = SETTINGS_CONFIG

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="one of DEBUG, INFO, WARNING, ERROR"
    )
    log_format: Literal["json", "console"] = Field(
        default="json", description="json (production) or console (a terminal)"
    )
    otel_exporter_otlp_endpoint: str = Field(
        default="",
        description="the OTLP/HTTP collector's base URL (http://collector:4318); /v1/traces "
        "is appended; empty: spans are not exported",
    )
    otel_exporter_otlp_traces_endpoint: str = Field(
        default="", description="the full OTLP/HTTP traces URL (overrides the base URL)"
    )

    @field_validator("otel_exporter_otlp_endpoint", "otel_exporter_otlp_traces_endpoint")
    @classmethod
    def _http_url_or_empty(cls, value: str) -> str:
        # Empty is unset (compose passes an unset variable as empty, as the SDKs read it).
        if value and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must start with http:// or https:// (or be empty)")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class BrokerSettings(BaseSettings):
    model_config = SETTINGS_CONFIG

    rabbitmq_url: Annotated[str, url_with_scheme("amqp", "amqps")] = Field(
        default="amqp://guest:guest@127.0.0.1:5672/",
        description="an amqp:// or amqps:// URL of the RabbitMQ broker",
    )
    amqp_namespace: str = Field(
        default="wa",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
        description="the prefix of every exchange and queue (letters, digits, _ and -)",
    )
    amqp_publish_timeout: float = Field(
        default=5.0, gt=0, le=60, description="seconds to wait for a publisher confirm"
    )
    amqp_delivery_limit: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="deliveries of a work-queue message before RabbitMQ dead-letters it; the "
        "same for every service of a namespace (it is a queue argument)",
    )


class ConsumerSettings(BaseSettings):
    """How a consumer rides out a dependency outage (see ``inbox_common.broker.consumer``)."""

    model_config = SETTINGS_CONFIG

    consumer_retry_attempts: int = Field(
        default=3, ge=1, le=20, description="quick in-process tries before the consumer pauses"
    )
    consumer_pause_max_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="the longest wait between checks of a paused consumer's dependencies",
    )


class MongoSettings(BaseSettings):
    model_config = SETTINGS_CONFIG

    mongodb_url: Annotated[str, url_with_scheme("mongodb", "mongodb+srv")] = Field(
        default="mongodb://127.0.0.1:27017/?directConnection=true",
        description="a mongodb:// or mongodb+srv:// URL",
    )
    mongodb_db: str = Field(
        default="inbox",
        pattern=r"^[A-Za-z0-9_-]{1,63}$",
        description="the database name (letters, digits, _ and -)",
    )
    mongodb_timeout_ms: int = Field(
        default=5000, ge=100, le=120_000, description="server selection timeout in milliseconds"
    )
    mongodb_socket_timeout_ms: int = Field(
        default=30_000,
        ge=0,
        le=600_000,
        description=(
            "how long one store request may wait for its answer before it counts as a store "
            "outage and is retried, in milliseconds (0: no limit)"
        ),
    )


class HttpSettings(BaseSettings):
    model_config = SETTINGS_CONFIG

    http_host: str = Field(default="0.0.0.0", description="the address to listen on")


class ServiceSettings(LoggingSettings, HttpSettings):
    """What every service reads: its log format, where its spans go and where it listens.

    Each service names its own port variable (``INBOX_API_PORT``...) and returns it from
    :attr:`http_port`, so several services can share one environment.
    """

    @property
    def http_port(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define http_port")


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def load_settings(cls: type[SettingsT]) -> SettingsT:
    """Read ``cls`` from the environment or exit with one line per bad variable."""
    try:
        return cls()
    except ValidationError as exc:
        lines = [f"{cls.__name__}: the configuration is invalid; fix these environment variables:"]
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            info = cls.model_fields.get(field)
            hint = f" (expected {info.description})" if info and info.description else ""
            lines.append(f"  {field.upper()}: {error['msg']}{hint}")
        print("\n".join(lines), file=sys.stderr)  # noqa: T201 - logging is not configured yet
        raise SystemExit(2) from None


def redact_url(url: str) -> str:
    """``url`` with its password replaced, fit for logs and health output."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def split_secrets(value: SecretStr) -> list[bytes]:
    """The comma-separated secrets of ``value`` (two are accepted during a rotation)."""
    return [s.strip().encode() for s in value.get_secret_value().split(",") if s.strip()]
