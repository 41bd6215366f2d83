"""Where the tests' broker and store come from.

The session fixtures of ``inbox_testkit.plugin`` are thin wrappers over these functions.

Each backend is picked in the same order: the ``RABBITMQ_URL`` / ``MONGODB_URL`` environment
variable, a testcontainers container when a Docker engine answers, else a local server (the
machine's RabbitMQ at 127.0.0.1:5672, a SecantusDB process started for the session).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import gc
import logging
import os
import subprocess
import tempfile
import uuid
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aio_pika
import pymongo
import pymongo.errors

from inbox_common.broker.topology import Names, everything, number_sends
from inbox_common.local.ports import tcp_accepts
from inbox_common.local.secantus import SecantusServer
from inbox_common.store.collections import CHANNELS
from inbox_testkit.tenants import SENDING_NUMBERS

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer

# The workspace is installed in editable mode: this file lives in the repository.
REPO_ROOT = next(p for p in Path(__file__).resolve().parents if (p / "uv.lock").exists())
LOCAL_AMQP_HOST = "127.0.0.1"
LOCAL_AMQP_PORT = 5672
LOCAL_AMQP_URL = f"amqp://guest:guest@{LOCAL_AMQP_HOST}:{LOCAL_AMQP_PORT}/"
RABBITMQ_IMAGE = "rabbitmq:4"
MONGODB_IMAGE = "mongo:7"


@functools.cache
def docker_available() -> bool:
    """Tell (once per session) whether a Docker engine answers, for testcontainers."""
    # Without DOCKER_HOST the Docker SDK only tries this socket; skip the SDK when it is absent.
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False
    with warnings.catch_warnings():
        # A failed ping leaks the SDK's socket; collect it here, where its ResourceWarning
        # is harmless, rather than in some later test where it would fail (filterwarnings).
        warnings.simplefilter("ignore", ResourceWarning)
        available = _docker_pings()
        gc.collect()
    return available


def _docker_pings() -> bool:
    try:
        import docker  # type: ignore[import-untyped, unused-ignore]

        client = docker.from_env(timeout=3)
    except Exception:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


# --- RabbitMQ -------------------------------------------------------------------------------


def ensure_local_broker() -> None:
    """Start the machine's RabbitMQ via scripts/ensure-rabbitmq.sh unless it already listens;
    restart its application when it listens but can no longer make the suite's queues."""
    if tcp_accepts(LOCAL_AMQP_HOST, LOCAL_AMQP_PORT):
        with _broker_lock():
            _heal_local_broker()
        return
    # A file, not a pipe: the broker daemon may inherit the script's output descriptors.
    with tempfile.TemporaryFile() as output:
        result = subprocess.run(
            ["bash", str(REPO_ROOT / "scripts" / "ensure-rabbitmq.sh")],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=150,
            check=False,
        )
        output.seek(0)
        text = output.read().decode(errors="replace")
    if result.returncode != 0:
        raise RuntimeError(
            f"no RabbitMQ at {LOCAL_AMQP_URL} and scripts/ensure-rabbitmq.sh failed "
            f"(exit {result.returncode}); set RABBITMQ_URL to use another broker:\n{text}"
        )


# A work queue's shape (inbox_common.broker.topology): quorum, at-least-once dead-lettering.
_PROBE_ARGUMENTS: dict[str, Any] = {
    "x-queue-type": "quorum",
    "x-dead-letter-exchange": "inbox-probe.dlx",
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}


def _declares_work_queues() -> bool:
    """Whether the broker declares (and deletes) a queue shaped like the work queues.

    RabbitMQ 3.10 can lose the supervisor of at-least-once dead-lettering after a storm of
    quorum queues created and deleted (many test namespaces at once); from then on it answers
    every such declare with ``541 INTERNAL_ERROR`` while accepting connections, and stays so
    until its application restarts. Any other failure is not ours to heal here.
    """

    async def probe() -> None:
        connection = await aio_pika.connect(LOCAL_AMQP_URL, timeout=10)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(
                f"inbox-probe-{uuid.uuid4().hex}", durable=True, arguments=_PROBE_ARGUMENTS
            )
            await queue.delete(if_unused=False, if_empty=False)

    try:
        asyncio.run(probe())
    except Exception as exc:
        return "INTERNAL_ERROR" not in str(exc)
    return True


def _heal_local_broker() -> None:
    if _declares_work_queues():
        return
    logging.getLogger(__name__).warning(
        "the local RabbitMQ refuses quorum queues with INTERNAL_ERROR; restarting its "
        "application (rabbitmqctl stop_app, start_app)"
    )
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    for action in ("stop_app", "start_app"):
        subprocess.run(
            [*sudo, "rabbitmqctl", "-q", action],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=120,
            check=False,
        )
    if not _declares_work_queues():
        raise RuntimeError(
            f"the RabbitMQ at {LOCAL_AMQP_URL} answers INTERNAL_ERROR to quorum queue declares "
            "even after `rabbitmqctl stop_app && rabbitmqctl start_app`; restart the node "
            "(rabbitmqctl stop; rabbitmq-server -detached) or set RABBITMQ_URL"
        )


