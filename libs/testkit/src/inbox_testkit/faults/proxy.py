"""An asyncio TCP proxy that the fault tests put between a service and its broker or store.

It listens on 127.0.0.1 and forwards every accepted connection to the first upstream that
accepts a connection, in the order given; with several upstreams (the nodes of a cluster)
it is the simple TCP load balancer production puts in front of a RabbitMQ cluster (HAProxy
with ``option redispatch``): when a node dies its connections drop, and a reconnecting
client lands on a live node.

Faults, each applying to every current connection and every new one until :meth:`heal`:

- :meth:`cut` closes every connection now (a reset; the upstream's process crashed, a
  load balancer restarted). New connections are accepted as usual.
- :meth:`refuse` closes every new connection right after accepting it (nothing listens).
- :meth:`stall` stops forwarding bytes in both directions while keeping the sockets open
  (a partition: TCP buffers fill and nothing arrives; no RST, no FIN). Bytes held back are
  delivered after :meth:`heal`, as TCP would after a partition heals.
- :meth:`slow` delays every chunk by a fixed latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

_CHUNK = 64 * 1024


@dataclass(eq=False)
class _Link:
    """One proxied connection: the client's socket and the upstream's."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    upstream_address: tuple[str, int]
    pumps: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            _abort(writer)


def _abort(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        # SO_LINGER 0: close with a RST, like a crashed peer, not a polite FIN.
        with contextlib.suppress(OSError):
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
    writer.transport.abort()


class TcpProxy:
    """See the module docstring."""

    def __init__(
        self,
        upstreams: Sequence[tuple[str, int]],
        *,
        name: str,
        connect_timeout: float = 2.0,
    ) -> None:
        if not upstreams:
            raise ValueError("a proxy needs at least one upstream")
        self.name = name
        self.upstreams = list(upstreams)
        self._connect_timeout = connect_timeout
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._refusing = False
        self._delay = 0.0
        self.port = 0
        self.accepted = 0
        self.cuts = 0

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def url(self, template: str) -> str:
        """``template`` with ``{host}`` and ``{port}`` filled in with the proxy's address."""
        return template.format(host="127.0.0.1", port=self.port)

    @property
    def connections(self) -> int:
        return len(self._links)

    def upstream_counts(self) -> dict[tuple[str, int], int]:
        """How many current connections go to each upstream."""
        counts: dict[tuple[str, int], int] = {}
        for link in self._links:
            counts[link.upstream_address] = counts.get(link.upstream_address, 0) + 1
        return counts

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
        self._flowing.set()
        self.cut()
        tasks = [*self._handlers, *(t for link in self._links for t in link.pumps)]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    # --- faults -----------------------------------------------------------------------------

    def cut(self) -> int:
        """Close every current connection with a reset; returns how many were cut."""
        links = list(self._links)
        for link in links:
            link.abort()
        self._links.clear()
        self.cuts += len(links)
        return len(links)

    def refuse(self) -> None:
        """Close every new connection right after accepting it, until :meth:`heal`."""
        self._refusing = True

    def stall(self) -> None:
        """Stop forwarding bytes (sockets stay open) until :meth:`heal`."""
        self._flowing.clear()

    def slow(self, delay: float) -> None:
        """Delay every forwarded chunk by ``delay`` seconds until :meth:`heal`."""
        self._delay = delay

    def heal(self) -> None:
        """Back to normal: accept, forward at full speed; stalled bytes flow again."""
        self._refusing = False
        self._delay = 0.0
        self._flowing.set()

    # --- forwarding -------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            if task is not None:
                self._handlers.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._refusing:
            _abort(writer)
            return
        try:
            upstream = await self._connect_upstream()
        except asyncio.CancelledError:
            _abort(writer)  # the proxy is closing
            raise
        if upstream is None:
            _abort(writer)
            return
        up_reader, up_writer, address = upstream
        if self._refusing:
            _abort(writer)
            _abort(up_writer)
            return
        link = _Link(writer, up_writer, address)
        self._links.add(link)
        link.pumps = [
            asyncio.create_task(self._pump(reader, up_writer, link)),
            asyncio.create_task(self._pump(up_reader, writer, link)),
        ]
        try:
            await asyncio.wait(link.pumps)
        finally:
            if link in self._links:  # cancelled before a pump ended it: free the sockets
                self._links.discard(link)
                link.abort()

    async def _connect_upstream(
        self,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, tuple[str, int]] | None:
        for host, port in self.upstreams:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), self._connect_timeout
                )
            except (OSError, TimeoutError):
                continue
            return reader, writer, (host, port)
        return None

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, link: _Link
    ) -> None:
        try:
            while True:
                chunk = await source.read(_CHUNK)
                if not chunk:
                    break
                # Held here while stalled: we stop reading, so the sender's buffers fill.
                await self._flowing.wait()
                if self._delay:
                    await asyncio.sleep(self._delay)
                if link not in self._links:
                    return  # cut meanwhile
                sink.write(chunk)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # One side ended: end the other too (a proxy does not keep half a connection).
            if link in self._links:
                self._links.discard(link)
                for writer in (link.client, link.upstream):
                    with contextlib.suppress(OSError, RuntimeError):
                        writer.close()
