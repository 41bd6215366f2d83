"""retry-worker's Prometheus metrics.

Labels are bounded: an outcome and a pass result from fixed sets, a tier of the topology's,
the one job name. Never a message id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["OUTCOMES", "RetryMetrics"]

# What happened to a due job (``retry_jobs_total{outcome}``).
REQUEUED = "requeued"
DROPPED_DONE = "dropped_done"
DROPPED_CANCELLED = "dropped_cancelled"
DROPPED_PAUSED = "dropped_paused"
DROPPED_MISSING = "dropped_missing"
DEAD_LETTERED = "dead_lettered"
# The pass failed on it and it went back to the due queue: republished to its tail while the
# store is unreachable (``parked``), or returned with a nack (``returned``).
PARKED = "parked"
RETURNED = "returned"
OUTCOMES = (
    REQUEUED, DROPPED_DONE, DROPPED_CANCELLED, DROPPED_PAUSED, DROPPED_MISSING, DEAD_LETTERED,
    PARKED, RETURNED,
)  # fmt: skip


class RetryMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.jobs = Counter(
            "retry_jobs_total", "Due jobs settled by the retry-worker, by outcome", ["outcome"],
            registry=registry,
        )  # fmt: skip
        self.passes = Counter(
            "retry_passes_total", "Passes over the due queue, by result (ok, failed)", ["result"],
            registry=registry,
        )  # fmt: skip
        self.tier_messages = Gauge(
            "retry_tier_messages",
            "Messages waiting in each delay tier and in the due queue (tier=due), as of the "
            "last pass or status request",
            ["tier"],
            registry=registry,
        )
        self.lock_age = Gauge(
            "job_lock_age_seconds",
            "Seconds since the job lock's last heartbeat, by the store's clock (0 when free)",
            ["job"],
            registry=registry,
        )
        self.last_success = Gauge(
            "job_last_success_timestamp_seconds",
            "When the job last finished a pass without failing (Unix time)",
            ["job"],
            registry=registry,
        )
        for outcome in OUTCOMES:
            self.jobs.labels(outcome)
        for result in ("ok", "failed"):
            self.passes.labels(result)
