"""webhook-ingest's settings (environment variables; see the README's table)."""

from __future__ import annotations

from functools import cached_property

from pydantic import Field, SecretStr, field_validator

from inbox_common.settings import BrokerSettings, ServiceSettings, split_secrets

MiB = 1024 * 1024


class IngestSettings(BrokerSettings, ServiceSettings):
    webhook_ingest_port: int = Field(default=8080, ge=1, le=65535, description="a TCP port")
    whatsapp_webhook_secret: SecretStr = Field(
        description="Meta's app secret (two comma-separated secrets during a rotation)"
    )
    whatsapp_webhook_verify_token: SecretStr = Field(
        description="the verify token configured in Meta's webhook settings"
    )
    webhook_max_body_bytes: int = Field(
        default=4 * MiB,
        ge=64 * 1024,
        le=64 * MiB,
        description="the largest webhook body accepted; Meta sends up to about 3 MB",
    )

    @field_validator("whatsapp_webhook_secret", "whatsapp_webhook_verify_token")
    @classmethod
    def _not_blank(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip(" ,"):
            raise ValueError("must not be empty")
        return value

    @property
    def http_port(self) -> int:
        return self.webhook_ingest_port

    @cached_property
    def webhook_secrets(self) -> list[bytes]:
        return split_secrets(self.whatsapp_webhook_secret)
