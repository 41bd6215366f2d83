"""The application keys of inbox-api's own services (shared resources have theirs in the
library; the request's principal has its key in ``rest.auth``)."""

from __future__ import annotations

from aiohttp import web

from inbox_api.agents import AgentService
from inbox_api.campaigns.service import CampaignService
from inbox_api.channels import ChannelService
from inbox_api.conversations import ConversationService
from inbox_api.events import Events
from inbox_api.outbound import OutboundService
from inbox_api.webhook_logs import WebhookLogService

AGENTS = web.AppKey("agents", AgentService)
CAMPAIGNS = web.AppKey("campaigns", CampaignService)
CHANNELS = web.AppKey("channels", ChannelService)
CONVERSATIONS = web.AppKey("conversations", ConversationService)
EVENTS = web.AppKey("events", Events)
OUTBOUND = web.AppKey("outbound", OutboundService)
WEBHOOK_LOGS = web.AppKey("webhook_logs", WebhookLogService)
