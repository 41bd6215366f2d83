"""The schema, as an ordered list of versioned migrations.

A migration adds collections, indexes and validators, and may run a data step (idempotent:
it rewrites documents into the new shape and can run again) and replace an index by another
(``drop_indexes``: an index holds no data; a unique index whose key changed meaning must go
before its successor can be built). No migration deletes a document or a collection. The
schema the code expects is the fold of every migration, which is what ``db-deploy --check``
compares with the live database.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from inbox_common.store.client import Database
from inbox_common.store.collections import (
    ACCOUNT_EVENTS,
    AGENTS,
    ALERTS,
    API_TOKENS,
    CAMPAIGN_RECIPIENTS,
    CAMPAIGNS,
    CHANNELS,
    CONTACTS,
    CONVERSATIONS,
    JOB_LOCKS,
    MAINTENANCE_SCHEDULE,
    MESSAGES,
    SCHEMA_MIGRATIONS,
    WEBHOOK_EVENTS,
)
from inbox_common.store.identities import migrate_contacts

__all__ = [
    "ACCOUNT_EVENTS",
    "AGENTS",
    "ALERTS",
    "API_TOKENS",
    "CAMPAIGNS",
    "CAMPAIGN_RECIPIENTS",
    "CHANNELS",
    "CONTACTS",
    "CONVERSATIONS",
    "JOB_LOCKS",
    "MAINTENANCE_SCHEDULE",
    "MESSAGES",
    "MIGRATIONS",
    "SCHEMA_MIGRATIONS",
    "WEBHOOK_EVENTS",
    "Index",
    "Migration",
    "expected_indexes",
    "expected_validators",
]

DataStep = Callable[[Database], Awaitable[None]]

WEBHOOK_RETENTION_SECONDS = 30 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Index:
    collection: str
    name: str
    keys: tuple[tuple[str, int], ...]
    unique: bool = False
    expire_after_seconds: int | None = None
    partial: dict[str, Any] | None = None

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"name": self.name}
        if self.unique:
            opts["unique"] = True
        if self.expire_after_seconds is not None:
            opts["expireAfterSeconds"] = self.expire_after_seconds
        if self.partial is not None:
            opts["partialFilterExpression"] = self.partial
        return opts


@dataclass(frozen=True, slots=True)
class Migration:
    """One version of the schema; applied in this order: collections, the dropped indexes
    (an old unique key may refuse the data step's rewrites), the data step, the new indexes
    (their unique keys hold only once the data step merged duplicates), the validators."""

    version: int
    name: str
    collections: tuple[str, ...] = ()
    indexes: tuple[Index, ...] = ()
    validators: dict[str, dict[str, Any]] = field(default_factory=dict)
    data: DataStep | None = None
    drop_indexes: tuple[tuple[str, str], ...] = ()  # (collection, index name)


def _required(*names: str, **properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "$jsonSchema": {"bsonType": "object", "required": list(names), "properties": properties}
    }


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        name="inbound pipeline: channels, contacts, conversations, messages, ledger, tokens",
        collections=(CHANNELS, CONTACTS, CONVERSATIONS, MESSAGES, WEBHOOK_EVENTS, API_TOKENS),
        indexes=(
            Index(CHANNELS, "phone_number_id_unique", (("phone_number_id", 1),), unique=True),
            Index(CHANNELS, "tenant_created", (("tenant", 1), ("created_at", -1))),
            Index(CONTACTS, "channel_wa_id_unique", (("channel_id", 1), ("wa_id", 1)), unique=True),
            Index(
                CONVERSATIONS,
                "channel_wa_id_unique",
                (("channel_id", 1), ("wa_id", 1)),
                unique=True,
            ),
            Index(
                CONVERSATIONS,
                "tenant_last_message",
                (("tenant", 1), ("last_message_at", -1), ("_id", -1)),
            ),
            Index(MESSAGES, "wamid_unique", (("wamid", 1),), unique=True),
            Index(
                MESSAGES,
                "conversation_time",
                (("conversation_id", 1), ("timestamp", 1), ("_id", 1)),
            ),
            Index(
                MESSAGES,
                "idempotency_key_unique",
                (("idempotency_key", 1),),
                unique=True,
                partial={"idempotency_key": {"$exists": True}},
            ),
            Index(WEBHOOK_EVENTS, "sha256_unique", (("sha256", 1),), unique=True),
            Index(
                WEBHOOK_EVENTS,
                "received_ttl",
                (("received_at", 1),),
                expire_after_seconds=WEBHOOK_RETENTION_SECONDS,
            ),
            Index(WEBHOOK_EVENTS, "status_received", (("status", 1), ("received_at", -1))),
            Index(
                WEBHOOK_EVENTS,
                "phone_number_received",
                (("phone_number_ids", 1), ("received_at", -1)),
            ),
            Index(API_TOKENS, "token_hash_unique", (("token_hash", 1),), unique=True),
        ),
        validators={
            CHANNELS: _required(
                "phone_number_id",
                "tenant",
                "status",
                phone_number_id={"bsonType": "string"},
                status={"enum": ["connected", "disconnected"]},
            ),
            MESSAGES: _required("wamid", wamid={"bsonType": "string"}),
            WEBHOOK_EVENTS: _required(
                "sha256",
                "status",
                "received_at",
                sha256={"bsonType": "string"},
                status={"enum": ["received", "processed", "failed"]},
            ),
            API_TOKENS: _required(
                "token_hash",
                "role",
                "tenant",
                role={"enum": ["agent", "admin", "superadmin"]},
            ),
        },
    ),
    Migration(
        version=2,
        name="contacts by identity: phone and business-scoped user id, one conversation each",
        data=migrate_contacts,
        # Unique on (channel, wa_id) for every document: a customer without a phone has none,
        # so the key becomes partial (below), and a conversation is one per contact now.
        drop_indexes=((CONTACTS, "channel_wa_id_unique"), (CONVERSATIONS, "channel_wa_id_unique")),
        indexes=(
            Index(
                CONTACTS,
                "channel_phone_unique",
                (("channel_id", 1), ("wa_id", 1)),
                unique=True,
                partial={"wa_id": {"$exists": True}},
            ),
            Index(
                CONTACTS,
                "channel_bsuid_unique",
                (("channel_id", 1), ("user_id", 1)),
                unique=True,
                partial={"user_id": {"$exists": True}},
            ),
            Index(CONTACTS, "channel_former_bsuids", (("channel_id", 1), ("former_user_ids", 1))),
            Index(CONVERSATIONS, "contact", (("contact_id", 1),)),
            Index(CONVERSATIONS, "tenant_phone", (("tenant", 1), ("wa_id", 1))),
            Index(CONVERSATIONS, "tenant_bsuid", (("tenant", 1), ("user_id", 1))),
            Index(CONVERSATIONS, "merged_into", (("merged_into", 1),)),
        ),
    ),
    Migration(
        version=3,
        name="agents at work: agents, assignment, labels, outbound sends",
        collections=(AGENTS,),
        indexes=(
            Index(AGENTS, "tenant_name_unique", (("tenant", 1), ("name", 1)), unique=True),
            Index(API_TOKENS, "tenant_created", (("tenant", 1), ("created_at", 1))),
            Index(
                CONVERSATIONS,
                "tenant_assignee_last_message",
                (("tenant", 1), ("assignee", 1), ("last_message_at", -1)),
            ),
            Index(CONVERSATIONS, "tenant_labels", (("tenant", 1), ("labels", 1))),
            # One message per Idempotency-Key (the key is prefixed with tenant and conversation).
            Index(
                MESSAGES,
                "idempotency_key_unique",
                (("idempotency_key", 1),),
                unique=True,
                partial={"idempotency_key": {"$exists": True}},
            ),
            Index(
                MESSAGES,
                "channel_send_state",
                (("channel_id", 1), ("send_state", 1)),
                partial={"send_state": {"$exists": True}},
            ),
        ),
    ),
    Migration(
        version=4,
        name="retry worker: job locks, the due time of retrying sends",
        collections=(JOB_LOCKS,),
        indexes=(
            # The retry-worker's status shows the next due retry: the smallest retry_due_at
            # of the messages in send_state "retrying".
            Index(
                MESSAGES,
                "send_state_retry_due",
                (("send_state", 1), ("retry_due_at", 1)),
                partial={"retry_due_at": {"$exists": True}},
            ),
        ),
    ),
    Migration(
        version=5,
        name="maintenance and alerts: alerts, the maintenance schedule, stuck sends by age",
        collections=(ALERTS, MAINTENANCE_SCHEDULE),
        indexes=(
            # One open (or acknowledged) alert per dedupe key; a resolved one leaves the index,
            # so the same condition coming back opens a new alert.
            Index(
                ALERTS,
                "dedupe_key_open_unique",
                (("dedupe_key", 1),),
                unique=True,
                partial={"status": {"$in": ["open", "acknowledged"]}},
            ),
            Index(ALERTS, "tenant_newest", (("tenant", 1), ("_id", -1))),
            Index(ALERTS, "status_resolved", (("status", 1), ("resolved_at", 1))),
            # maintenance's stuck_sends: outbound messages in a state, oldest first.
            Index(
                MESSAGES,
                "send_state_created",
                (("send_state", 1), ("created_at", 1)),
                partial={"send_state": {"$exists": True}},
            ),
        ),
        validators={
            ALERTS: _required(
                "dedupe_key",
                "kind",
                "severity",
                "status",
                dedupe_key={"bsonType": "string"},
                kind={"bsonType": "string"},
                severity={"enum": ["P0", "P1", "P2", "P3"]},
                status={"enum": ["open", "acknowledged", "resolved"]},
            ),
        },
    ),
    Migration(
        version=6,
        name="campaigns: campaigns, their recipients, their messages; business-account events",
        collections=(CAMPAIGNS, CAMPAIGN_RECIPIENTS, ACCOUNT_EVENTS),
        indexes=(
            Index(CAMPAIGNS, "tenant_newest", (("tenant", 1), ("_id", -1))),
            # The scheduler's two questions: which campaigns are due, which fan-outs stalled.
            Index(CAMPAIGNS, "status_schedule", (("status", 1), ("schedule_at", 1))),
            Index(CAMPAIGNS, "channel_status", (("channel_id", 1), ("status", 1))),
            # A repeated recipient is stored (and sent) once.
            Index(
                CAMPAIGN_RECIPIENTS,
                "campaign_wa_id_unique",
                (("campaign_id", 1), ("wa_id", 1)),
                unique=True,
            ),
            # The fan-out walks a campaign's recipients in pages, in _id order.
            Index(CAMPAIGN_RECIPIENTS, "campaign_order", (("campaign_id", 1), ("_id", 1))),
            # The funnel and the recipients' list: a campaign's messages by state.
            Index(
                MESSAGES,
                "campaign_send_state",
                (("campaign_id", 1), ("send_state", 1), ("status", 1)),
                partial={"campaign_id": {"$exists": True}},
            ),
            Index(ACCOUNT_EVENTS, "tenant_newest", (("tenant", 1), ("_id", -1))),
        ),
        validators={
            CAMPAIGNS: _required(
                "tenant",
                "channel_id",
                "status",
                status={
                    "enum": ["draft", "scheduled", "running", "paused", "cancelled", "completed"]
                },
            ),
        },
    ),
    Migration(
        version=7,
        name="stuck sends: a number's last acceptance (a backlog that moves is not stuck)",
        indexes=(
            Index(
                MESSAGES,
                "channel_accepted",
                (("channel_id", 1), ("accepted_at", -1)),
                partial={"accepted_at": {"$exists": True}},
            ),
        ),
    ),
)


def expected_indexes() -> dict[tuple[str, str], Index]:
    """Every index the code expects, by (collection, name): those a later migration drops
    are not."""
    indexes: dict[tuple[str, str], Index] = {}
    for migration in MIGRATIONS:
        for dropped in migration.drop_indexes:
            indexes.pop(dropped, None)
        indexes.update({(ix.collection, ix.name): ix for ix in migration.indexes})
    return indexes


def expected_validators() -> dict[str, dict[str, Any]]:
    """The validator each collection should carry (a later migration replaces an earlier one)."""
    result: dict[str, dict[str, Any]] = {}
    for migration in MIGRATIONS:
        result.update(migration.validators)
    return result
