"""Fixtures of the inbox-api tests: a migrated store, the webhook processor, the broker
topology of the test's namespace, and the whole app served by aiohttp's TestServer.

The plain helpers (``delivery_of``, ``snapshot``, ``wait_until``...) are imported by the test
modules from here.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from inbox_api.app import create_app
from inbox_api.consumer.handlers import WebhookHandler
from inbox_api.consumer.service import Stores, WebhookProcessor
from inbox_api.settings import InboxApiSettings
from inbox_api.store.channels import Channels
from inbox_api.store.inbox import Inbox
from inbox_api.store.ledger import Ledger
from inbox_common.broker.connection import Broker
from inbox_common.broker.consumer import Consumer, ConsumerMetrics, RetryPolicy
from inbox_common.broker.publisher import ConfirmedPublisher
from inbox_common.broker.topology import WEBHOOK_ROUTING_KEY, Names
from inbox_common.contracts.delivery import WebhookDelivery
from inbox_common.store.client import Database, Document, create_client
from inbox_common.store.migrations import apply_migrations
from inbox_common.store.schema import CONTACTS, CONVERSATIONS, MESSAGES
from inbox_common.tokens import Role, create_token

ACME_NUMBER = "106540352242922"
ACME_SECOND_NUMBER = "106540352242933"
GLOBEX_NUMBER = "209870000000001"
UNKNOWN_NUMBER = "999999999999999"

ApiClient = TestClient[web.Request, web.Application]


# --- plain helpers --------------------------------------------------------------------------


def delivery_of(body: dict[str, Any] | bytes, *, request_id: str = "") -> WebhookDelivery:
    """The delivery webhook-ingest would publish for ``body`` (a dict is JSON-encoded)."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return WebhookDelivery(
        sha256=hashlib.sha256(raw).hexdigest(),
        request_id=request_id or uuid4().hex,
        received_at=datetime.now(UTC),
        body=raw,
    )


def entries(*bodies: dict[str, Any]) -> dict[str, Any]:
    """One webhook body batching the entries of several ``samples.webhook`` bodies."""
    return {
        "object": "whatsapp_business_account",
        "entry": [entry for body in bodies for entry in body["entry"]],
    }


async def snapshot(db: Database) -> dict[str, list[Document]]:
    """Contacts, conversations and messages, comparable across runs and databases.

    Ids are replaced by natural keys (channel → phone number, conversation → wa_id), sets are
    sorted, and ``created_at`` (the moment of the first write) is dropped.
    """
    numbers = {c["_id"]: c["phone_number_id"] async for c in db["channels"].find({})}
    wa_ids = {c["_id"]: c["wa_id"] async for c in db[CONVERSATIONS].find({})}

    def normal(doc: Document) -> Document:
        out = {k: v for k, v in doc.items() if k not in {"_id", "created_at"}}
        if "channel_id" in out:
            out["channel_id"] = numbers[out["channel_id"]]
        if "conversation_id" in out:
            out["conversation_id"] = wa_ids[out["conversation_id"]]
        if "unread_wamids" in out:
            out["unread_wamids"] = sorted(out["unread_wamids"])
        return out

    result: dict[str, list[Document]] = {}
    for collection, key in ((CONTACTS, "wa_id"), (CONVERSATIONS, "wa_id"), (MESSAGES, "wamid")):
        docs = [normal(d) async for d in db[collection].find({})]
        result[collection] = sorted(docs, key=lambda d: (str(d.get("channel_id")), d[key]))
    return result


async def create_channel(
    db: Database, *, tenant: str, phone_number_id: str, name: str = "Support"
) -> Document:
    return await Channels(db).create(
        tenant=tenant,
        fields={
            "name": name,
            "phone_number_id": phone_number_id,
            "waba_id": f"WABA{phone_number_id[-4:]}",
            "display_phone_number": "15550001111",
            "access_token": f"EAAG-secret-{phone_number_id}",
        },
    )


