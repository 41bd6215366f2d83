"""RabbitMQ nodes and clusters that the fault tests start, kill and restart themselves.

Each node is Debian's ``rabbitmq-server`` run in the foreground as the ``rabbitmq`` user
(whose ``~/.erlang.cookie`` every node and ``rabbitmqctl`` share), with its own node name,
AMQP and distribution ports, and its data, logs, pid file, config and (empty) plugin list in
a temporary directory. Nothing here reads or writes the machine's own node
(``rabbit@localhost``, port 5672) or its files: the ports are fresh, the node names carry a
random token, and ``rabbitmqctl`` is always called with ``-n <our node>``.

A node runs in its own process group, so ``kill()`` is a real ``kill -9`` of the whole node
(the start script, ``beam.smp`` and its port programs) and ``start()`` brings it back on
the same ports with the same data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import orjson
import pytest

from inbox_common.local.ports import free_port
from inbox_common.local.secantus import log_tail

RABBITMQ_USER = "rabbitmq"
RABBITMQ_HOME = Path("/var/lib/rabbitmq")  # the Erlang cookie lives here
SCRIPTS = Path("/usr/lib/rabbitmq/bin")
# The machine's node listens for distribution on 25672 and rabbitmqctl on 35672-35682.
_RESERVED_PORTS = {4369, 5672, 25672, *range(35672, 35700)}
_AMQP_HEADER = b"AMQP\x00\x00\x09\x01"


class RabbitUnavailableError(RuntimeError):
    """This machine cannot run extra RabbitMQ nodes (no package, no rabbitmq user, no root)."""


def _script(name: str) -> str:
    candidate = SCRIPTS / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise RabbitUnavailableError(f"{name} is not installed (apt-get install rabbitmq-server)")
    return found


def _as_rabbitmq() -> list[str]:
    """The argv prefix that runs a command as the rabbitmq user."""
    try:
        user = pwd.getpwnam(RABBITMQ_USER)
    except KeyError:
        raise RabbitUnavailableError(
            "there is no rabbitmq user (is rabbitmq-server installed?)"
        ) from None
    if os.geteuid() == user.pw_uid:
        return []
    if os.geteuid() == 0:
        return ["setpriv", f"--reuid={RABBITMQ_USER}", f"--regid={RABBITMQ_USER}", "--init-groups"]
    return ["sudo", "-n", "-u", RABBITMQ_USER]


def preflight() -> None:
    """Raise :class:`RabbitUnavailableError` unless this machine can run extra nodes."""
    _script("rabbitmq-server")
    _script("rabbitmqctl")
    prefix = _as_rabbitmq()
    if prefix[:1] == ["sudo"] and subprocess.run([*prefix, "true"], check=False).returncode:
        raise RabbitUnavailableError("not root, and `sudo -n -u rabbitmq` is not allowed")
    if not (RABBITMQ_HOME / ".erlang.cookie").exists():
        raise RabbitUnavailableError(f"no Erlang cookie in {RABBITMQ_HOME}")


def can_run_rabbitmq() -> None:
    """Skip the calling test unless this machine can start extra RabbitMQ nodes."""
    try:
        preflight()
    except RabbitUnavailableError as exc:
        pytest.skip(f"cannot start an extra RabbitMQ node here: {exc}")


def fresh_port() -> int:
    """A free port outside the ones the machine's RabbitMQ node and its CLI use."""
    while True:
        port = free_port()
        if port not in _RESERVED_PORTS:
            return port


async def amqp_answers(port: int, timeout: float = 2.0) -> bool:  # noqa: ASYNC109
    """True when 127.0.0.1:``port`` answers the AMQP header with a method frame.

    A bare TCP accept is not enough: a booting node's listener may refuse the handshake.
    """
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(_AMQP_HEADER)
                await writer.drain()
                frame_type = await reader.readexactly(1)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False
    return frame_type == b"\x01"


