"""whatsapp-sandbox's settings (environment variables; a bad value stops the start naming it).

The defaults are Meta's own numbers where Meta publishes them: 80 messages per second per
business number, and a pair rate of one message every 6 seconds to the same user with bursts
of up to 45 (https://developers.facebook.com/documentation/business-messaging/whatsapp/
overview, "Pair rate limits").
"""

from __future__ import annotations

from functools import cached_property
from typing import Annotated

from pydantic import Field, SecretStr, field_validator

from inbox_common.settings import ServiceSettings, split_secrets, url_with_scheme
from inbox_sandbox.numbers import BusinessNumber, parse_numbers

DEFAULT_NUMBERS = "100000000000001:dev-sandbox-token:100000000000009:+1 555 010 0001"


class SandboxSettings(ServiceSettings):
    """Everything the sandbox reads; it needs no broker and no store."""

    whatsapp_sandbox_port: int = Field(default=8090, ge=1, le=65535, description="a TCP port")
    sandbox_webhook_url: Annotated[str, url_with_scheme("http", "https")] = Field(
        default="http://127.0.0.1:8080/webhooks/whatsapp",
        description="the http:// or https:// URL the sandbox posts webhooks to (the ingest)",
    )
    whatsapp_webhook_secret: SecretStr = Field(
        description="the app secret webhooks are signed with (the first of a comma-separated "
        "rotation pair)"
    )
    # Secret: the items carry access tokens.
    sandbox_numbers: SecretStr = Field(
        default=SecretStr(DEFAULT_NUMBERS),
        description="business numbers as phone_number_id:access_token:waba_id:display_phone_"
        "number, comma-separated",
    )
    sandbox_throughput: int = Field(
        default=80, ge=1, le=1000, description="messages per second per number (1 to 1000)"
    )
    sandbox_pair_interval_seconds: float = Field(
        default=6.0, gt=0, le=3600, description="seconds per message to one user after a burst"
    )
    sandbox_pair_burst: int = Field(
        default=45, ge=1, le=1000, description="messages to one user that may go at once"
    )
    sandbox_status_delays_ms: str = Field(
        default="30,120,400",
        description="three non-decreasing delays in milliseconds: sent,delivered,read",
    )
    sandbox_webhook_duplicates: float = Field(
        default=0.0, ge=0, le=1, description="the probability (0 to 1) that a webhook is sent twice"
    )
    sandbox_webhook_shuffle: bool = Field(
        default=False, description="true to let a message's statuses arrive out of order"
    )
    sandbox_read: bool = Field(
        default=True, description="false when customers do not send read receipts"
    )
    sandbox_window_seconds: float = Field(
        default=24 * 3600,
        gt=0,
        le=7 * 24 * 3600,
        description="the customer service window in seconds (Meta: 24 hours)",
    )
    sandbox_timeout_hold_seconds: float = Field(
        default=30.0, gt=0, le=600, description="how long a 'timeout' fault holds a request"
    )
    sandbox_webhook_retry_seconds: float = Field(
        default=300.0, gt=0, le=24 * 3600, description="how long a webhook is retried at most"
    )
    sandbox_webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=120, description="seconds to wait for the ingest's answer"
    )
    sandbox_ledger_limit: int = Field(
        default=100_000,
        ge=100,
        le=10_000_000,
        description="accepted sends kept in memory (the oldest are dropped past it)",
    )

    @field_validator("whatsapp_webhook_secret")
    @classmethod
    def _not_blank(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip(" ,"):
            raise ValueError("must not be empty")
        return value

    @field_validator("sandbox_numbers")
    @classmethod
    def _numbers(cls, value: SecretStr) -> SecretStr:
        parse_numbers(value.get_secret_value(), throughput=80)
        return value

    @field_validator("sandbox_status_delays_ms")
    @classmethod
    def _delays(cls, value: str) -> str:
        _parse_delays(value)
        return value

    @property
    def http_port(self) -> int:
        return self.whatsapp_sandbox_port

    @cached_property
    def signing_secret(self) -> bytes:
        """The secret webhooks are signed with: the first one during a rotation."""
        return split_secrets(self.whatsapp_webhook_secret)[0]

    @cached_property
    def numbers(self) -> list[BusinessNumber]:
        spec = self.sandbox_numbers.get_secret_value()
        return parse_numbers(spec, throughput=self.sandbox_throughput)

    @cached_property
    def status_delays(self) -> tuple[float, float, float]:
        """The sent, delivered and read delays in seconds."""
        return _parse_delays(self.sandbox_status_delays_ms)


def _parse_delays(value: str) -> tuple[float, float, float]:
    parts = [part.strip() for part in value.split(",")]
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        raise ValueError("must be three whole numbers of milliseconds, like 30,120,400")
    sent, delivered, read = (int(part) for part in parts)
    if not sent <= delivered <= read <= 600_000:
        raise ValueError("must not decrease (sent <= delivered <= read) nor exceed 600000")
    return sent / 1000, delivered / 1000, read / 1000
