"""Fixtures of the fault suite.

Each test records its :class:`~inbox_testkit.faults.checker.Verdict` with ``fault_report``:
a JUnit property, which the shared plugin also prints at the end of the run (also from
pytest-xdist workers), so the counts show in CI output whether the tests passed or not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from inbox_common.broker.topology import Names
from inbox_testkit import backends
from inbox_testkit.faults.checker import Report, Verdict
from inbox_testkit.faults.cluster import RabbitNode, can_run_rabbitmq, rabbit_node
from inbox_testkit.faults.stack import StackConfig, prepare_store
from inbox_testkit.plugin import FAULT_PROPERTY


@pytest.fixture
def fault_report(record_property: Callable[[str, object], None]) -> Report:
    """Record a verdict: printed in the run's summary and kept as a JUnit property."""

    def report(verdict: Verdict) -> None:
        record_property(f"{FAULT_PROPERTY}{verdict.fault}", verdict.line())

    return report


@pytest.fixture
async def stack_config(
    amqp_url: str,
    mongo_url: str,
    mongo_db_name: str,
    amqp_namespace: backends.AmqpNamespace,
) -> StackConfig:
    """The test's namespace (on the machine's broker, cleaned up) and migrated database."""
    amqp_namespace.track_topology()
    await prepare_store(mongo_url, mongo_db_name)
    return StackConfig(
        namespace=amqp_namespace.name,
        mongo_db=mongo_db_name,
        mongodb_url=mongo_url,
        rabbitmq_url=amqp_url,
    )


@pytest.fixture
def names(stack_config: StackConfig) -> Names:
    return Names(stack_config.namespace)


@pytest.fixture(scope="module")
async def own_node() -> AsyncIterator[RabbitNode]:
    """A RabbitMQ node of this module's own (ports, data), killed and restarted at will."""
    can_run_rabbitmq()
    async with rabbit_node() as node:
        yield node


@pytest.fixture
async def started_node(own_node: RabbitNode) -> RabbitNode:
    """The module's node, running (a test before may have left it killed)."""
    if not own_node.running:
        await own_node.start()
        await own_node.wait_ready()
    return own_node


@pytest.fixture
async def node_config(
    started_node: RabbitNode, namespace: str, mongo_url: str, mongo_db_name: str
) -> StackConfig:
    """The stack on the module's own broker node (a test may kill and restart it)."""
    await prepare_store(mongo_url, mongo_db_name)
    return StackConfig(
        namespace=namespace,
        mongo_db=mongo_db_name,
        mongodb_url=mongo_url,
        rabbitmq_url=started_node.url,
    )
