"""docker-compose.yml beyond its schema: the start order, scaling, secrets, health checks, and
each service's environment accepted by that service's own settings class."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from inbox_common.broker.topology import Names

SCALED = ("webhook-ingest", "inbox-api")
# Every long-running service of services/ and the port it listens on.
LONG_RUNNING = {
    "webhook-ingest": "8080",
    "inbox-api": "8081",
    "retry-worker": "8082",
    "maintenance": "8083",
}
ONE_SHOTS = ("mongodb-init", "migrate")
# Distroless images without a shell or an HTTP client: no in-container health check.
NO_HEALTHCHECK = ("otel-collector", "jaeger")
# Variables that carry a secret (the broker's and the store's URLs carry passwords).
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASS$|KEYS?$|^RABBITMQ_URL$|^MONGODB_URL$")
_VARIABLE = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def _interpolate(value: str) -> str:
    """Compose's ${NAME:-default} with nothing set: the default."""
    return _VARIABLE.sub(lambda m: m.group(2) or "", value)


def _env_file(repo: Path, entry: Any) -> dict[str, str]:
    path = repo / _interpolate(entry["path"] if isinstance(entry, dict) else entry)
    assert path.is_file(), f"{path} is missing"
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def service_env(repo: Path, service: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in service.get("env_file", []):
        env.update(_env_file(repo, entry))
    env.update({k: _interpolate(str(v)) for k, v in (service.get("environment") or {}).items()})
    return env


def app_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services built from deploy/docker/Dockerfile, by their services/ folder."""
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("build", {}).get("dockerfile") == "deploy/docker/Dockerfile"
    }


def test_scaled_services_publish_no_host_port(compose: dict[str, Any]) -> None:
    for name in SCALED:
        service = compose["services"][name]
        assert "ports" not in service, f"{name} cannot scale with a fixed host port"
        assert "container_name" not in service, name
    proxy = compose["services"]["proxy"]
    assert {p.rsplit(":", 1)[-1] for p in proxy["ports"]} == {"8080", "8081"}


def test_everything_starts_after_the_migration(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["migrate"]["command"] == ["db-deploy"]
    assert services["migrate"]["depends_on"]["mongodb-init"]["condition"] == (
        "service_completed_successfully"
    )
    for name, service in app_services(compose).items():
        if name in ONE_SHOTS or name == "whatsapp-sandbox":
            continue
        needs = service["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully", name
        assert needs["rabbitmq"]["condition"] == "service_healthy", name
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"


def test_long_running_services_have_health_checks(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name in ONE_SHOTS or name in NO_HEALTHCHECK:
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"


def test_no_secret_is_written_in_the_compose_file(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                raise AssertionError(f"{name}: {key} belongs in an env file, not in compose")
            assert "@" not in str(value), f"{name}: {key} looks like a URL with credentials"
    for extension in (k for k in compose if k.startswith("x-")):
        assert not any(SECRET_NAME.search(k) for k in compose[extension] if k.isupper())


def test_services_connect_to_the_replica_set(repo: Path, compose: dict[str, Any]) -> None:
    env = service_env(repo, compose["services"]["inbox-api"])
    assert "replicaSet=rs0" in env["MONGODB_URL"]
    init = (repo / "deploy" / "compose" / "mongodb" / "replica-set.js").read_text()
    assert "rs.initiate" in init
    assert '"rs0"' in init


def test_queue_namespace_is_the_default_one(repo: Path, compose: dict[str, Any]) -> None:
    # KEDA's triggers and the dashboards' default $ns assume it; see deploy/README.md.
    env = service_env(repo, compose["services"]["inbox-api"])
    assert Names(env["AMQP_NAMESPACE"]).webhooks_queue == "wa.inbox.webhooks"


def _settings_class(folder: str, repo: Path) -> type[BaseSettings]:
    """The class the service's ``__main__`` runs with (``run(XSettings, create_app)``);
    ops-cli's ``db-deploy`` (the compose migration) reads ``OpsSettings``."""
    pyproject = (repo / "services" / folder / "pyproject.toml").read_text()
    module = re.search(r'module-name = "(\w+)"', pyproject)
    assert module, folder
    main = (repo / "services" / folder / "src" / module.group(1) / "__main__.py").read_text()
    runs = re.search(r"\brun\((\w+), create_app\)", main)
    name = runs.group(1) if runs else "OpsSettings"
    cls: type[BaseSettings] = getattr(importlib.import_module(f"{module.group(1)}.settings"), name)
    return cls


def test_each_service_accepts_its_compose_environment(
    repo: Path, compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    checked = []
    for name, service in app_services(compose).items():
        folder = service["build"]["args"]["SERVICE"]
        assert (repo / "services" / folder).is_dir(), f"{name}: no services/{folder}"
        cls = _settings_class(folder, repo)
        env = service_env(repo, service)
        with monkeypatch.context() as patch:
            for field in cls.model_fields:
                patch.delenv(field.upper(), raising=False)
                patch.delenv(field, raising=False)
            for key, value in env.items():
                patch.setenv(key, value)
            cls()  # raises naming the variable that is missing or wrong
        checked.append(name)
    assert set(LONG_RUNNING) | {"migrate", "whatsapp-sandbox"} <= set(checked)


def test_every_service_runs_and_is_probed_on_its_own_port(compose: dict[str, Any]) -> None:
    services = app_services(compose)
    assert set(LONG_RUNNING) <= set(services), "a service is missing from docker-compose.yml"
    for name, port in LONG_RUNNING.items():
        service = services[name]
        assert service["build"]["args"]["SERVICE"] == name
        assert service["expose"] == [port], name
        variable = f"{name.upper().replace('-', '_')}_PORT"
        assert service["environment"][variable] == port, f"{name}: {variable}"
        # Readiness, as the README says: /api/health (probe.py's `health`).
        assert service["healthcheck"]["test"][-1] == "health", name


def test_cloud_api_callers_use_the_sandbox_and_can_decrypt_tokens(
    repo: Path, compose: dict[str, Any]
) -> None:
    # inbox-api sends, maintenance's channel_health checks tokens: never Meta from compose.
    for name in ("inbox-api", "maintenance"):
        env = service_env(repo, compose["services"][name])
        assert env["WHATSAPP_API_BASE_URL"] == "http://whatsapp-sandbox:8090", name
        assert env["CHANNEL_TOKEN_KEYS"], name
        assert "replicaSet=rs0" in env["MONGODB_URL"], name
