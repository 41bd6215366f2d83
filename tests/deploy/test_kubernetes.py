"""The rendered Kubernetes overlays keep the production rules that a schema cannot check:
sizes and probes on every container, secrets only referenced, the migration before the
rollout, an autoscaler for every queue consumer, and one public path per audience."""

from __future__ import annotations

from typing import Any

from inbox_common.broker.topology import Names

SECRET_VARIABLES = {
    "RABBITMQ_URL",
    "MONGODB_URL",
    "WHATSAPP_WEBHOOK_SECRET",
    "WHATSAPP_WEBHOOK_VERIFY_TOKEN",
    "CHANNEL_TOKEN_KEYS",
    "JOBS_API_TOKEN",
}


def _kind(resources: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in resources if r["kind"] == kind}


def test_every_container_is_sized_and_probed(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay in ("dev", "prod"):
        for name, deployment in _kind(rendered[overlay], "Deployment").items():
            pod = deployment["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True, name
            for container in pod["containers"] + pod.get("initContainers", []):
                resources = container["resources"]
                for side in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(resources[side]) or (
                        side == "limits" and "memory" in resources[side]
                    ), f"{overlay} {name}/{container['name']}: {side}"
                assert container["securityContext"]["allowPrivilegeEscalation"] is False
            main = pod["containers"][0]
            assert main["livenessProbe"]["httpGet"]["path"] == "/livez", name
            assert main["startupProbe"]["httpGet"]["path"] == "/livez", name
            assert main["readinessProbe"]["httpGet"]["path"] == "/api/health", name


def test_secrets_are_referenced_never_written(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    for overlay, resources in rendered.items():
        assert not _kind(resources, "Secret"), f"{overlay} writes a Secret"
        for r in resources:
            pod = r.get("spec", {}).get("template", {}).get("spec", {})
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                for env in container.get("env", []):
                    if env["name"] in SECRET_VARIABLES:
                        assert "secretKeyRef" in env.get("valueFrom", {}), (
                            f"{overlay} {r['metadata']['name']}: {env['name']} is inlined"
                        )


def test_the_migration_runs_before_the_services_that_use_the_store(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    prod = rendered["prod"]
    jobs = _kind(prod, "Job")
    assert len(jobs) == 1
    (name, job) = next(iter(jobs.items()))
    assert name == "inbox-db-deploy-0.1.0", "the Job is named after the release's image tag"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["db-deploy"]
    for deployment in _kind(prod, "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        env = {e["name"] for c in pod["containers"] for e in c.get("env", [])}
        waits = [c["name"] for c in pod.get("initContainers", [])]
        if "MONGODB_URL" in env:
            assert waits == ["wait-for-schema"], deployment["metadata"]["name"]


def test_every_queue_consumer_scales_on_its_queue(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    names = Names("wa")
    for overlay in ("dev", "prod"):
        resources = rendered[overlay]
        scaled = {
            (s["spec"]["scaleTargetRef"]["name"], t["metadata"]["queueName"])
            for s in _kind(resources, "ScaledObject").values()
            for t in s["spec"]["triggers"]
            if t["type"] == "rabbitmq"
        }
        assert ("inbox-api", names.webhooks_queue) in scaled
        assert ("inbox-api", names.outbound_queue) in scaled
        # KEDA owns inbox-api's HPA (CPU included): no second HPA fights it.
        hpas = {
            h["spec"]["scaleTargetRef"]["name"]
            for h in _kind(resources, "HorizontalPodAutoscaler").values()
        }
        assert hpas == {"webhook-ingest"}
        cpu = [
            t
            for t in _kind(resources, "ScaledObject")["inbox-api"]["spec"]["triggers"]
            if t["type"] == "cpu"
        ]
        assert cpu, "inbox-api scales on CPU too"


def test_only_ingest_and_api_are_reachable_from_outside(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    prod = rendered["prod"]
    backends = {
        (path["path"], path["backend"]["service"]["name"])
        for ingress in _kind(prod, "Ingress").values()
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert backends == {("/webhooks/whatsapp", "webhook-ingest"), ("/api", "inbox-api")}
    policies = _kind(prod, "NetworkPolicy")
    assert policies["inbox-default-deny"]["spec"]["policyTypes"] == ["Ingress", "Egress"]
    from_controller = {
        p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
        for p in policies.values()
        for rule in p["spec"].get("ingress", [])
        for peer in rule.get("from", [])
        if peer.get("namespaceSelector", {})
        .get("matchLabels", {})
        .get("kubernetes.io/metadata.name")
        == "ingress-nginx"
    }
    assert from_controller == {"webhook-ingest", "inbox-api"}
    assert "whatsapp-sandbox" not in _kind(prod, "Deployment"), "the sandbox is dev only"


def test_every_service_is_scraped_and_protected_from_disruption(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    prod = rendered["prod"]
    deployments = set(_kind(prod, "Deployment"))
    monitors = _kind(prod, "ServiceMonitor")
    assert set(monitors) == deployments
    for monitor in monitors.values():
        assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"
    assert set(_kind(prod, "PodDisruptionBudget")) == deployments
    assert set(_kind(prod, "Service")) == deployments
    # The clusters are the operators' (included in dev, existing ones in prod).
    assert not {"RabbitmqCluster", "MongoDBCommunity"} & {r["kind"] for r in prod}
    dev = rendered["dev"]
    assert {"RabbitmqCluster", "MongoDBCommunity"} <= {r["kind"] for r in dev}
    rabbit = _kind(dev, "ServiceMonitor")["inbox-rabbitmq"]
    assert rabbit["spec"]["endpoints"][0]["path"] == "/metrics/per-object"


SERVICES = {"webhook-ingest", "inbox-api", "retry-worker", "maintenance"}


def _selected(selector: dict[str, Any]) -> set[str]:
    """The app.kubernetes.io/name values a podSelector picks (matchLabels, or an ``In``
    expression); empty when it selects by another label."""
    key = "app.kubernetes.io/name"
    labels = selector.get("matchLabels", {})
    names = {labels[key]} if key in labels else set()
    for expression in selector.get("matchExpressions", []):
        if expression["key"] == key and expression["operator"] == "In":
            names |= set(expression["values"])
    return names


def test_every_service_is_deployed(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert set(_kind(rendered["prod"], "Deployment")) == SERVICES
    assert set(_kind(rendered["dev"], "Deployment")) == SERVICES | {"whatsapp-sandbox"}
    for overlay in ("dev", "prod"):
        for name, deployment in _kind(rendered[overlay], "Deployment").items():
            image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
            assert f"/{name}:" in image or image.startswith(f"{name}:"), f"{overlay} {name}"
            tag = image.rsplit(":", 1)[1]
            assert tag == ("0.1.0" if overlay == "prod" else "dev"), f"{overlay} {name}: {image}"


def test_only_the_cloud_api_callers_may_open_https(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    # inbox-api sends; maintenance's channel_health checks each channel's token.
    for overlay in ("dev", "prod"):
        https = set()
        for policy in _kind(rendered[overlay], "NetworkPolicy").values():
            for rule in policy["spec"].get("egress", []):
                if any(p.get("port") == 443 for p in rule.get("ports", [])):
                    selected = _selected(policy["spec"]["podSelector"])
                    assert selected, f"{policy['metadata']['name']} opens HTTPS to every pod"
                    https |= selected
        assert https == {"inbox-api", "maintenance"}, overlay
    # In dev both call the sandbox instead.
    to_sandbox = _kind(rendered["dev"], "NetworkPolicy")["services-to-sandbox"]
    assert _selected(to_sandbox["spec"]["podSelector"]) == {"inbox-api", "maintenance"}


def test_maintenance_has_what_its_tasks_need(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    prod = rendered["prod"]
    deployment = _kind(prod, "Deployment")["maintenance"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["MAINTENANCE_PORT"]["value"] == "8083"
    assert container["ports"] == [{"name": "http", "containerPort": 8083}]
    for variable in ("RABBITMQ_URL", "MONGODB_URL", "CHANNEL_TOKEN_KEYS"):
        assert "secretKeyRef" in env[variable]["valueFrom"], variable
    assert "JOBS_API_TOKEN" not in env, "maintenance serves no jobs API"
    (config,) = (c for c in _kind(prod, "ConfigMap").values())
    assert {"configMapRef": {"name": config["metadata"]["name"]}} in container["envFrom"]
    assert config["data"]["WHATSAPP_API_BASE_URL"] == "https://graph.facebook.com"
    # Two replicas in prod; no autoscaler (its tasks run under locks, one at a time).
    assert deployment["spec"]["replicas"] == 2
    scaled = {
        r["spec"]["scaleTargetRef"]["name"]
        for r in prod
        if r["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")
    }
    assert "maintenance" not in scaled
    service = _kind(prod, "Service")["maintenance"]
    assert service["spec"]["ports"][0]["port"] == 8083
