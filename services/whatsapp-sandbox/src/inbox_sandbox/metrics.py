"""whatsapp-sandbox's Prometheus metrics.

Labels are bounded: an outcome, a Meta error code or fault name from a fixed set, a webhook
kind. Never a wamid, a phone number or a message type a client made up.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from inbox_common.metrics import LATENCY_BUCKETS

__all__ = ["INBOUND_TYPES", "SandboxMetrics"]

# Inbound types counted under their own name; anything else is counted as "other".
INBOUND_TYPES = frozenset(
    {
        "text", "image", "audio", "video", "document", "sticker", "location", "contacts",
        "interactive", "button", "reaction", "order", "system", "unsupported",
    }
)  # fmt: skip


class SandboxMetrics:
    """The sandbox's counters: sends by outcome and code, webhooks by kind and outcome."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.sends = Counter(
            "sandbox_sends_total",
            "Send requests by outcome (accepted, refused, failed_later) and Meta code or fault",
            ["outcome", "code"],
            registry=registry,
        )
        self.accepted = self.sends.labels("accepted", "")
        self.marked_read = Counter(
            "sandbox_mark_read_total", "Mark-as-read requests answered", registry=registry
        )
        self.webhooks = Counter(
            "sandbox_webhooks_total",
            "Webhook POSTs to the ingest by kind (status, inbound) and outcome",
            ["kind", "outcome"],
            registry=registry,
        )
        self.delivery_seconds = Histogram(
            "sandbox_webhook_delivery_seconds",
            "Time from a webhook's first attempt to the ingest's 200",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.inbound = Counter(
            "sandbox_inbound_total",
            "Customer messages made through /sandbox/inbound, by type",
            ["type"],
            registry=registry,
        )
        self.ledger_entries = Gauge(
            "sandbox_ledger_entries", "Accepted sends held in the ledger", registry=registry
        )
        self.pending_webhooks = Gauge(
            "sandbox_pending_webhooks",
            "Webhooks scheduled or being retried",
            registry=registry,
        )

    def refused(self, code: str) -> None:
        self.sends.labels("refused", code).inc()

    def inbound_type(self, type_: str) -> None:
        self.inbound.labels(type_ if type_ in INBOUND_TYPES else "other").inc()
