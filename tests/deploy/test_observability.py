"""The alert rules and dashboards name only metrics that exist, link to runbook sections that
exist and follow the runbook's severities; the dashboards are what their builder writes."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import yaml

# RabbitMQ's prometheus plugin (/metrics/per-object; deps/rabbitmq_prometheus in
# rabbitmq-server) and Prometheus' own series.
RABBITMQ = {
    "rabbitmq_queue_messages_ready",
    "rabbitmq_queue_messages",
    "rabbitmq_queue_consumers",
    "rabbitmq_queue_exchange_messages_published_total",
    "rabbitmq_queue_messages_acked_total",
}
PROMETHEUS = {"up"}
# Proposed here for alerts that no exported metric can serve yet (deploy/prometheus/rules
# says which service should export them).
# Names the rules or dashboards use before any service exports them (empty: all are real).
NOT_YET_EXPORTED: dict[str, str] = {}
SEVERITIES = {"P0", "P1", "P2", "P3"}
RUNBOOK_URL = re.compile(r"^\{\{ \$externalLabels\.runbook_base_url \}\}#([a-z0-9-]+)$")

_DEFINITION = re.compile(r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"([a-zA-Z_:][a-zA-Z0-9_:]*)\"")
_STRING = re.compile(r'"(?:\\.|[^"\\])*"')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "e"}


def exported_metrics(repo: Path) -> set[str]:
    """The series names the services' code exposes (a histogram's _bucket, _sum, _count)."""
    names = set()
    for path in [*repo.glob("libs/*/src/**/*.py"), *repo.glob("services/*/src/**/*.py")]:
        for kind, name in _DEFINITION.findall(path.read_text()):
            if kind == "Counter":
                names.add(name if name.endswith("_total") else f"{name}_total")
            elif kind in ("Histogram", "Summary"):
                names.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
            else:
                names.add(name)
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (a good-enough reading, not a parser:
    label matchers, strings, grouping clauses, ranges and function calls are skipped)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = _GROUPING.sub("", text)
    return {
        name
        for name in _IDENTIFIER.findall(text)
        if name not in _KEYWORDS and not name.startswith("__")
    }


def runbook_anchors(repo: Path) -> set[str]:
    """GitHub's anchors of docs/runbook.md's headings."""
    anchors = set()
    for line in (repo / "docs" / "runbook.md").read_text().splitlines():
        if match := re.match(r"^#{1,6}\s+(.*)$", line):
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def test_metric_reader_finds_names_and_skips_the_rest() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, job) (rate(http_request_duration_seconds_bucket"
        '{job="x", route=~"a.b"}[5m]))) > 0.5 and on (job) up{job="x"} == 0 unless '
        "sum without (instance) (consumer_paused offset 5m)"
    )
    assert metric_names(expr) == {"http_request_duration_seconds_bucket", "up", "consumer_paused"}


def test_every_metric_in_rules_and_dashboards_exists(
    repo: Path, queries: list[tuple[str, str]]
) -> None:
    known = exported_metrics(repo) | RABBITMQ | PROMETHEUS | set(NOT_YET_EXPORTED)
    unknown = {
        f"{source}: {name}"
        for source, expr in queries
        for name in metric_names(expr)
        if name not in known
    }
    assert not unknown, f"metrics that nothing exports: {sorted(unknown)}"
    assert len(queries) > 30


def test_not_yet_exported_names_do_not_shadow_real_ones(repo: Path) -> None:
    # Once a service exports one of them, it moves out of NOT_YET_EXPORTED (and the report of
    # what is missing shrinks): a stale entry would hide a renamed metric.
    exported = exported_metrics(repo)
    assert not exported & set(NOT_YET_EXPORTED), "remove these from NOT_YET_EXPORTED"


def test_every_alert_has_a_runbook_severity_and_a_runbook_section(
    repo: Path, rules: list[dict[str, Any]]
) -> None:
    anchors = runbook_anchors(repo)
    alerts = [r for r in rules if "alert" in r]
    assert len(alerts) >= 15
    for alert in alerts:
        name = alert["alert"]
        assert alert["labels"]["severity"] in SEVERITIES, name
        match = RUNBOOK_URL.match(alert["annotations"]["runbook_url"])
        assert match, f"{name}: runbook_url must be the base URL label plus a section anchor"
        assert match.group(1) in anchors, f"{name}: docs/runbook.md has no #{match.group(1)}"
        assert alert["annotations"].get("summary"), name


def test_the_alerts_the_runbook_needs_exist(rules: list[dict[str, Any]]) -> None:
    names = {r["alert"]: r["labels"]["severity"] for r in rules if "alert" in r}
    assert names["InboxServiceDown"] == "P0"
    assert names["StoreUnreachableConsumerPaused"] == "P0"
    for p1 in (
        "WebhookBadSignatureSpike",
        "WebhookPublishFailures",
        "RetryWorkerLockStale",
        "RetryWorkerConsecutiveFailures",
        "ManyChannelsDisconnected",
    ):
        assert names[p1] == "P1", p1
    for name in (
        "WebhookLatencyP99High",
        "QueueBacklogGrowing",
        "QueueWithoutConsumers",
        "DeadLettersPresent",
        "IngestToStoreLatencyP99High",
        "MaintenanceJobOverdue",
        "ChannelDisconnected",
    ):
        assert name in names


def test_prometheus_config_scrapes_every_service_and_names_the_runbook(repo: Path) -> None:
    config = yaml.safe_load((repo / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert config["global"]["external_labels"]["runbook_base_url"].startswith("https://")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    ports = {
        "webhook-ingest": 8080,
        "inbox-api": 8081,
        "retry-worker": 8082,
        "maintenance": 8083,
        "whatsapp-sandbox": 8090,
    }
    for service, port in ports.items():
        assert service in jobs, service
        targets = [f"{d['names'][0]}:{d['port']}" for d in jobs[service].get("dns_sd_configs", [])]
        targets += [t for c in jobs[service].get("static_configs", []) for t in c["targets"]]
        assert targets == [f"{service}:{port}"], service
    assert jobs["rabbitmq"]["metrics_path"] == "/metrics/per-object"
    # Scaled services are found by DNS, one target per replica.
    for scaled in ("webhook-ingest", "inbox-api"):
        assert jobs[scaled]["dns_sd_configs"][0]["names"] == [scaled]


def test_dashboards_are_what_the_builder_writes(
    repo: Path, dashboards: dict[str, dict[str, Any]]
) -> None:
    path = repo / "deploy" / "grafana" / "build_dashboards.py"
    spec = importlib.util.spec_from_file_location("build_dashboards", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rendered = module.render()
    assert set(rendered) == set(dashboards)
    for name, text in rendered.items():
        on_disk = (repo / "deploy" / "grafana" / "dashboards" / name).read_text()
        assert on_disk == text, f"{name} is stale: run python deploy/grafana/build_dashboards.py"


def test_dashboards_link_the_broker_and_store_dashboards(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    for name, board in dashboards.items():
        urls = " ".join(link.get("url", "") for link in board["links"])
        assert "dashboards/10991" in urls, name  # RabbitMQ-Overview
        assert "mongodb" in urls, name
        assert {"datasource", "ns"} <= {v["name"] for v in board["templating"]["list"]}
