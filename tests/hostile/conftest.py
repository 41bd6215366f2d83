"""Fixtures of the hostile-input tests: a migrated store with acme's channel, the webhook
processor, and the namespace's broker topology with a consumer that settles one message.

Plain helpers (``delivery_of``, ``create_channel``...) come from ``tests.inbox_api.conftest``,
whose fixtures are declared again here (pytest only shares fixtures down a directory); the
broker ones (``names``, ``broker``, ``publisher``) come from the root conftest.
Every test here logs exceptions as plain tracebacks (``plain_tracebacks``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import structlog

from inbox_api.consumer.service import WebhookProcessor
from inbox_common.broker.connection import Broker
from inbox_common.broker.consumer import Consumer
from inbox_common.broker.publisher import ConfirmedPublisher
from inbox_common.broker.topology import Names
from inbox_common.store.client import Database, Document, create_client
from inbox_common.store.migrations import apply_migrations
from inbox_common.store.schema import WEBHOOK_EVENTS
from tests.inbox_api.conftest import ACME_NUMBER, consumer_for, create_channel, stores_of

# A transient error must not stall a fuzz run for seconds; none is expected here anyway.


async def ledger_entry(db: Database, sha256: str) -> Document:
    """The ledger entry of a body (without the body); fails the test when there is none."""
    entry = await db[WEBHOOK_EVENTS].find_one({"sha256": sha256}, {"body": 0})
    assert entry is not None, f"no ledger entry for sha256 {sha256}"
    return entry


@pytest.fixture(autouse=True)
def plain_tracebacks() -> Iterator[None]:
    """Log exceptions as plain tracebacks while a hostile test runs.

    With Rich installed (schemathesis needs it), structlog's default console renderer draws
    every logged traceback with its local variables: seconds per crash when the locals are
    the hostile bodies themselves.
    """
    saved = structlog.get_config()
    processors = [
        structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
        if isinstance(processor, structlog.dev.ConsoleRenderer)
        else processor
        for processor in saved["processors"]
    ]
    structlog.configure(processors=processors)
    yield
    structlog.configure(**saved)


@pytest.fixture
async def db(mongo_url: str, mongo_db_name: str) -> AsyncIterator[Database]:
    """This test's database with every migration applied."""
    client = create_client(mongo_url, app_name="hostile-tests")
    database = client[mongo_db_name]
    await apply_migrations(database)
    yield database
    await client.close()


@pytest.fixture
async def channel(db: Database) -> Document:
    """acme's channel, ``ACME_NUMBER``: envelopes naming it reach the inbox collections."""
    return await create_channel(db, tenant="acme", phone_number_id=ACME_NUMBER)


@pytest.fixture
def processor(db: Database) -> WebhookProcessor:
    return WebhookProcessor(stores_of(db))


@pytest.fixture
def consumer(
    broker: Broker, names: Names, publisher: ConfirmedPublisher, processor: WebhookProcessor
) -> Consumer:
    """The webhook consumer as inbox-api wires it; tests hand it one message at a time."""
    return consumer_for(broker, names, publisher, processor)
