"""webhook-ingest's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from inbox_common.metrics import LATENCY_BUCKETS


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.received = Counter(
            "webhook_requests_total",
            "Webhook POSTs by outcome",
            ["outcome"],
            registry=registry,
        )
        # Children of the hot outcomes, looked up once instead of per request.
        self.accepted = self.received.labels("accepted")
        self.bad_signature = self.received.labels("bad_signature")
        self.body_bytes = Histogram(
            "webhook_body_bytes",
            "Size of accepted webhook bodies",
            buckets=(512, 2048, 8192, 32768, 131072, 524288, 2097152, 4194304),
            registry=registry,
        )
        self.publish_seconds = Histogram(
            "webhook_publish_seconds",
            "Time from publish to the broker's confirm",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
