"""Session-wide broker and store, and per-test isolation inside them.

Fixtures (the names other tests rely on):

- ``amqp_url`` (session): AMQP URL of a real RabbitMQ.
- ``mongo_url`` (session): URL of a real MongoDB-wire server, with ``directConnection=true``.
- ``namespace``: a unique ``AMQP_NAMESPACE`` for this test.
- ``amqp_namespace``: the same namespace as an ``AmqpNamespace`` that deletes, at teardown,
  the queues and exchanges the test ``track``-ed.
- ``mongo_db_name``: a unique database name for this test, dropped afterwards.
- ``names``, ``broker``, ``publisher``: the namespace's topology names (tracked for cleanup),
  a connected :class:`Broker` with that topology declared, and a confirmed publisher on it.
- ``amqp_channel``, ``work_queue``, ``dead_queue``: a channel of that broker and the webhook
  queue and its dead-letter queue, for tests that get messages one at a time.

How each backend is chosen is described in ``tests/infra.py``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from uuid import uuid4

import pytest
from aio_pika.abc import AbstractChannel, AbstractQueue

from inbox_common.broker.connection import Broker, broker_connection
from inbox_common.broker.publisher import ConfirmedPublisher
from inbox_common.broker.topology import Names, declare, topology
from tests import infra


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    if url := os.environ.get("RABBITMQ_URL"):
        yield url
    elif infra.docker_available():
        with infra.rabbitmq_container() as url:
            yield url
    else:
        infra.ensure_local_broker()
        yield infra.LOCAL_AMQP_URL


@pytest.fixture(scope="session")
def mongo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("MONGODB_URL"):
        yield url
    elif infra.docker_available():
        with infra.mongodb_container() as url:
            yield url
    else:
        with infra.secantusdb_process(tmp_path_factory.mktemp("secantusdb")) as url:
            yield url


@pytest.fixture
def namespace() -> str:
    return f"t{uuid4().hex[:10]}"


@pytest.fixture
async def amqp_namespace(namespace: str, amqp_url: str) -> AsyncIterator[infra.AmqpNamespace]:
    ns = infra.AmqpNamespace(namespace)
    yield ns
    await ns.delete_tracked(amqp_url)


@pytest.fixture
def mongo_db_name(mongo_url: str) -> Iterator[str]:
    name = f"test_{uuid4().hex[:12]}"
    yield name
    infra.drop_database(mongo_url, name)


@pytest.fixture
def names(amqp_namespace: infra.AmqpNamespace) -> Names:
    """This test's broker names, every one of them deleted when the test ends."""
    return amqp_namespace.track_topology()


@pytest.fixture
async def broker(amqp_url: str, names: Names) -> AsyncIterator[Broker]:
    """A connected broker with the namespace's topology declared through ``when_connected``."""
    async with broker_connection(amqp_url, name="tests") as broker:

        async def setup() -> None:
            channel = await broker.connection.channel()
            await declare(channel, topology(names))
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
