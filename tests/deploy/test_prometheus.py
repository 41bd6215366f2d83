"""A real Prometheus (Debian's binary) scrapes the services running as processes, with the
project's scrape config and rules: every target is up, every rule evaluates without error,
and every expression of the rules and the dashboards runs through the HTTP API.

RabbitMQ's target is left out: the machine's shared broker has no prometheus plugin, and
enabling one there would change a broker the suite only ever uses. Its series are covered by
`promtool test rules` (deploy/prometheus/tests) with synthetic input.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml

from inbox_common.local.ports import free_port
from inbox_common.local.processes import ServiceProcess, wait_http
from inbox_common.store.client import create_client
from inbox_common.store.migrations import apply_migrations
from inbox_common.store.token_cipher import TokenCipher
from inbox_common.whatsapp.signature import SIGNATURE_HEADER, sign
from inbox_sandbox import payloads
from inbox_testkit import backends

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

SECRET = "deploy-secret"
# service folder's job name → (module, port variable)
SERVICES = {
    "webhook-ingest": ("inbox_ingest", "WEBHOOK_INGEST_PORT"),
    "inbox-api": ("inbox_api", "INBOX_API_PORT"),
    "retry-worker": ("inbox_retry", "RETRY_WORKER_PORT"),
    "maintenance": ("inbox_maintenance", "MAINTENANCE_PORT"),
    "whatsapp-sandbox": ("inbox_sandbox", "WHATSAPP_SANDBOX_PORT"),
}
NOT_HERE = {"rabbitmq"}


def _scrape_config(repo: Path, ports: dict[str, int], prometheus_port: int) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with each job's discovery pointed at the processes."""
    config: dict[str, Any] = yaml.safe_load(
        (repo / "deploy" / "prometheus" / "prometheus.yml").read_text()
    )
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str(repo / "deploy" / "prometheus" / "rules" / "*.yml")]
    ports = {**ports, "prometheus": prometheus_port}
    jobs = []
    for job in config["scrape_configs"]:
        name = job["job_name"]
        assert name in ports or name in NOT_HERE, f"the test does not start {name}"
        if name in ports:
            job.pop("dns_sd_configs", None)
            job["static_configs"] = [{"targets": [f"127.0.0.1:{ports[name]}"]}]
            jobs.append(job)
    config["scrape_configs"] = jobs
    return config


def _instant(expr: str, namespace: str) -> str:
    """A dashboard's query with Grafana's variables filled in."""
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("$ns", namespace)
        .replace("$job", "inbox-api")
    )


@pytest.fixture
async def stack(
    repo: Path,
    tmp_path: Path,
    amqp_url: str,
    mongo_url: str,
    mongo_db_name: str,
    amqp_namespace: backends.AmqpNamespace,
) -> AsyncIterator[dict[str, str]]:
    """The base URL of each started job: the services and ``prometheus``."""
    search = os.pathsep.join([str(repo / ".tools" / "bin"), os.environ.get("PATH", "")])
    binary = shutil.which("prometheus", path=search)
    assert binary, "Debian's prometheus is missing (scripts/bootstrap.sh installs it)"
    amqp_namespace.track_topology()
    client = create_client(mongo_url, app_name="deploy-tests")
    await apply_migrations(client[mongo_db_name])
    await client.close()

    started = {job: spec for job, spec in SERVICES.items() if importlib.util.find_spec(spec[0])}
    ports = {job: free_port() for job in started}
    env = {
        **os.environ,
        "RABBITMQ_URL": amqp_url,
        "MONGODB_URL": mongo_url,
        "MONGODB_DB": mongo_db_name,
        "AMQP_NAMESPACE": amqp_namespace.name,
        "WHATSAPP_WEBHOOK_SECRET": SECRET,
        "WHATSAPP_WEBHOOK_VERIFY_TOKEN": "deploy-verify",
        "CHANNEL_TOKEN_KEYS": TokenCipher.new_key(),
        "JOBS_API_TOKEN": "deploy-jobs-token",
        "HTTP_HOST": "127.0.0.1",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "WARNING",
        **{variable: str(ports[job]) for job, (_, variable) in started.items()},
    }
    if "whatsapp-sandbox" in ports:
        env["WHATSAPP_API_BASE_URL"] = f"http://127.0.0.1:{ports['whatsapp-sandbox']}"
        env["SANDBOX_WEBHOOK_URL"] = f"http://127.0.0.1:{ports['webhook-ingest']}/webhooks/whatsapp"
    logs: list[str] = []
    children = {
        job: ServiceProcess(
            job,
            [sys.executable, "-m", module],
            env=env,
            sink=lambda name, line: logs.append(f"{name}: {line}"),
        )
        for job, (module, _) in started.items()
    }
    prometheus_port = free_port()
    config_file = tmp_path / "prometheus.yml"
    config_file.write_bytes(orjson.dumps(_scrape_config(repo, ports, prometheus_port)))
    children["prometheus"] = ServiceProcess(
        "prometheus",
        [
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
            "--log.level=warn",
        ],
        env={"PATH": os.environ.get("PATH", "")},
        sink=lambda name, line: logs.append(f"{name}: {line}"),
    )
    try:
        await asyncio.gather(*(child.start() for child in children.values()))
        await asyncio.gather(
            *(
                wait_http(f"http://127.0.0.1:{ports[job]}/api/health", timeout=30, process=child)
                for job, child in children.items()
                if job in ports
            ),
            wait_http(
                f"http://127.0.0.1:{prometheus_port}/-/ready",
                timeout=30,
                process=children["prometheus"],
            ),
        )
        yield {
            job: f"http://127.0.0.1:{port}"
            for job, port in {**ports, "prometheus": prometheus_port}.items()
        }
    except BaseException:
        print("\n".join(logs[-60:]))
        raise
    finally:
        await asyncio.gather(*(child.stop() for child in children.values()))