@contextlib.contextmanager
def _broker_lock() -> Iterator[None]:
    """One test process at a time checks (and heals) the machine's broker."""
    path = REPO_ROOT / ".run" / "broker-check.lock"
    path.parent.mkdir(exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def rabbitmq_container() -> Iterator[str]:
    """Run a RabbitMQ container for the session and yield its AMQP URL."""
    # testcontainers' RabbitMqContainer needs pika, which the workspace does not install.
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    container = (
        DockerContainer(RABBITMQ_IMAGE)
        .with_exposed_ports(5672)
        .waiting_for(LogMessageWaitStrategy("Server startup complete"))
    )
    with _container_running(container):
        host = container.get_container_host_ip()
        port = container.get_exposed_port(5672)
        yield f"amqp://guest:guest@{host}:{port}/"


@dataclass
class AmqpNamespace:
    """A test's own AMQP namespace that deletes, at teardown, the names the test tracked.

    RabbitMQ offers no listing over AMQP (and these machines have no management plugin), so
    the test says what to delete: ``track`` the queue and exchange names it (or the code under
    test) declared. Each tracked name is deleted both as a queue and as an exchange (deleting
    a missing one is a no-op). Only names under ``f"{name}."`` are accepted, and the namespace
    is unique per test, so cleanup never touches what anyone else declared.
    """

    name: str
    tracked: list[str] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"{self.name}."

    def qualify(self, suffix: str) -> str:
        """Return the full name of ``suffix`` in this namespace (``"inbox.webhooks"`` → ...)."""
        return f"{self.prefix}{suffix}"

    def track(self, *names: str) -> None:
        """Delete these queues/exchanges when the test ends."""
        for name in names:
            if not name.startswith(self.prefix):
                raise ValueError(f"{name!r} is outside the test's namespace {self.prefix!r}")
            if name not in self.tracked:
                self.tracked.append(name)

    def track_numbers(self, numbers: Iterable[str]) -> None:
        """Track the sending queues of these numbers (inbox-api declares one per channel's
        number, whatever number a test or a fuzzer gave the channel)."""
        names = Names(self.name)
        for number in numbers:
            self.track(*(q.name for q in number_sends(number)(names).queues))

    def track_topology(self) -> Names:
        """Track every exchange and queue the services declare in this namespace."""
        names = Names(self.name)
        spec = everything(names)
        for number in SENDING_NUMBERS:
            spec = spec + number_sends(number)(names)
        self.track(*(e.name for e in spec.exchanges), *(q.name for q in spec.queues))
        return names

    async def delete_tracked(self, amqp_url: str) -> None:
        """Delete every tracked name as a queue and as an exchange."""
        if not self.tracked:
            return
        connection = await aio_pika.connect(amqp_url, timeout=10)
        async with connection:
            channel = await connection.channel()
            for name in self.tracked:
                for delete in (channel.queue_delete, channel.exchange_delete):
                    try:
                        await delete(name)
                    except aio_pika.exceptions.AMQPChannelError:
                        # e.g. an exclusive queue still owned by a live connection: it goes
                        # away with that connection. The error closed the channel; reopen it.
                        channel = await connection.channel()
        self.tracked.clear()


# --- MongoDB --------------------------------------------------------------------------------


def mongo_client(url: str, timeout_ms: int = 5000) -> pymongo.MongoClient[dict[str, Any]]:
    """Open a short-timeout synchronous client (for fixtures; tests use AsyncMongoClient)."""
    return pymongo.MongoClient(
        url, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms
    )


def channel_numbers(url: str, name: str) -> list[str]:
    """The phone number ids of a test database's channels (none if the store is gone)."""
    with contextlib.suppress(pymongo.errors.PyMongoError), mongo_client(url) as client:
        return [str(n) for n in client[name][CHANNELS].distinct("phone_number_id")]
    return []


def drop_database(url: str, name: str) -> None:
    """Drop a test database, ignoring a store that is already gone."""
    with contextlib.suppress(pymongo.errors.PyMongoError), mongo_client(url) as client:
        client.drop_database(name)


@contextlib.contextmanager
def mongodb_container() -> Iterator[str]:
    """Run a MongoDB container for the session and yield its URL."""
    from testcontainers.community.mongodb import MongoDbContainer

    container = MongoDbContainer(MONGODB_IMAGE)
    with _container_running(container):
        host = container.get_container_host_ip()
        port = container.get_exposed_port(27017)
        yield (
            f"mongodb://{container.username}:{container.password}@{host}:{port}/"
            "?directConnection=true&authSource=admin"
        )


@contextlib.contextmanager
def secantusdb_process(directory: Path, startup_timeout: float = 30.0) -> Iterator[str]:
    """Run SecantusDB on a free port with its data and log in ``directory``; yield its URL."""
    server = SecantusServer(directory)
    server.start()
    try:
        server.wait_ready(startup_timeout)
        yield server.url
    finally:
        server.stop(grace=10)


# --- containers -----------------------------------------------------------------------------


@contextlib.contextmanager
def _container_running(container: DockerContainer) -> Iterator[None]:
    # Third-party deprecation notices must not fail the session (filterwarnings = error);
    # the filter covers start and stop only, not the tests that run in between.
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        container.start()
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            container.stop()
