"""One WebSocket client: what it may see, and a bounded queue of frames that its own task
sends, so that a slow client never holds up the others.

The hub only puts frames in the queue, without awaiting. A client whose queue is full is
too slow to keep up (or gone without a FIN, until the heartbeat notices): it is closed with
1013, and it reconnects with its ``last_event_id`` when it can. A session holds little (the
frames in its queue are shared with every other session), so hundreds of clients cost
little memory.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from inbox_api.live.protocol import close_reason
from inbox_api.rest.auth import Principal
from inbox_common.tokens import Role

# How long a close handshake may take before the connection is simply dropped.
CLOSE_SECONDS = 2.0


class Session:
    __slots__ = (
        "_closer", "_queue", "_sender", "_transport", "_ws", "sees_all", "tenant", "token_hash"
    )  # fmt: skip

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None,
        principal: Principal,
        *,
        queue_size: int,
    ) -> None:
        self.tenant = principal.tenant
        self.sees_all = principal.role is Role.SUPERADMIN
        self.token_hash = principal.token_hash
        self._ws = ws
        self._transport = transport
        self._queue: asyncio.Queue[str] = asyncio.Queue(queue_size)
        self._sender: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None

    @property
    def room(self) -> int:
        """How many more frames fit in the queue."""
        return self._queue.maxsize - self._queue.qsize()

    @property
    def closing(self) -> bool:
        return self._closer is not None

    def offer(self, frame: str) -> bool:
        """Queue ``frame`` to be sent; False when the queue is full."""
        if self._closer is not None:
            return True  # being closed: nothing more is sent
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            return False
        return True

    def start(self) -> None:
        """Start sending what is queued (the frames queued so far go first)."""
        self._sender = asyncio.create_task(self._send(), name="live-session-sender")

    async def _send(self) -> None:
        try:
            while True:
                await self._ws.send_str(await self._queue.get())
        except ConnectionError:
            # The client went away; its handler's receive loop ends and stops the session.
            return

    def close(self, code: int, reason: str) -> None:
        """Close the session from outside its handler (once): stop sending, say why."""
        if self._closer is None:
            self._closer = asyncio.create_task(self._close(code, reason), name="live-session-close")

    async def _close(self, code: int, reason: str) -> None:
        while not self._queue.empty():  # nothing goes after the close frame
            self._queue.get_nowait()
        # Not cancelled on a deadline, and the sender is not cancelled either while a send
        # may wait for the socket to drain: aiohttp shares one drain future between its
        # writers, and cancelling one waiter cancels it for all. Aborting the connection
        # wakes them instead.
        closing = asyncio.ensure_future(self._ws.close(code=code, message=close_reason(reason)))
        done, _ = await asyncio.wait([closing], timeout=CLOSE_SECONDS)
        if not done:  # the client does not read: its buffered frames would never go
            self._abort()
            await asyncio.wait([closing])
        if not closing.cancelled():
            closing.exception()  # retrieved: aiohttp already made the close abnormal

    def _abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _abort_if_stuck(self) -> None:
        # A plain close waits until what is buffered is sent, for ever if the client stopped
        # reading without closing its end.
        if self._transport is not None and self._transport.get_write_buffer_size():
            self._transport.abort()

    async def stop(self) -> None:
        """The end of the session (its handler returns): let a close begun elsewhere finish,
        stop sending, and make sure the connection does not outlive the session."""
        if self._closer is not None:
            await asyncio.wait([self._closer])
        if self._sender is not None and not self._sender.done():
            self._sender.cancel()
            await asyncio.wait([self._sender])
        asyncio.get_running_loop().call_later(CLOSE_SECONDS, self._abort_if_stuck)