@dataclass
class RabbitNode:
    """One RabbitMQ node with its own ports and directory (see the module docstring)."""

    name: str
    amqp_port: int
    dist_port: int
    directory: Path
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)
    starts: int = 0

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    @property
    def log_path(self) -> Path:
        return self.directory / "log" / f"{self.name}.log"

    @property
    def output_path(self) -> Path:
        return self.directory / "output.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def _env(self) -> dict[str, str]:
        d = self.directory
        return {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(RABBITMQ_HOME),
            "LANG": "C.UTF-8",
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PID_FILE": str(d / "node.pid"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            # Our own (near empty) env file instead of /etc/rabbitmq/rabbitmq-env.conf, which
            # names the machine's node.
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_CRASH_DUMP": str(d / "erl_crash.dump"),
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def prepare(self) -> None:
        """Write the node's config files (once) and hand its directory to the rabbitmq user."""
        d = self.directory
        for sub in ("mnesia", "log"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "rabbitmq.conf").write_text(
            "loopback_users = none\n"
            "log.console = false\n"
            "log.file.level = info\n"
            # A node of a test cluster must not stop accepting publishes on a small disk.
            "disk_free_limit.absolute = 1MB\n"
        )
        (d / "enabled_plugins").write_text("[].\n")
        (d / "rabbitmq-env.conf").write_text("ERL_EPMD_ADDRESS=127.0.0.1\n")
        _give_to_rabbitmq(d)

    async def start(self) -> None:
        """Start the node (again after a kill: same ports, same data)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        if self.starts == 0:
            self.prepare()
        self.starts += 1
        output = self.output_path.open("ab")
        try:
            self.process = await asyncio.create_subprocess_exec(
                "env",
                "-i",
                *(f"{k}={v}" for k, v in self._env().items()),
                *_as_rabbitmq(),
                _script("rabbitmq-server"),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                cwd=self.directory,
                start_new_session=True,
            )
        finally:
            output.close()

    async def wait_ready(self, timeout: float = 90.0) -> None:  # noqa: ASYNC109
        """Wait until the node answers AMQP; fail with its log tail if it dies or is slow."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await amqp_answers(self.amqp_port):
            if not self.running:
                raise RuntimeError(
                    f"RabbitMQ node {self.name} exited before answering AMQP:\n{self.tails()}"
                )
            if loop.time() > deadline:
                raise TimeoutError(
                    f"RabbitMQ node {self.name} did not answer AMQP on {self.amqp_port} "
                    f"within {timeout:g} s:\n{self.tails()}"
                )
            await asyncio.sleep(0.2)

    def tails(self, lines: int = 30) -> str:
        return (
            f"--- {self.output_path} ---\n{log_tail(self.output_path, lines)}\n"
            f"--- {self.log_path} ---\n{log_tail(self.log_path, lines)}"
        )

    async def kill(self) -> None:
        """``kill -9`` the whole node and wait until it is gone."""
        if self.process is None:
            return
        _signal_group(self.process.pid, signal.SIGKILL)
        await self.process.wait()
        # The port programs (erl_child_setup, inet_gethost) are in the same group and die
        # with it; wait until the AMQP port is really closed.
        for _ in range(100):
            if not await amqp_answers(self.amqp_port, timeout=0.2):
                break
            await asyncio.sleep(0.05)

    async def stop(self, grace: float = 20.0) -> None:
        """Stop the node gracefully (SIGTERM: the start script runs ``stop``), else kill it."""
        if self.process is None or not self.running:
            return
        _signal_group(self.process.pid, signal.SIGTERM, leader_only=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), grace)
        await self.kill()

    async def ctl(self, *args: str, timeout: float = 60.0) -> str:  # noqa: ASYNC109
        """Run ``rabbitmqctl -n <this node> args...`` and return its output."""
        return await run_as_rabbitmq(
            [_script("rabbitmqctl"), "-n", self.name, *args], env=self._env(), timeout=timeout
        )


