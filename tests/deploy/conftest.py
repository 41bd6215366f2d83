"""What the deploy tests read: the compose file, the rendered Kubernetes overlays, the alert
rules and the dashboards' queries, loaded once per session."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = ("dev", "prod")
LABEL_VALUES = re.compile(r"label_values\((\w+),\s*(\w+)\)")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


@pytest.fixture(scope="session")
def rules() -> list[dict[str, Any]]:
    """Every rule of deploy/prometheus/rules, with its group's name under ``group``."""
    found: list[dict[str, Any]] = []
    for path in sorted((DEPLOY / "prometheus" / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            found.extend({**rule, "group": group["name"]} for rule in group["rules"])
    return found


@pytest.fixture(scope="session")
def dashboards() -> dict[str, dict[str, Any]]:
    return {
        path.name: json.loads(path.read_text())
        for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
    }


@pytest.fixture(scope="session")
def queries(
    rules: list[dict[str, Any]], dashboards: dict[str, dict[str, Any]]
) -> list[tuple[str, str]]:
    """Every PromQL expression of the rules and the dashboards (Grafana's variables left in),
    with where it is used: ``(source, expr)``."""
    found = [(f"rule {r.get('alert') or r.get('record')}", r["expr"]) for r in rules]
    for name, board in dashboards.items():
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                found.append((f"{name}: {panel['title']}", target["expr"]))
        for variable in board["templating"]["list"]:
            # Grafana's label_values(metric, label) is, in PromQL, the label's values.
            if match := LABEL_VALUES.fullmatch(variable.get("definition", "")):
                metric, label = match.groups()
                expr = f"group by ({label}) ({metric})"
                found.append((f"{name}: ${variable['name']}", expr))
    return found


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Each overlay's resources, as deploy/k8s/render.sh rendered them (``dev``, ``prod``)."""
    return {
        overlay: [
            doc
            for doc in yaml.safe_load_all(
                (DEPLOY / "k8s" / "rendered" / f"{overlay}.yaml").read_text()
            )
            if doc
        ]
        for overlay in OVERLAYS
    }
