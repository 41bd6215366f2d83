"""Session-wide broker and store, and per-test isolation inside them.

Fixtures (the names other tests rely on):

- ``amqp_url`` (session): AMQP URL of a real RabbitMQ.
- ``mongo_url`` (session): URL of a real MongoDB-wire server, with ``directConnection=true``.
- ``namespace``: a unique ``AMQP_NAMESPACE`` for this test.
- ``amqp_namespace``: the same namespace as an ``AmqpNamespace`` that deletes, at teardown,
  the queues and exchanges the test ``track``-ed.
- ``mongo_db_name``: a unique database name for this test, dropped afterwards.

How each backend is chosen is described in ``tests/infra.py``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from uuid import uuid4

import pytest

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
