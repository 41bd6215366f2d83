"""inbox-api's settings (environment variables; see the README's table)."""

from __future__ import annotations

from pydantic import Field

from inbox_common.settings import (
    BrokerSettings,
    ConsumerSettings,
    MongoSettings,
    ServiceSettings,
)
from inbox_common.store.token_cipher import TokenCipherSettings
from inbox_common.whatsapp.cloud_api import CloudApiSettings


class InboxApiSettings(
    BrokerSettings,
    ConsumerSettings,
    MongoSettings,
    ServiceSettings,
    TokenCipherSettings,
    CloudApiSettings,
):
    inbox_api_port: int = Field(default=8081, ge=1, le=65535, description="a TCP port")
    # Twice a flush's worth of one-body messages: the next batch gathers while one is written.
    inbox_consumer_prefetch: int = Field(
        default=256, ge=1, le=2000, description="unacked webhook messages held at once"
    )
    sender_prefetch: int = Field(
        default=32, ge=1, le=1000, description="Cloud API calls one replica makes at once"
    )
    sender_messages_per_second: float = Field(
        default=80.0,
        ge=1.0,
        le=1000.0,
        description="a number's Cloud API throughput when its channel sets none (Meta's default "
        "is 80; up to 1,000 once Meta raised it)",
    )
    sender_stale_seconds: float = Field(
        default=60.0,
        ge=5.0,
        le=3600.0,
        description="how long a send without an answer or a status webhook waits before it "
        "is sent again (marked possible_duplicate)",
    )
    campaign_scheduler_seconds: float = Field(
        default=5.0,
        ge=0.1,
        le=300.0,
        description="how often the campaigns' scheduler starts due campaigns and completes "
        "finished ones",
    )
    campaign_stalled_seconds: float = Field(
        default=60.0,
        ge=1.0,
        le=3600.0,
        description="a running campaign's fan-out that has not moved for this long gets its "
        "page job published again",
    )
    campaign_page_size: int = Field(
        default=200, ge=1, le=5000, description="recipients queued per fan-out job"
    )

    @property
    def http_port(self) -> int:
        return self.inbox_api_port