async def _get(session: aiohttp.ClientSession, url: str, **params: str) -> Any:
    async with session.get(url, params=params) as response:
        return await response.json()


async def _until(check: Any, what: str, timeout: float = 30.0) -> Any:  # noqa: ASYNC109
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        ok, detail = await check()
        if ok:
            return detail
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} within {timeout:g}s: {detail}")
        await asyncio.sleep(0.5)


async def test_prometheus_scrapes_every_service_and_runs_every_query(
    stack: dict[str, str], amqp_namespace: backends.AmqpNamespace, queries: list[tuple[str, str]]
) -> None:
    prometheus = stack["prometheus"]
    async with aiohttp.ClientSession() as session:
        # Some traffic, so the histograms have samples: a signed webhook and a bad signature.
        body = orjson.dumps(payloads.text_webhook("100000000000001", "15551234567", "Ana", "hi"))
        for signature in (sign(SECRET.encode(), body), "sha256=" + "0" * 64):
            async with session.post(
                f"{stack['webhook-ingest']}/webhooks/whatsapp",
                data=body,
                headers={SIGNATURE_HEADER: signature, "Content-Type": "application/json"},
            ) as response:
                assert response.status in (200, 401)

        async def targets_up() -> tuple[bool, Any]:
            data = (await _get(session, f"{prometheus}/api/v1/targets"))["data"]
            health = {t["labels"]["job"]: t["health"] for t in data["activeTargets"]}
            return bool(health) and set(health.values()) == {"up"}, health

        health = await _until(targets_up, "every target up")
        assert set(health) == set(stack)
        assert set(SERVICES) | {"prometheus"} <= set(health)

        async def rules_evaluated() -> tuple[bool, Any]:
            groups = (await _get(session, f"{prometheus}/api/v1/rules"))["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            pending = [r["name"] for r in rules if r["lastEvaluation"].startswith("0001")]
            broken = {r["name"]: r.get("lastError") for r in rules if r["health"] == "err"}
            return bool(rules) and not pending and not broken, (pending, broken, len(rules))

        await _until(rules_evaluated, "every rule evaluated without error")

        failed = {}
        for source, expr in queries:
            query = _instant(expr, amqp_namespace.name)
            answer = await _get(session, f"{prometheus}/api/v1/query", query=query)
            if answer["status"] != "success":
                failed[source] = f"{query}: {answer.get('error')}"
        assert not failed, failed

        # The series the pipeline panels rest on are really there.
        answer = await _get(
            session, f"{prometheus}/api/v1/query", query="sum(webhook_requests_total)"
        )
        assert answer["data"]["result"], "webhook-ingest's counters were not scraped"

        # maintenance's schedule published its tasks at start, and its consumer ran them: the
        # path from the schedule through <ns>.maintenance.tasks to a task, as deployed.
        async def tasks_ran() -> tuple[bool, Any]:
            answer = await _get(
                session,
                f"{prometheus}/api/v1/query",
                query='sum by (task) (maintenance_task_runs_total{job="maintenance", result="ok"})'
                " > 0",
            )
            ran = {r["metric"]["task"] for r in answer["data"]["result"]}
            return {"stale_locks", "alerts"} <= ran, answer["data"]["result"]

        await _until(tasks_ran, "maintenance's scheduled tasks ran and were scraped")