async def run_as_rabbitmq(
    argv: Sequence[str],
    *,
    env: dict[str, str],
    timeout: float = 60.0,  # noqa: ASYNC109
) -> str:
    """Run a RabbitMQ CLI command as the rabbitmq user; raise with its output on failure."""
    process = await asyncio.create_subprocess_exec(
        "env",
        "-i",
        *(f"{k}={v}" for k, v in env.items()),
        *_as_rabbitmq(),
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise TimeoutError(f"{' '.join(argv)} took more than {timeout:g} s") from None
    text = output.decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed with exit {process.returncode}:\n{text}")
    return text


def _signal_group(pid: int, sig: signal.Signals, *, leader_only: bool = False) -> None:
    try:
        if leader_only:
            os.kill(pid, sig)
        else:
            os.killpg(pid, sig)  # the node runs in its own session: pgid == pid
    except ProcessLookupError:
        pass
    except PermissionError:
        # The node runs as rabbitmq and we are neither root nor rabbitmq: ask sudo.
        target = str(pid) if leader_only else f"-{pid}"
        subprocess.run(
            ["sudo", "-n", "-u", RABBITMQ_USER, "kill", f"-{sig.value}", "--", target],
            check=False,
        )


def _give_to_rabbitmq(directory: Path) -> None:
    user = pwd.getpwnam(RABBITMQ_USER)
    if os.geteuid() == 0:
        for path in (directory, *directory.rglob("*")):
            os.chown(path, user.pw_uid, user.pw_gid)
    elif os.geteuid() != user.pw_uid:
        # sudo mode: let the rabbitmq user write into a directory we own.
        for path in (directory, *(p for p in directory.rglob("*") if p.is_dir())):
            path.chmod(0o777)


def remove_directory(directory: Path) -> None:
    """Remove a node directory (whose files the rabbitmq user may own)."""
    try:
        shutil.rmtree(directory)
    except PermissionError:
        subprocess.run(
            ["sudo", "-n", "-u", RABBITMQ_USER, "rm", "-rf", "--", str(directory)], check=False
        )
        shutil.rmtree(directory, ignore_errors=True)


def new_node(directory: Path, prefix: str, index: int) -> RabbitNode:
    """A node named ``<prefix><index>@localhost`` with fresh ports under ``directory``."""
    name = f"{prefix}{index}@localhost"
    return RabbitNode(
        name=name,
        amqp_port=fresh_port(),
        dist_port=fresh_port(),
        directory=directory / f"{prefix}{index}",
    )


def node_prefix() -> str:
    """A node-name prefix unique to this run, so parallel runs never share a node name."""
    return f"faults{uuid4().hex[:8]}n"


@dataclass
class RabbitCluster:
    """Nodes joined into one cluster (node 0 is the seed the others join)."""

    nodes: list[RabbitNode]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def node(self, name: str) -> RabbitNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"{name} is not a node of this cluster ({[n.name for n in self.nodes]})")

    def alive(self) -> list[RabbitNode]:
        return [n for n in self.nodes if n.running]

    async def form(self) -> None:
        """Start every node, then join each to the first one (``join_cluster``)."""
        await asyncio.gather(*(n.start() for n in self.nodes))
        await asyncio.gather(*(n.wait_ready() for n in self.nodes))
        seed = self.nodes[0]
        for node in self.nodes[1:]:
            await node.ctl("stop_app")
            await node.ctl("join_cluster", seed.name)
            await node.ctl("start_app")
            await node.wait_ready()
        await self.wait_formed()

    async def wait_formed(self, timeout: float = 60.0) -> None:  # noqa: ASYNC109
        """Wait until the seed reports every node running.

        Right after ``start_app`` the CLI can print a notice instead of JSON (the node is
        still booting its applications, or the status was asked mid-join): each attempt
        that is not well-formed JSON with every node running is tried again, until the
        deadline.
        """
        seed = self.nodes[0]
        want = {n.name for n in self.nodes}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last = ""
        while True:
            try:
                last = await seed.ctl("cluster_status", "--formatter", "json")
                status = orjson.loads(last)
                running = (
                    set(status.get("running_nodes", [])) if isinstance(status, dict) else set()
                )
                if running == want:
                    return
                last = f"running nodes {sorted(running)}, wanted {sorted(want)}"
            except (orjson.JSONDecodeError, RuntimeError) as exc:
                last = f"{type(exc).__name__}: {str(exc)[:300]}; output {last[:300]!r}"
            if loop.time() > deadline:
                raise RuntimeError(f"the cluster did not form within {timeout:g}s: {last}")
            await asyncio.sleep(0.5)

    async def quorum_queue(self, queue: str, timeout: float = 30.0) -> dict[str, Any]:  # noqa: ASYNC109
        """``leader``, ``members`` and ``online`` of a quorum queue, asked of a live node.

        Asked again while the answer is not JSON (a notice printed during an election).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            asker = self.alive()[0]
            output = await asker.ctl(
                "list_queues", "name", "type", "leader", "members", "online", "--formatter", "json"
            )
            try:
                rows = orjson.loads(output)
                break
            except orjson.JSONDecodeError:
                if loop.time() > deadline:
                    raise RuntimeError(f"list_queues printed no JSON: {output[:500]!r}") from None
                await asyncio.sleep(0.5)
        for row in rows:
            if row.get("name") == queue:
                return dict(row)
        raise KeyError(f"{queue} is not declared on the cluster")

    async def quorum_leader(self, queue: str) -> RabbitNode:
        info = await self.quorum_queue(queue)
        return self.node(str(info["leader"]))

    async def stop(self) -> None:
        await asyncio.gather(*(n.stop() for n in self.nodes), return_exceptions=True)


def _node_root() -> Path:
    # Directly under the system temp dir: pytest's tmp_path lives in a 0700 root directory
    # the rabbitmq user could not enter.
    root = Path(tempfile.mkdtemp(prefix="inbox-faults-rabbit-"))
    _give_to_rabbitmq(root)
    return root


@contextlib.asynccontextmanager
async def rabbit_node() -> AsyncIterator[RabbitNode]:
    """A started single node, stopped and its directory removed on exit."""
    root = _node_root()
    node = new_node(root, node_prefix(), 1)
    try:
        await node.start()
        await node.wait_ready()
        yield node
    finally:
        await node.stop()
        remove_directory(root)


@contextlib.asynccontextmanager
async def rabbit_cluster(size: int = 3) -> AsyncIterator[RabbitCluster]:
    """A formed cluster of ``size`` nodes, stopped and its directories removed on exit."""
    root = _node_root()
    prefix = node_prefix()
    cluster = RabbitCluster([new_node(root, prefix, i + 1) for i in range(size)])
    try:
        await cluster.form()
        yield cluster
    finally:
        await cluster.stop()
        remove_directory(root)