def stores_of(db: Database) -> Stores:
    return Stores(Ledger(db), Channels(db), Inbox(db))


@pytest.fixture
async def db(mongo_url: str, mongo_db_name: str) -> AsyncIterator[Database]:
    """This test's database with every migration applied."""
    client = create_client(mongo_url, app_name="inbox-api-tests")
    database = client[mongo_db_name]
    await apply_migrations(database)
    yield database
    await client.close()


@pytest.fixture
async def reference_db(mongo_url: str, mongo_db_name: str) -> AsyncIterator[Database]:
    """A second migrated database, for comparing a run with a clean single run."""
    client = create_client(mongo_url, app_name="inbox-api-tests")
    name = f"{mongo_db_name}_ref"
    database = client[name]
    await apply_migrations(database)
    yield database
    await client.drop_database(name)
    await client.close()


@pytest.fixture
def stores(db: Database) -> Stores:
    return stores_of(db)


@pytest.fixture
def processor(stores: Stores) -> WebhookProcessor:
    return WebhookProcessor(stores)


@pytest.fixture
async def channel(db: Database) -> Document:
    """acme's channel, ``ACME_NUMBER``."""
    return await create_channel(db, tenant="acme", phone_number_id=ACME_NUMBER)


# --- broker ---------------------------------------------------------------------------------


async def publish_delivery(
    publisher: ConfirmedPublisher,
    names: Names,
    delivery: WebhookDelivery,
    *,
    headers: dict[str, str] | None = None,
) -> None:
    """Publish ``delivery`` exactly as webhook-ingest does (``headers`` replaces its own)."""
    await publisher.publish(
        names.webhooks_exchange,
        WEBHOOK_ROUTING_KEY,
        delivery.body,
        message_id=delivery.sha256,
        headers=delivery.headers() if headers is None else headers,
        content_type="application/json",
        timestamp=delivery.received_at,
    )


# --- the app --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tokens:
    acme_agent: str
    acme_admin: str
    globex_agent: str
    globex_admin: str
    superadmin: str


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def tokens(db: Database) -> Tokens:
    return Tokens(
        acme_agent=await create_token(db, role=Role.AGENT, tenant="acme"),
        acme_admin=await create_token(db, role=Role.ADMIN, tenant="acme"),
        globex_agent=await create_token(db, role=Role.AGENT, tenant="globex"),
        globex_admin=await create_token(db, role=Role.ADMIN, tenant="globex"),
        superadmin=await create_token(db, role=Role.SUPERADMIN, tenant="ops"),
    )


@pytest.fixture
def settings(amqp_url: str, names: Names, mongo_url: str, mongo_db_name: str) -> InboxApiSettings:
    return InboxApiSettings(
        rabbitmq_url=amqp_url,
        amqp_namespace=names.namespace,
        mongodb_url=mongo_url,
        mongodb_db=mongo_db_name,
        mongodb_timeout_ms=3000,
        log_format="console",
    )


@pytest.fixture
async def api(settings: InboxApiSettings, db: Database) -> AsyncIterator[ApiClient]:
    """inbox-api on a TestServer, over the migrated ``db`` and the namespace's broker."""
    async with TestClient(TestServer(create_app(settings))) as client:
        yield client


FAST_RETRY = RetryPolicy(max_attempts=2, initial_wait=0.01, max_wait=0.02)


def consumer_for(
    broker: Broker, names: Names, publisher: ConfirmedPublisher, processor: WebhookProcessor
) -> Consumer:
    """The webhook consumer as inbox-api wires it, with fast in-process retries."""
    return Consumer(
        broker,
        names.webhooks_queue,
        WebhookHandler(processor),
        dead_letter_exchange=names.dead_letter_exchange,
        dead_letters=publisher,
        metrics=ConsumerMetrics(CollectorRegistry()),
        prefetch=16,
        retry=FAST_RETRY,
    )
