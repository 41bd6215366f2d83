"""The live updates hub of one replica: every change is published to the ``<ns>.live`` fanout
exchange, every replica receives every event on its own queue, and each replica pushes an
event to its WebSocket clients of the event's tenant (a superadmin's sessions get all).

So a client sees every update whichever replica it is connected to, and a replica never
needs to know the others. Delivery is best effort by design: an event that cannot be
published is dropped and counted, and a client that may have missed events (it reconnected
with an id this replica no longer has, or this replica lost its subscription for a while)
is told to reload over REST, where the store holds the truth.

:func:`live_ctx` is the resource: the hub under :data:`LIVE`, receiving once the broker is
connected, and the ``live_updates`` health check (not critical: the API serves without it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from inbox_api.live.buffer import Buffered, EventBuffer
from inbox_api.live.events import TOKEN_REVOKED, LiveEvent, encode_event
from inbox_api.live.metrics import LiveMetrics
from inbox_api.live.protocol import (
    GOING_AWAY,
    TRY_AGAIN_LATER,
    UNAUTHORIZED,
    event_frame,
    ready_frame,
    reload_frame,
)
from inbox_api.live.publishing import LivePublisher
from inbox_api.live.sessions import Session
from inbox_api.live.subscription import LiveSubscription
from inbox_api.rest.auth import TOKEN_CACHE, Principal, TokenCache
from inbox_common.broker import topology
from inbox_common.broker.connection import BROKER, NAMES, Broker
from inbox_common.broker.topology import Names
from inbox_common.health import HEALTH_CHECKS, CheckResult, HealthCheck, Status
from inbox_common.logging import get_logger
from inbox_common.metrics import METRICS_REGISTRY
from inbox_common.service import CleanupCtx

log = get_logger(__name__)

BUFFER_SIZE = 2000
SESSION_QUEUE = 256

UNKNOWN_ID = "last_event_id is unknown to this server or too old; refetch over REST"
TOO_MANY_MISSED = "too many events were missed to replay; refetch over REST"
GAP = "this server lost the event stream for a while and may have missed events; refetch"


class LiveUpdates:
    """Publishes events, receives every replica's, and fans them out to this replica's
    WebSocket sessions; see the module docstring."""

    def __init__(
        self,
        broker: Broker,
        names: Names,
        token_cache: TokenCache,
        metrics: LiveMetrics,
        *,
        buffer_size: int = BUFFER_SIZE,
        session_queue: int = SESSION_QUEUE,
    ) -> None:
        self._broker = broker
        self._names = names
        self._token_cache = token_cache
        self._metrics = metrics
        self._session_queue = session_queue
        self._buffer = EventBuffer(buffer_size)
        self._by_tenant: dict[str, set[Session]] = {}
        self._see_all: set[Session] = set()
        self._publisher = LivePublisher(broker, names.live_exchange, metrics)
        self._subscription = LiveSubscription(
            broker, names, on_event=self._receive, on_gap=self._lost_events
        )

    # --- publishing -------------------------------------------------------------------------

    def publish(self, tenant: str, type: str, data: dict[str, Any]) -> None:
        """Publish an event of ``tenant`` to every replica. Returns at once and never raises:
        an event that cannot be published (broker down, backlog full) is dropped and counted
        in ``live_events_dropped_total``.

        A ``token.revoked`` event also takes effect here at once, even with the broker down.
        """
        try:
            event_id, body = encode_event(tenant, type, data)
        except TypeError as exc:  # data the caller built badly: worth a warning, not a crash
            self._publisher.drop("unserializable")
            log.warning("live.unserializable_event", type=type, error=str(exc))
            return
        if type == TOKEN_REVOKED:
            self._revoke(data.get("token_hash"))
        self._publisher.offer(event_id, body)

    # --- receiving --------------------------------------------------------------------------

    def _receive(self, body: bytes) -> None:
        try:
            event = LiveEvent.model_validate_json(body)
        except ValidationError as exc:
            self._metrics.received.labels("invalid").inc()
            log.warning("live.invalid_event", errors=exc.error_count(), size=len(body))
            return
        self._metrics.received.labels("accepted").inc()
        if event.type == TOKEN_REVOKED:
            self._revoke(event.data.get("token_hash"))
            return  # for the replicas, not for the clients
        frame = event_frame(event)
        self._buffer.append(Buffered(event.id, event.tenant, frame))
        delivered = 0
        for sessions in (self._by_tenant.get(event.tenant, ()), self._see_all):
            for session in sessions:
                delivered += self._offer(session, frame)
        self._metrics.delivered.inc(delivered)

    def _offer(self, session: Session, frame: str) -> int:
        if session.offer(frame):
            return 1
        self._close(session, TRY_AGAIN_LATER, "too slow to receive updates", "too_slow")
        return 0

    def _lost_events(self) -> None:
        """The subscription was lost and is back: what was buffered may have a hole."""
        self._buffer.clear()
        frame = reload_frame(GAP)
        for session in self._sessions():
            self._offer(session, frame)
        log.info("live.rebound", sessions_told_to_reload=len(self._sessions()))

    def _revoke(self, token_hash: object) -> None:
        if not isinstance(token_hash, str) or not token_hash:
            return
        self._token_cache.forget(token_hash)
        closed = 0
        for session in self._sessions():
            if session.token_hash == token_hash and not session.closing:
                self._close(session, UNAUTHORIZED, "token revoked", "revoked")
                closed += 1
        log.info("live.token_revoked", sessions_closed=closed)

    # --- sessions ---------------------------------------------------------------------------

    def attach(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None,
        principal: Principal,
        last_event_id: str | None,
    ) -> Session:
        """Start a session: ``ready``, then what it missed since ``last_event_id`` (or a
        ``reload``), then every new event. All of it is queued without a pause, so no event
        falls between the replay and the live ones."""
        session = Session(ws, transport, principal, queue_size=self._session_queue)
        session.offer(ready_frame(self._buffer.newest_id))
        if last_event_id is not None:
            missed = self._buffer.since(last_event_id, None if session.sees_all else session.tenant)
            if missed is None:
                session.offer(reload_frame(UNKNOWN_ID))
            elif len(missed) >= session.room:
                session.offer(reload_frame(TOO_MANY_MISSED))
            else:
                for frame in missed:
                    session.offer(frame)
                self._metrics.delivered.inc(len(missed))
        if session.sees_all:
            self._see_all.add(session)
        else:
            self._by_tenant.setdefault(session.tenant, set()).add(session)
        self._metrics.clients.inc()
        session.start()
        return session

    async def detach(self, session: Session) -> None:
        """End a session (its handler returns)."""
        if session.sees_all:
            self._see_all.discard(session)
        else:
            tenant = self._by_tenant.get(session.tenant)
            if tenant is not None:
                tenant.discard(session)
                if not tenant:
                    del self._by_tenant[session.tenant]
        self._metrics.clients.dec()
        await session.stop()

    def _sessions(self) -> list[Session]:
        return [*self._see_all, *(s for sessions in self._by_tenant.values() for s in sessions)]

    def _close(self, session: Session, code: int, reason: str, label: str) -> None:
        if not session.closing:
            session.close(code, reason)
            self._metrics.closed.labels(label).inc()

    def count_refused(self, label: str) -> None:
        """Count a session refused before it started (``unauthorized``, ...)."""
        self._metrics.closed.labels(label).inc()

    async def close_sessions(self) -> None:
        """Say goodbye (1001) to every session and wait for their handlers' ends (bounded
        by each session's close timeout)."""
        sessions = self._sessions()
        for session in sessions:
            self._close(session, GOING_AWAY, "going away", "going_away")
        for session in sessions:
            await session.stop()

    # --- the resource -----------------------------------------------------------------------

    def start(self) -> None:
        """Publish and receive once the broker is connected (in the background)."""

        async def setup() -> None:
            await self._publisher.open(topology.live_updates(self._names))
            await self._subscription.open()

        self._broker.when_connected(setup, what="live updates")

    async def stop(self) -> None:
        await self.close_sessions()
        await self._subscription.close()
        await self._publisher.close()

    @property
    def bound(self) -> bool:
        return self._subscription.bound and self._broker.connected

    @property
    def newest_id(self) -> str | None:
        return self._buffer.newest_id

    @property
    def queue(self) -> str | None:
        """The name the broker gave this replica's queue (a new one after each rebinding)."""
        return self._subscription.queue

    async def probe(self) -> CheckResult:
        """Health check: receiving the live exchange, or not (clients get no updates)."""
        if self.bound:
            return CheckResult(status=Status.OK)
        return CheckResult(
            status=Status.DOWN,
            detail=f"not bound to {self._names.live_exchange}; WebSocket clients of this "
            "replica get no updates until it is",
        )


LIVE = web.AppKey("live", LiveUpdates)


def live_ctx(*, buffer_size: int = BUFFER_SIZE, session_queue: int = SESSION_QUEUE) -> CleanupCtx:
    """The live updates resource: the hub under :data:`LIVE` and the ``live_updates`` health
    check (not critical). Needs :func:`~inbox_common.broker.connection.broker_ctx` before it
    and ``app[TOKEN_CACHE]``; at shutdown it closes every remaining session with 1001."""

    async def live(app: web.Application) -> AsyncIterator[None]:
        if BROKER not in app or TOKEN_CACHE not in app:
            raise RuntimeError("live_ctx needs broker_ctx before it and app[TOKEN_CACHE]")
        hub = LiveUpdates(
            app[BROKER],
            app[NAMES],
            app[TOKEN_CACHE],
            LiveMetrics(app[METRICS_REGISTRY]),
            buffer_size=buffer_size,
            session_queue=session_queue,
        )
        app[LIVE] = hub
        app[HEALTH_CHECKS]["live_updates"] = HealthCheck(hub.probe, critical=False)
        hub.start()
        yield
        await hub.stop()

    return live
