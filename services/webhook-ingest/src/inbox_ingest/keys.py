"""The application keys of webhook-ingest."""

from __future__ import annotations

from aiohttp import web

from inbox_common.broker.connection import Broker
from inbox_common.broker.publisher import ConfirmedPublisher
from inbox_common.broker.topology import Names
from inbox_ingest.metrics import IngestMetrics
from inbox_ingest.service import WebhookPublisher
from inbox_ingest.settings import IngestSettings

SETTINGS = web.AppKey("settings", IngestSettings)
BROKER = web.AppKey("broker", Broker)
PUBLISHER = web.AppKey("publisher", ConfirmedPublisher)
NAMES = web.AppKey("names", Names)
METRICS = web.AppKey("metrics", IngestMetrics)
WEBHOOK_PUBLISHER = web.AppKey("webhook_publisher", WebhookPublisher)
