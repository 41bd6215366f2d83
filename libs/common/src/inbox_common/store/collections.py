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
