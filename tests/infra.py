"""Where the tests' broker and store come from, and small helpers for waiting on them.

The fixtures in ``tests/conftest.py`` are thin wrappers over these functions. Tests import
the helpers as ``from tests.infra import free_port, wait_for_http``.

Each backend is picked in the same order: the ``RABBITMQ_URL`` / ``MONGODB_URL`` environment
variable, a testcontainers container when a Docker engine answers, else a local server (the
machine's RabbitMQ at 127.0.0.1:5672, a SecantusDB process started for the session).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aio_pika
import aiohttp
import pymongo
import pymongo.errors

from inbox_common.broker.topology import Names, topology

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCAL_AMQP_HOST = "127.0.0.1"
LOCAL_AMQP_PORT = 5672
LOCAL_AMQP_URL = f"amqp://guest:guest@{LOCAL_AMQP_HOST}:{LOCAL_AMQP_PORT}/"
RABBITMQ_IMAGE = "rabbitmq:4"
MONGODB_IMAGE = "mongo:7"


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago, never the same one twice
    in a run: the OS may offer a port again before the process it was meant for bound it."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no fresh free port after 100 tries")


def tcp_accepts(host: str, port: int, timeout: float = 1.0) -> bool:
    """Tell whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# The deadline is this helper's whole job, and its error names the URL; an outer
# asyncio.timeout() could only say that time ran out.
async def wait_for_http(url: str, timeout: float = 30.0) -> int:  # noqa: ASYNC109
    """Poll ``url`` until it gives any HTTP answer and return its status.

    Any status counts (a health endpoint answers 503 while a dependency is down): this only
    waits for the server to listen. Raises ``TimeoutError`` naming the URL and the last
    connection error when no answer came within ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last_error: BaseException | None = None
    request_timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=request_timeout) as session:
        while True:
            try:
                async with session.get(url, allow_redirects=False) as response:
                    return response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                last_error = exc
            if loop.time() >= deadline:
                raise TimeoutError(
                    f"no HTTP answer from {url} within {timeout:g} s (last error: {last_error!r})"
                )
            await asyncio.sleep(0.1)


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
    """Start the machine's RabbitMQ via scripts/ensure-rabbitmq.sh unless it already listens."""
    if tcp_accepts(LOCAL_AMQP_HOST, LOCAL_AMQP_PORT):
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

    def track_topology(self) -> Names:
        """Track every exchange and queue the services declare in this namespace."""
        names = Names(self.name)
        spec = topology(names)
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
    """Run SecantusDB on a free port with its data and log in ``directory``; yield its URL.

    The server is the ``secantusd-py`` next to the running interpreter (the workspace's dev
    dependency). It gets SIGTERM at exit, and SIGKILL if it has not stopped 10 s later.
    """
    executable = Path(sys.executable).parent / "secantusd-py"
    port = free_port()
    # retryWrites=false, as the local stack runs it: see inbox_common.store.client.
    url = f"mongodb://127.0.0.1:{port}/?directConnection=true&retryWrites=false"
    log_path = directory / "secantusd.log"
    command = [
        str(executable),
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--storage-path", str(directory / "data")),
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        _wait_for_mongo(url, process, log_path, startup_timeout)
        yield url
    finally:
        stop_process(process)


def _wait_for_mongo(
    url: str, process: subprocess.Popen[bytes], log_path: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"secantusd-py exited with {process.returncode} before answering:\n"
                f"{log_tail(log_path)}"
            )
        try:
            with mongo_client(url, timeout_ms=500) as client:
                client.admin.command("ping")
            return
        except pymongo.errors.PyMongoError as exc:
            last_error = exc
        time.sleep(0.1)
    raise RuntimeError(
        f"secantusd-py did not answer at {url} within {timeout:g} s "
        f"(last error: {last_error!r}); log tail:\n{log_tail(log_path)}"
    )


def stop_process(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Terminate a child process, killing it if it outlives ``grace`` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def log_tail(path: Path, lines: int = 40) -> str:
    """Return the last lines of a log file, or a note that it cannot be read."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(cannot read {path}: {exc})"


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


# The deadline is this helper's whole job, and its error names what was awaited.
async def wait_until(
    condition: Callable[[], Awaitable[bool]],
    what: str,
    timeout: float = 5.0,  # noqa: ASYNC109
) -> None:
    """Poll ``condition`` every 20 ms until it holds; fail naming ``what`` after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.02)
