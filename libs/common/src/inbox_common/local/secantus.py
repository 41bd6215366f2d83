"""A local SecantusDB server: the MongoDB-wire store of machines without MongoDB.

``secantusd-py`` comes with the workspace's dev dependencies (``secantusdb``). One class
starts it for the local stack, the tests and the benchmarks: on a given (or free) port,
with its data in a directory of the caller's, its output appended to a log file there, in
its own session so a terminal's Ctrl-C reaches only its parent. It can be stopped (or
killed) and started again on the same port and data, which the fault tests do.

Clients connect with ``retryWrites=false``: SecantusDB's bookkeeping of retryable writes
slows every write down as it fills, and every write the services make is idempotent anyway
(see ``inbox_common.store.client.create_client``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pymongo
import pymongo.errors

from inbox_common.local.ports import free_port


def executable() -> Path:
    """The ``secantusd-py`` next to the running interpreter."""
    return Path(sys.executable).parent / "secantusd-py"


def log_tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file, or a note that it cannot be read."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(cannot read {path}: {exc})"


class SecantusServer:
    """One SecantusDB process on ``port``, its log in ``directory`` and its data in
    ``data_dir`` (by default ``directory / "data"``)."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        data_dir: Path | None = None,
        log_level: str | None = None,
    ) -> None:
        self.directory = directory
        self.data_dir = data_dir or directory / "data"
        self.port = port or free_port()
        self.log_path = directory / "secantusd.log"
        self._log_level = log_level
        self._process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true&retryWrites=false"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self._process

    def start(self) -> None:
        """Start the server (again after a stop: same port, same data); see :meth:`wait_ready`."""
        binary = executable()
        if not binary.exists():
            raise RuntimeError(
                f"{binary} is missing; run `uv sync` (secantusdb is a dev dependency)"
            )
        if self.running:
            raise RuntimeError(f"SecantusDB on port {self.port} is already running")
        data = self.data_dir
        data.mkdir(parents=True, exist_ok=True)
        command = [
            str(binary),
            *("--host", "127.0.0.1", "--port", str(self.port)),
            *("--storage-path", str(data)),
        ]
        if self._log_level:
            command += ["--log-level", self._log_level]
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start #{self.starts} ---\n".encode())
            log.flush()
            # cwd: its own data directory, so it finds no stray secantusd.toml.
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=data,
                env=dict(os.environ),
                start_new_session=True,
            )

    def answers(self, timeout_ms: int = 500) -> bool:
        """Whether the server answers a ``ping`` now."""
        with contextlib.suppress(pymongo.errors.PyMongoError):
            client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
                self.url, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms
            )
            with client:
                client.admin.command("ping")
                return True
        return False

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the server answers; fail with its log tail if it exits or is slow."""
        deadline = time.monotonic() + timeout
        while not self.answers():
            if not self.running:
                raise RuntimeError(
                    f"secantusd-py exited before answering on port {self.port}:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"secantusd-py did not answer on port {self.port} within {timeout:g}s:\n"
                    f"{self.tail()}"
                )
            time.sleep(0.1)

    async def start_and_wait(self, timeout: float = 60.0) -> None:  # noqa: ASYNC109
        """:meth:`start`, then :meth:`wait_ready` off the event loop."""
        self.start()
        await asyncio.to_thread(self.wait_ready, timeout)

    def stop(self, sig: signal.Signals = signal.SIGTERM, grace: float = 15.0) -> int | None:
        """Send ``sig`` and wait for the end (SIGKILL after ``grace``); the exit status."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    async def stop_async(self, sig: signal.Signals = signal.SIGTERM, grace: float = 15.0) -> None:
        await asyncio.to_thread(self.stop, sig, grace)

    def tail(self, lines: int = 40) -> str:
        return f"--- {self.log_path} ---\n{log_tail(self.log_path, lines)}"
