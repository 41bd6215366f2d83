"""inbox-api's settings (environment variables; see the README's table)."""

from __future__ import annotations

from pydantic import Field

from inbox_common.settings import (
    BrokerSettings,
    ConsumerSettings,
    MongoSettings,
    ServiceSettings,
)


class InboxApiSettings(BrokerSettings, ConsumerSettings, MongoSettings, ServiceSettings):
    inbox_api_port: int = Field(default=8081, ge=1, le=65535, description="a TCP port")
    # Twice a flush's worth of one-body messages: the next batch gathers while one is written.
    inbox_consumer_prefetch: int = Field(
        default=256, ge=1, le=2000, description="unacked webhook messages held at once"
    )

    @property
    def http_port(self) -> int:
        return self.inbox_api_port
