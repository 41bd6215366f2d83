"""The names of the store's collections (one place, imported by the schema and by every
repository)."""

from __future__ import annotations

CHANNELS = "channels"
CONTACTS = "contacts"
CONVERSATIONS = "conversations"
MESSAGES = "messages"
WEBHOOK_EVENTS = "webhook_events"
API_TOKENS = "api_tokens"
SCHEMA_MIGRATIONS = "schema_migrations"
AGENTS = "agents"
JOB_LOCKS = "job_locks"
# Written by inbox-api's campaigns; the senders and the retry-worker read a campaign's status.
CAMPAIGNS = "campaigns"
# One document per recipient of a campaign (unique per campaign and wa_id).
CAMPAIGN_RECIPIENTS = "campaign_recipients"
# Meta's business-account webhooks (template status, phone number quality), as received.
ACCOUNT_EVENTS = "account_events"
ALERTS = "alerts"
# One document per maintenance task: the last period the schedule published it for.
MAINTENANCE_SCHEDULE = "maintenance_schedule"
