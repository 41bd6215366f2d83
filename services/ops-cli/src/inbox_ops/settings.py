"""inbox-ops's settings: the store it works on, and its own log format."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from inbox_common.settings import BrokerSettings, LoggingSettings, MongoSettings


class OpsSettings(MongoSettings, BrokerSettings, LoggingSettings):
    log_format: Literal["json", "console"] = Field(
        default="console", description="json or console (the default for a terminal command)"
    )
