"""Child processes with their output forwarded line by line under a name, and the one
helper that waits for a process's HTTP endpoint.

Used by ``inbox-ops dev`` to run the platform in one terminal, and by the tests and the
benchmarks to run the services as real processes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import aiohttp

LineSink = Callable[[str, str], None]


class Watched(Protocol):
    """A process :func:`wait_http` stops waiting for when it exits."""

    @property
    def name(self) -> str: ...

    @property
    def running(self) -> bool: ...


def print_line(name: str, line: str) -> None:
    sys.stdout.write(f"{name:>15} | {line}\n")
    sys.stdout.flush()


class ServiceProcess:
    """One child process in its own session (a terminal's Ctrl-C reaches only the parent)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        sink: LineSink = print_line,
    ) -> None:
        self.name = name
        self._argv = list(argv)
        self._env = dict(env)
        self._sink = sink
        self.process: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self._argv,
            env=self._env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        self._pump = asyncio.create_task(self._forward())

    async def _forward(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self._sink(self.name, raw.decode("utf-8", "replace").rstrip())

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def wait(self) -> int:
        assert self.process is not None
        return await self.process.wait()

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` right away (the fault tests' kill -9)."""
        if self.running and self.process is not None:
            os.kill(self.process.pid, sig)

    async def stop(self, timeout: float = 15.0) -> int | None:  # noqa: ASYNC109
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit status."""
        if self.process is None:
            return None
        if self.running:
            self.kill(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                self.kill()
                await self.process.wait()
        if self._pump is not None:
            await asyncio.wait([self._pump], timeout=2)
        return self.process.returncode


# The deadline is this helper's whole job, and its error names the URL and the last answer.
async def wait_http(
    url: str,
    *,
    timeout: float,  # noqa: ASYNC109
    want: int | None = 200,
    process: Watched | None = None,
) -> int:
    """Poll ``url`` until it answers ``want`` (any status when ``None``); return the status.

    Fails early when ``process`` exits; raises ``TimeoutError`` naming the URL and the last
    answer or connection error after ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = "no answer"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while True:
            if process is not None and not process.running:
                raise RuntimeError(f"{process.name} exited before {url} answered ({last})")
            try:
                async with session.get(url, allow_redirects=False) as response:
                    if want is None or response.status == want:
                        return response.status
                    last = f"HTTP {response.status}: {(await response.text())[:300]}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = repr(exc)
            if loop.time() >= deadline:
                raise TimeoutError(
                    f"{url} did not answer {want or 'at all'} within {timeout:g}s ({last})"
                )
            await asyncio.sleep(0.1)
