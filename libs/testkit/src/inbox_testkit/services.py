"""A service's settings over the test's broker, store and namespace; the same as the
environment of a service process; and a command of the workspace run as a process."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Protocol

from inbox_common.broker.topology import Names


class BrokerAndStore(Protocol):
    """Settings with a broker and a store (``BrokerSettings`` and ``MongoSettings``)."""

    @property
    def rabbitmq_url(self) -> str: ...

    @property
    def amqp_namespace(self) -> str: ...

    @property
    def mongodb_url(self) -> str: ...

    @property
    def mongodb_db(self) -> str: ...


def settings_values(
    amqp_url: str, names: Names, mongo_url: str, mongo_db_name: str
) -> dict[str, Any]:
    """The values of a service's settings over the test's broker, namespace and database (a
    short store timeout, console logs); a service's own values go on top (``|``)."""
    return {
        "rabbitmq_url": amqp_url,
        "amqp_namespace": names.namespace,
        "mongodb_url": mongo_url,
        "mongodb_db": mongo_db_name,
        "mongodb_timeout_ms": 3000,
        "log_format": "console",
    }


def process_env(settings: BrokerAndStore, *, mongodb_timeout_ms: int) -> dict[str, str]:
    """The environment of a service process over the same broker, namespace and database as
    ``settings`` (JSON logs, as the services log in production)."""
    return {
        "RABBITMQ_URL": settings.rabbitmq_url,
        "AMQP_NAMESPACE": settings.amqp_namespace,
        "MONGODB_URL": settings.mongodb_url,
        "MONGODB_DB": settings.mongodb_db,
        "MONGODB_TIMEOUT_MS": str(mongodb_timeout_ms),
        "LOG_FORMAT": "json",
    }


def run_command(
    argv: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """A command of the workspace as a process (``python -m …``), with ``env`` added."""
    return subprocess.run(
        [sys.executable, *argv],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
