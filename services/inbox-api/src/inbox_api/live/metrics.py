"""The live updates' metrics. Labels are bounded sets of reasons: never a tenant or a token,
which would grow without limit."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class LiveMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.clients = Gauge(
            "live_clients", "Authenticated WebSocket sessions on this replica", registry=registry
        )
        self.published = Counter(
            "live_events_published_total",
            "Events this replica handed to RabbitMQ (no confirm is awaited)",
            registry=registry,
        )
        self.dropped = Counter(
            "live_events_dropped_total",
            "Events this replica did not publish, by reason: broker_unavailable, backlog, "
            "unserializable",
            ["reason"],
            registry=registry,
        )
        self.received = Counter(
            "live_events_received_total",
            "Events this replica received from the live exchange, by outcome: accepted, invalid",
            ["outcome"],
            registry=registry,
        )
        self.delivered = Counter(
            "live_events_delivered_total",
            "Events queued to a WebSocket session (one per session that gets the event)",
            registry=registry,
        )
        self.closed = Counter(
            "live_sessions_closed_total",
            "WebSocket sessions this replica closed, by reason: unauthorized, too_slow, "
            "revoked, going_away, store_unavailable",
            ["reason"],
            registry=registry,
        )
