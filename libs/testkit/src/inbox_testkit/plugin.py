"""The pytest fixtures every test directory shares (``tests/conftest.py`` loads this plugin).

Session-wide backends, and per-test isolation inside them:

- ``amqp_url``, ``mongo_url`` (session): a real RabbitMQ and a real MongoDB-wire server,
  picked as ``inbox_testkit.backends`` describes.
- ``namespace`` / ``amqp_namespace``: a unique ``AMQP_NAMESPACE`` for the test, whose tracked
  queues and exchanges are deleted at teardown; ``mongo_db_name``: a unique database,
  dropped afterwards.
- ``names``, ``broker``, ``publisher``, ``amqp_channel``, ``work_queue``, ``dead_queue``:
  the namespace's whole topology declared on a connected broker, a confirmed publisher, and
  the webhook queue and its dead-letter queue for tests that get messages one at a time.
- ``db`` (migrated), ``reference_db``, ``stores``, ``processor``, ``channel`` (acme's),
  ``consumer`` (the webhook consumer as inbox-api wires it), ``tokens``, ``settings`` and
  ``api`` (inbox-api on aiohttp's TestServer).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from uuid import uuid4

import pytest
from aio_pika.abc import AbstractChannel, AbstractQueue
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from inbox_api.app import create_app
from inbox_api.consumer.service import Stores, WebhookProcessor
from inbox_api.settings import InboxApiSettings
from inbox_common.broker.connection import Broker
from inbox_common.broker.consumer import Consumer
from inbox_common.broker.publisher import ConfirmedPublisher
from inbox_common.broker.topology import Names, declare, everything
from inbox_common.store.client import Database, Document, create_client
from inbox_common.store.migrations import apply_migrations
from inbox_common.store.token_cipher import TokenCipher
from inbox_common.tokens import Role, create_token
from inbox_ingest.app import WEBHOOK_PATH
from inbox_ingest.app import create_app as create_ingest_app
from inbox_ingest.settings import IngestSettings
from inbox_testkit import backends
from inbox_testkit.broker import broker_connection, webhook_consumer
from inbox_testkit.polling import wait_until
from inbox_testkit.sandbox import SECRET
from inbox_testkit.services import settings_values
from inbox_testkit.store import create_channel
from inbox_testkit.tenants import ACME_NUMBER, Tokens

ApiClient = TestClient[web.Request, web.Application]

# One key for the channel tokens of this test process and the services it starts.
os.environ.setdefault("CHANNEL_TOKEN_KEYS", TokenCipher.new_key())

# A test's JUnit property with this prefix is a fault-suite verdict: printed at the end.
FAULT_PROPERTY = "fault:"


# --- hooks ----------------------------------------------------------------------------------


class _FaultSummary:
    """Collects the fault verdicts from the test reports (also those the pytest-xdist
    workers send to the controller) and prints them at the end of the run."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call":
            self.lines.extend(
                str(value)
                for name, value in report.user_properties
                if name.startswith(FAULT_PROPERTY)
            )

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.lines:
            terminalreporter.section("fault suite: total-queue checks")
            for line in self.lines:
                terminalreporter.write_line(line)


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_FaultSummary(), "inbox-fault-summary")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Under pytest-xdist (--dist loadgroup) the fault tests run one after the other on one
    # worker: they time their faults, and would starve each other of the cores otherwise.
    for item in items:
        if item.get_closest_marker("faults") is not None:
            item.add_marker(pytest.mark.xdist_group("faults"))


# --- backends -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    if url := os.environ.get("RABBITMQ_URL"):
        yield url
    elif backends.docker_available():
        with backends.rabbitmq_container() as url:
            yield url
    else:
        backends.ensure_local_broker()
        yield backends.LOCAL_AMQP_URL


@pytest.fixture(scope="session")
def mongo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("MONGODB_URL"):
        yield url
    elif backends.docker_available():
        with backends.mongodb_container() as url:
            yield url
    else:
        with backends.secantusdb_process(tmp_path_factory.mktemp("secantusdb")) as url:
            yield url


@pytest.fixture
def namespace() -> str:
    return f"t{uuid4().hex[:10]}"


@pytest.fixture
async def amqp_namespace(namespace: str, amqp_url: str) -> AsyncIterator[backends.AmqpNamespace]:
    ns = backends.AmqpNamespace(namespace)
    yield ns
    await ns.delete_tracked(amqp_url)


@pytest.fixture
async def mongo_db_name(
    mongo_url: str, amqp_namespace: backends.AmqpNamespace
) -> AsyncIterator[str]:
    name = f"test_{uuid4().hex[:12]}"
    yield name
    # Every channel the test created got a sending queue on the shared broker: delete those
    # with the namespace, or they pile up run after run.
    amqp_namespace.track_numbers(backends.channel_numbers(mongo_url, name))
    backends.drop_database(mongo_url, name)


