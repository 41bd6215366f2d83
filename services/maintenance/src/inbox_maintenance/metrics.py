"""maintenance's Prometheus metrics. Labels are bounded: a task name from ``TASKS``, a result
from a fixed set."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from inbox_maintenance.settings import TASKS

# What became of a run (``maintenance_task_runs_total{result}``).
OK = "ok"
FAILED = "failed"
SKIPPED = "skipped"  # another live replica runs the task now
UNREACHABLE = "unreachable"  # the store could not be reached
RESULTS = (OK, FAILED, SKIPPED, UNREACHABLE)
CHANNEL_STATUSES = ("connected", "disconnected")
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0)


class MaintenanceMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.runs = Counter(
            "maintenance_task_runs_total",
            "Runs of maintenance tasks on this replica, by task and result",
            ["task", "result"],
            registry=registry,
        )
        self.duration = Histogram(
            "maintenance_task_seconds",
            "How long a run of a task took",
            ["task"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.last_success = Gauge(
            "job_last_success_timestamp_seconds",
            "When the job last finished without failing, on any replica (Unix time)",
            ["job"],
            registry=registry,
        )
        self.published = Counter(
            "maintenance_schedule_published_total",
            "Task messages this replica's schedule published (one per task and period across "
            "all replicas)",
            ["task"],
            registry=registry,
        )
        self.channels = Gauge(
            "channels_by_status",
            "WhatsApp channels in the store by status, as this replica last counted them "
            "(every replica counts all tenants: aggregate with max, not sum)",
            ["status"],
            registry=registry,
        )
        for status in CHANNEL_STATUSES:
            self.channels.labels(status)
        for task in TASKS:
            self.published.labels(task)
            for result in RESULTS:
                self.runs.labels(task, result)
