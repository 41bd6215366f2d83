"""Fixtures of the fault suite, and the summary of every fault's total-queue counts.

Each test records its :class:`~tests.faults.checker.Verdict` with ``fault_report``; the
counts are printed at the end of the run (``pytest_terminal_summary``), so they show in CI
output whether the tests passed or not, and attached to the test's JUnit properties.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from inbox_common.broker.topology import Names
from tests import infra
from tests.faults.checker import Verdict
from tests.faults.cluster import RabbitNode, RabbitUnavailableError, preflight, rabbit_node
from tests.faults.stack import StackConfig, prepare_store

VERDICTS = pytest.StashKey[list[str]]()

Report = Callable[[Verdict], None]


def pytest_configure(config: pytest.Config) -> None:
    config.stash[VERDICTS] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = terminalreporter.config.stash.get(VERDICTS, [])
    if not lines:
        return
    terminalreporter.section("fault suite: total-queue checks")
    for line in lines:
        terminalreporter.write_line(line)


@pytest.fixture
def fault_report(
    request: pytest.FixtureRequest, record_property: Callable[[str, object], None]
) -> Report:
    """Record a verdict: printed in the run's summary and kept as a JUnit property."""

    def report(verdict: Verdict) -> None:
        request.config.stash[VERDICTS].append(verdict.line())
        record_property(f"fault:{verdict.fault}", verdict.line())

    return report


@pytest.fixture
async def stack_config(
    amqp_url: str,
    mongo_url: str,
    mongo_db_name: str,
    amqp_namespace: infra.AmqpNamespace,
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


def can_run_rabbitmq() -> None:
    """Skip the test unless this machine can start extra RabbitMQ nodes."""
    try:
        preflight()
    except RabbitUnavailableError as exc:
        pytest.skip(f"cannot start an extra RabbitMQ node here: {exc}")