# --- broker ---------------------------------------------------------------------------------


@pytest.fixture
def names(amqp_namespace: backends.AmqpNamespace) -> Names:
    """This test's broker names, every one of them deleted when the test ends."""
    return amqp_namespace.track_topology()


@pytest.fixture
async def broker(amqp_url: str, names: Names) -> AsyncIterator[Broker]:
    """A connected broker with the namespace's topology declared through ``when_connected``."""
    async with broker_connection(amqp_url, name="tests") as broker:

        async def setup() -> None:
            channel = await broker.connection.channel()
            await declare(channel, everything(names))
            await channel.close()

        broker.when_connected(setup, what="test topology")
        await asyncio.wait_for(broker.ready.wait(), 10)
        yield broker


@pytest.fixture
async def publisher(broker: Broker) -> ConfirmedPublisher:
    publisher = ConfirmedPublisher(broker, timeout=5)
    await publisher.start()
    return publisher


@pytest.fixture
async def amqp_channel(broker: Broker) -> AsyncIterator[AbstractChannel]:
    channel = await broker.connection.channel()
    yield channel
    if not channel.is_closed:
        await channel.close()


@pytest.fixture
async def work_queue(amqp_channel: AbstractChannel, names: Names) -> AbstractQueue:
    return await amqp_channel.get_queue(names.webhooks_queue)


@pytest.fixture
async def dead_queue(amqp_channel: AbstractChannel, names: Names) -> AbstractQueue:
    return await amqp_channel.get_queue(names.dead_letter_queue(names.webhooks_queue))


# --- store and the webhook consumer ---------------------------------------------------------


@pytest.fixture
async def db(mongo_url: str, mongo_db_name: str) -> AsyncIterator[Database]:
    """This test's database with every migration applied."""
    client = create_client(mongo_url, app_name="tests")
    database = client[mongo_db_name]
    await apply_migrations(database)
    yield database
    await client.close()


@pytest.fixture
async def reference_db(mongo_url: str, mongo_db_name: str) -> AsyncIterator[Database]:
    """A second migrated database, for comparing a run with a clean single run."""
    client = create_client(mongo_url, app_name="tests")
    name = f"{mongo_db_name}_ref"
    database = client[name]
    await apply_migrations(database)
    yield database
    await client.drop_database(name)
    await client.close()


@pytest.fixture
def stores(db: Database) -> Stores:
    return Stores.of(db)


@pytest.fixture
def processor(stores: Stores) -> WebhookProcessor:
    return WebhookProcessor(stores)


@pytest.fixture
async def channel(db: Database) -> Document:
    """acme's channel, ``ACME_NUMBER``: envelopes naming it reach the inbox collections."""
    return await create_channel(db, tenant="acme", phone_number_id=ACME_NUMBER)


@pytest.fixture
def consumer(
    broker: Broker, names: Names, publisher: ConfirmedPublisher, processor: WebhookProcessor
) -> Consumer:
    """The webhook consumer as inbox-api wires it; tests hand it one message at a time."""
    return webhook_consumer(broker, names, publisher, processor)


# --- the API --------------------------------------------------------------------------------


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
    # The constructor, not model_validate: the rest (CHANNEL_TOKEN_KEYS...) from the environment.
    return InboxApiSettings(**settings_values(amqp_url, names, mongo_url, mongo_db_name))


@pytest.fixture
async def api(settings: InboxApiSettings, db: Database) -> AsyncIterator[ApiClient]:
    """inbox-api on a TestServer, over the migrated ``db`` and the namespace's broker."""
    async with TestClient(TestServer(create_app(settings))) as client:
        yield client


@pytest.fixture
async def ingest_url(amqp_url: str, names: Names, broker: Broker) -> AsyncIterator[str]:
    """The real webhook-ingest on a TestServer, publishing into this test's namespace and
    verifying the sandbox's signature (``inbox_testkit.sandbox.SECRET``)."""
    settings = IngestSettings.model_validate(
        {
            "rabbitmq_url": amqp_url,
            "amqp_namespace": names.namespace,
            "whatsapp_webhook_secret": SECRET,
            "whatsapp_webhook_verify_token": "verify-me",
            "amqp_publish_timeout": 2.0,
            "log_format": "console",
        }
    )
    client: TestClient[web.Request, web.Application] = TestClient(
        TestServer(create_ingest_app(settings))
    )
    await client.start_server()

    async def ready() -> bool:
        return (await client.get("/api/health")).status == 200

    await wait_until(ready, "webhook-ingest to connect to the broker", timeout=10)
    yield str(client.make_url(WEBHOOK_PATH))
    await client.close()
