"""Write the Grafana dashboards of deploy/grafana/dashboards from the panels below.

    uv run python deploy/grafana/build_dashboards.py

The JSON files are committed (Grafana provisions them as they are); tests/deploy checks they
match this script, that every query parses and runs against a real Prometheus, and that
every metric they name is one a service exports. Template variables: ``$datasource``,
``$ns`` (the AMQP namespace, the prefix of every queue) and, on the services dashboard,
``$job``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
WORK_QUEUES = (
    r"$ns\\.(inbox\\.webhooks|outbound\\.send|outbound\\.number\\.[0-9]+|retry\\.due"
    r"|maintenance\\.tasks)"
)

LINKS = [
    {
        "title": "Inbox dashboards",
        "type": "dashboards",
        "tags": ["whatsapp-inbox"],
        "asDropdown": True,
        "includeVars": True,
        "keepTime": True,
    },
    {
        "title": "RabbitMQ-Overview (grafana.com 10991)",
        "type": "link",
        "url": "https://grafana.com/grafana/dashboards/10991",
        "targetBlank": True,
        "icon": "external link",
    },
    {
        "title": "RabbitMQ-Quorum-Queues-Raft (grafana.com 11340)",
        "type": "link",
        "url": "https://grafana.com/grafana/dashboards/11340",
        "targetBlank": True,
        "icon": "external link",
    },
    {
        "title": "MongoDB dashboards (mongodb_exporter)",
        "type": "link",
        "url": "https://grafana.com/grafana/dashboards/?search=mongodb+exporter",
        "targetBlank": True,
        "icon": "external link",
    },
    {
        "title": "Runbook",
        "type": "link",
        "url": "https://github.com/example/whatsapp-inbox/blob/main/docs/runbook.md",
        "targetBlank": True,
        "icon": "doc",
    },
]


def _variables(*, job: bool) -> dict[str, Any]:
    variables: list[dict[str, Any]] = [
        {
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
            "current": {"text": "Prometheus", "value": "prometheus"},
        },
        {
            "name": "ns",
            "label": "AMQP namespace",
            "type": "textbox",
            "query": "wa",
            "current": {"text": "wa", "value": "wa"},
        },
    ]
    if job:
        variables.append(
            {
                "name": "job",
                "label": "service",
                "type": "query",
                "datasource": DATASOURCE,
                "query": {"query": "label_values(http_requests_total, job)", "refId": "jobs"},
                "definition": "label_values(http_requests_total, job)",
                "refresh": 2,
                "includeAll": False,
                "multi": False,
                "current": {"text": "inbox-api", "value": "inbox-api"},
            }
        )
    return {"list": variables}


def panel(
    title: str,
    targets: list[tuple[str, str]],
    *,
    unit: str = "short",
    description: str = "",
    kind: str = "timeseries",
) -> dict[str, Any]:
    """A panel of ``(expr, legend)`` queries; its position is set by :func:`dashboard`."""
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
            }
            for i, (expr, legend) in enumerate(targets)
        ],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}}
        if kind == "timeseries"
        else {},
    }


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def dashboard(
    uid: str, title: str, description: str, panels: list[dict[str, Any]], *, job: bool = False
) -> dict[str, Any]:
    x = y = 0
    placed = []
    for number, item in enumerate(panels, start=1):
        item = {**item, "id": number}
        if item["type"] == "row":
            if x:
                x, y = 0, y + 8
            item["gridPos"] = {"h": 1, "w": 24, "x": 0, "y": y}
            y += 1
        else:
            item["gridPos"] = {"h": 8, "w": 12, "x": x, "y": y}
            x, y = (12, y) if x == 0 else (0, y + 8)
        placed.append(item)
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["whatsapp-inbox"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "graphTooltip": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": _variables(job=job),
        "annotations": {"list": []},
        "links": LINKS,
        "panels": placed,
    }


def pipeline() -> dict[str, Any]:
    inbox_queue = 'queue=~"$ns\\\\.inbox\\\\.webhooks"'
    return dashboard(
        "inbox-pipeline",
        "Inbox: webhook pipeline",
        "Meta → webhook-ingest → RabbitMQ → inbox-api → MongoDB: rates and latency per stage.",
        [
            row("Ingest (webhook-ingest)"),
            panel(
                "Webhook POSTs by outcome",
                [
                    (
                        "sum by (outcome) (rate(webhook_requests_total[$__rate_interval]))",
                        "{{outcome}}",
                    )
                ],
                unit="reqps",
                description="accepted = confirmed by RabbitMQ; bad_signature = the secret; "
                "publish_* = the broker (Meta gets a 503 and retries).",
            ),
            panel(
                "Webhook POST latency (answered after the broker's confirm)",
                [
                    (
                        "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_"
                        'seconds_bucket{job="webhook-ingest", route="/webhooks/whatsapp"}'
                        "[$__rate_interval])))",
                        "p99",
                    ),
                    (
                        "histogram_quantile(0.5, sum by (le) (rate(http_request_duration_"
                        'seconds_bucket{job="webhook-ingest", route="/webhooks/whatsapp"}'
                        "[$__rate_interval])))",
                        "p50",
                    ),
                ],
                unit="s",
            ),
            panel(
                "Publish → confirm",
                [
                    (
                        "histogram_quantile(0.99, sum by (le) (rate(webhook_publish_seconds_bucket"
                        "[$__rate_interval])))",
                        "p99",
                    ),
                    (
                        "histogram_quantile(0.5, sum by (le) (rate(webhook_publish_seconds_bucket"
                        "[$__rate_interval])))",
                        "p50",
                    ),
                ],
                unit="s",
            ),
            panel(
                "Accepted body size",
                [
                    (
                        "histogram_quantile(0.99, sum by (le) (rate(webhook_body_bytes_bucket"
                        "[$__rate_interval])))",
                        "p99",
                    )
                ],
                unit="bytes",
            ),
            row("Broker (RabbitMQ)"),
            panel(
                "Work queues: ready messages",
                [
                    (
                        f'sum by (queue) (rabbitmq_queue_messages_ready{{queue=~"{WORK_QUEUES}"}})',
                        "{{queue}}",
                    )
                ],
                description="KEDA scales the consumers on these depths.",
            ),
            panel(
                "Work queues: consumers",
                [
                    (
                        f'sum by (queue) (rabbitmq_queue_consumers{{queue=~"{WORK_QUEUES}"}})',
                        "{{queue}}",
                    )
                ],
            ),
            panel(
                "Dead-letter queues",
                [
                    (
                        'sum by (queue) (rabbitmq_queue_messages{queue=~"$ns\\\\..+\\\\.dead"})',
                        "{{queue}}",
                    )
                ],
                description="Nothing consumes them: inspect, fix, replay.",
            ),
            panel(
                "Webhooks queue: in and out",
                [
                    (
                        f"sum(rate(rabbitmq_queue_exchange_messages_published_total{{{inbox_queue}}}"
                        "[$__rate_interval]))",
                        "published",
                    ),
                    (
                        f"sum(rate(rabbitmq_queue_messages_acked_total{{{inbox_queue}}}"
                        "[$__rate_interval]))",
                        "acked",
                    ),
                ],
                unit="ops",
            ),
            row("Store (inbox-api consumer → MongoDB)"),
            panel(
                "Consumed messages by outcome",
                [
                    (
                        f"sum by (outcome) (rate(consumer_messages_total{{{inbox_queue}}}"
                        "[$__rate_interval]))",
                        "{{outcome}}",
                    )
                ],
                unit="ops",
                description="acked after the store write; parked/paused = store outage; "
                "dead_lettered = permanent; crashed = a bug.",
            ),
            panel(
                "Delivery → settled (store write included)",
                [
                    (
                        f"histogram_quantile(0.99, sum by (le) (rate(consumer_handle_seconds_bucket"
                        f"{{{inbox_queue}}}[$__rate_interval])))",
                        "p99",
                    ),
                    (
                        f"histogram_quantile(0.5, sum by (le) (rate(consumer_handle_seconds_bucket"
                        f"{{{inbox_queue}}}[$__rate_interval])))",
                        "p50",
                    ),
                ],
                unit="s",
            ),
            panel(
                "Ingest → store (receipt to stored)",
                [
                    (
                        "histogram_quantile(0.99, sum by (le) (rate("
                        "webhook_ingest_to_store_seconds_bucket[$__rate_interval])))",
                        "p99",
                    )
                ],
                unit="s",
                description="inbox-api's webhook_ingest_to_store_seconds: from ingest's "
                "receipt of the body to its store write.",
            ),
            panel(
                "Consumers paused (store unreachable), crashes, redeliveries",
                [
                    ("sum by (queue) (consumer_paused)", "paused {{queue}}"),
                    (
                        "sum by (queue) (rate(consumer_crashes_total[$__rate_interval]))",
                        "crashes/s {{queue}}",
                    ),
                    (
                        "sum by (queue) (rate(consumer_redeliveries_total[$__rate_interval]))",
                        "redeliveries/s {{queue}}",
                    ),
                ],
            ),
        ],
    )


def services() -> dict[str, Any]:
    job = 'job="$job"'
    return dashboard(
        "inbox-services",
        "Inbox: services (RED)",
        "Rate, errors and duration of one service's HTTP routes, and its replicas.",
        [
            row("$job"),
            panel(
                "Requests by route",
                [
                    (
                        f"sum by (route) (rate(http_requests_total{{{job}}}[$__rate_interval]))",
                        "{{route}}",
                    )
                ],
                unit="reqps",
            ),
            panel(
                "Errors by route and status (4xx, 5xx)",
                [
                    (
                        "sum by (route, status) (rate(http_requests_total"
                        f'{{{job}, status=~"[45].."}}[$__rate_interval]))',
                        "{{status}} {{route}}",
                    )
                ],
                unit="reqps",
            ),
            panel(
                "Error ratio (5xx)",
                [
                    (
                        f'sum(rate(http_requests_total{{{job}, status=~"5.."}}[$__rate_interval]))'
                        f" / sum(rate(http_requests_total{{{job}}}[$__rate_interval]))",
                        "5xx",
                    )
                ],
                unit="percentunit",
            ),
            panel(
                "Duration p99 by route",
                [
                    (
                        f"histogram_quantile(0.99, sum by (route, le) (rate(http_request_duration_"
                        f"seconds_bucket{{{job}}}[$__rate_interval])))",
                        "{{route}}",
                    )
                ],
                unit="s",
            ),
            panel(
                "Duration p50 by route",
                [
                    (
                        f"histogram_quantile(0.5, sum by (route, le) (rate(http_request_duration_"
                        f"seconds_bucket{{{job}}}[$__rate_interval])))",
                        "{{route}}",
                    )
                ],
                unit="s",
            ),
            panel(
                "Replicas up",
                [(f"sum(up{{{job}}})", "up"), (f"count(up{{{job}}})", "targets")],
            ),
            row("Consumers of $job"),
            panel(
                "Messages by queue and outcome",
                [
                    (
                        f"sum by (queue, outcome) (rate(consumer_messages_total{{{job}}}"
                        "[$__rate_interval]))",
                        "{{queue}} {{outcome}}",
                    )
                ],
                unit="ops",
            ),
            panel(
                "Delivery → settled p99 by queue",
                [
                    (
                        "histogram_quantile(0.99, sum by (queue, le) (rate("
                        f"consumer_handle_seconds_bucket{{{job}}}[$__rate_interval])))",
                        "{{queue}}",
                    )
                ],
                unit="s",
            ),
            panel(
                "Live updates (inbox-api)",
                [
                    ("sum(live_clients)", "WebSocket sessions"),
                    (
                        "sum(rate(live_events_delivered_total[$__rate_interval]))",
                        "events delivered/s",
                    ),
                    (
                        "sum by (reason) (rate(live_events_dropped_total[$__rate_interval]))",
                        "dropped/s {{reason}}",
                    ),
                ],
            ),
        ],
        job=True,
    )


def outbound() -> dict[str, Any]:
    send_queue = 'queue=~"$ns\\\\.outbound\\\\.send"'
    return dashboard(
        "inbox-outbound",
        "Inbox: outbound sends and retries",
        "Agents' and campaigns' sends through the Cloud API, their delay tiers, the "
        "retry worker, and maintenance's tasks and channel statuses.",
        [
            row("Sender (inbox-api)"),
            panel(
                "Send jobs by outcome",
                [
                    (
                        f"sum by (outcome) (rate(consumer_messages_total{{{send_queue}}}"
                        "[$__rate_interval]))",
                        "{{outcome}}",
                    )
                ],
                unit="ops",
                description="acked = done (sent, failed for good, or held); delayed = waiting "
                "in a retry tier (rate limit, 5xx, timeout, waiting for a status).",
            ),
            panel(
                "Send job duration (Cloud API call included)",
                [
                    (
                        f"histogram_quantile(0.99, sum by (le) (rate(consumer_handle_seconds_bucket"
                        f"{{{send_queue}}}[$__rate_interval])))",
                        "p99",
                    ),
                    (
                        f"histogram_quantile(0.5, sum by (le) (rate(consumer_handle_seconds_bucket"
                        f"{{{send_queue}}}[$__rate_interval])))",
                        "p50",
                    ),
                ],
                unit="s",
            ),
            row("Retries (delay tiers → retry-worker)"),
            panel(
                "Messages waiting per delay tier and due",
                [
                    ('max by (tier) (retry_tier_messages{job="retry-worker"})', "{{tier}}"),
                ],
                description="As the retry-worker last saw them (RabbitMQ's per-queue series "
                "show the same on the broker's dashboards).",
            ),
            panel(
                "Due jobs by outcome (requeued to their queue, dropped, dead-lettered, parked)",
                [("sum by (outcome) (rate(retry_jobs_total[$__rate_interval]))", "{{outcome}}")],
                unit="ops",
            ),
            panel(
                "Passes by result (consecutive failures page P1)",
                [
                    (
                        "sum by (result) (rate(retry_passes_total[$__rate_interval]))",
                        "{{result}}",
                    )
                ],
                unit="ops",
            ),
            panel(
                "Job lock age since the last heartbeat (stale after 30 s)",
                [
                    (
                        'max by (exported_job) (job_lock_age_seconds{job="retry-worker"})',
                        "{{exported_job}}",
                    )
                ],
                unit="s",
            ),
            panel(
                "Since the last successful run",
                [
                    (
                        "time() - max by (job, exported_job) (job_last_success_timestamp_seconds)",
                        "{{job}} {{exported_job}}",
                    )
                ],
                unit="s",
            ),
            row("Maintenance (scheduled tasks, channels)"),
            panel(
                "Task runs in the last hour by task and result",
                [
                    (
                        "sum by (task, result) (increase(maintenance_task_runs_total[1h]))",
                        "{{task}} {{result}}",
                    )
                ],
                description="All replicas together. skipped = another replica held the "
                "task's lock; unreachable = the store did not answer. The alert "
                "MaintenanceJobOverdue watches each task's last success.",
            ),
            panel(
                "Task duration p99 by task (last hour)",
                [
                    (
                        "histogram_quantile(0.99, sum by (task, le) (rate("
                        "maintenance_task_seconds_bucket[1h])))",
                        "{{task}}",
                    )
                ],
                unit="s",
            ),
            panel(
                "Tasks published by the schedule in the last hour",
                [
                    (
                        "sum by (task) (increase(maintenance_schedule_published_total[1h]))",
                        "{{task}}",
                    )
                ],
                description="One message per task and period across all replicas; with the "
                "default MAINTENANCE_SCHEDULE, stale_locks and alerts 60 an hour, stuck_sends "
                "and dead_letters 12, channel_health 1, retention 1 a day.",
            ),
            panel(
                "Channels by status",
                [('max by (status) (channels_by_status{job="maintenance"})', "{{status}}")],
                description="Counted from the store by every maintenance replica: max, not "
                "sum. Disconnected channels raise ChannelDisconnected (P2) and, from 3, "
                "ManyChannelsDisconnected (P1).",
            ),
            row("Cloud API sandbox (development only)"),
            panel(
                "Sandbox sends by outcome and code",
                [
                    (
                        "sum by (outcome, code) (rate(sandbox_sends_total[$__rate_interval]))",
                        "{{outcome}} {{code}}",
                    )
                ],
                unit="ops",
            ),
            panel(
                "Sandbox webhooks to the ingest",
                [
                    (
                        "sum by (kind, outcome) (rate(sandbox_webhooks_total[$__rate_interval]))",
                        "{{kind}} {{outcome}}",
                    )
                ],
                unit="ops",
            ),
        ],
    )


DASHBOARDS = {
    "inbox-pipeline.json": pipeline,
    "inbox-services.json": services,
    "inbox-outbound.json": outbound,
}


def render() -> dict[str, str]:
    """Each dashboard's file name and its JSON text, as committed."""
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()}


if __name__ == "__main__":
    for name, text in render().items():
        (HERE / name).write_text(text)
        print(HERE / name)  # noqa: T201 - a command-line tool
