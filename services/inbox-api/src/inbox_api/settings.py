"""inbox-api's settings (environment variables; see the README's table)."""

from __future__ import annotations

from pydantic import Field

from inbox_common.settings import BrokerSettings, MongoSettings, ServiceSettings


class InboxApiSettings(BrokerSettings, MongoSettings, ServiceSettings):
    inbox_api_port: int = Field(default=8081, ge=1, le=65535, description="a TCP port")
    inbox_consumer_prefetch: int = Field(
        default=64, ge=1, le=1000, description="unacked webhook deliveries held at once"
    )

    @property
    def http_port(self) -> int:
        return self.inbox_api_port
