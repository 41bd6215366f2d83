"""``inbox-ops healthcheck``: every service's /api/health, asked concurrently under a deadline;
exit 0 when all are ok, 1 when one is degraded, 2 when one is down or does not answer.

The services' HTTP surface is stood in for by aiohttp servers answering health reports as
``inbox_common.health`` serves them; one test reads the real webhook-ingest's."""

from __future__ import annotations

import time

import orjson
import pytest

from inbox_ops.healthcheck import check_services, health_url, healthcheck, parse_overrides
from tests.ops_cli.conftest import (
    SERVICES,
    HealthStandIn,
    inbox_ops,
    nowhere,
    report,
    targets,
)

pytestmark = pytest.mark.integration


async def test_all_ok_exits_0_with_a_row_per_service(
    stand_ins: dict[str, HealthStandIn], ingest_url: str
) -> None:
    urls = targets(stand_ins)
    # The real webhook-ingest, connected to the test's broker, in place of its stand-in.
    urls["webhook-ingest"] = ingest_url.removesuffix("/webhooks/whatsapp")
    status, text = await healthcheck(urls, seconds=5, as_json=False)
    assert status == 0, text
    lines = text.splitlines()
    assert lines[0].split() == ["SERVICE", "STATUS", "HTTP", "LATENCY", "FAILING", "CHECKS"]
    rows = {line.split()[0]: line.split() for line in lines[1:5]}
    assert set(rows) == set(SERVICES)
    assert all(row[1:3] == ["ok", "200"] and row[-1] == "-" for row in rows.values())
    assert lines[-1] == "overall: ok"


async def test_a_degraded_service_exits_1_and_names_its_failing_check(
    stand_ins: dict[str, HealthStandIn],
) -> None:
    stand_ins["inbox-api"].body = report(
        "degraded",
        mongodb=("ok", None),
        rabbitmq=("down", "not connected to RabbitMQ; reconnecting"),
    )
    status, text = await healthcheck(targets(stand_ins), seconds=5, as_json=False)
    assert status == 1, text
    row = next(line for line in text.splitlines() if line.startswith("inbox-api"))
    assert "degraded" in row
    assert "rabbitmq=down (not connected to RabbitMQ; reconnecting)" in row
    assert "mongodb" not in row  # only the failing checks
    assert text.endswith("overall: degraded")


async def test_a_down_service_exits_2_over_a_degraded_one(
    stand_ins: dict[str, HealthStandIn],
) -> None:
    stand_ins["retry-worker"].body = report("degraded", campaign_retry_job=("degraded", "3 fails"))
    stand_ins["webhook-ingest"].body = report("down", rabbitmq=("down", "not connected"))
    stand_ins["webhook-ingest"].http_status = 503
    status, text = await healthcheck(targets(stand_ins), seconds=5, as_json=True)
    assert status == 2
    doc = orjson.loads(text)
    assert doc["status"] == "down"
    by_service = {s["service"]: s for s in doc["services"]}
    assert list(by_service) == list(SERVICES)
    ingest = by_service["webhook-ingest"]
    assert (ingest["status"], ingest["http_status"]) == ("down", 503)
    assert ingest["failing_checks"] == {
        "rabbitmq": {"status": "down", "detail": "not connected", "latency_ms": 1.0}
    }
    assert by_service["retry-worker"]["status"] == "degraded"
    assert by_service["maintenance"]["failing_checks"] == {}
    assert all(isinstance(s["latency_ms"], float) for s in doc["services"])


async def test_an_unreachable_service_is_down_with_the_connection_error(
    stand_ins: dict[str, HealthStandIn],
) -> None:
    urls = targets(stand_ins) | {"maintenance": nowhere()}
    status, text = await healthcheck(urls, seconds=5, as_json=False)
    assert status == 2
    row = next(line for line in text.splitlines() if line.startswith("maintenance"))
    assert "down" in row
    assert "unreachable: ClientConnectorError" in row


async def test_a_hung_service_times_out_and_the_calls_run_concurrently(
    stand_ins: dict[str, HealthStandIn],
) -> None:
    for stand_in in stand_ins.values():
        stand_in.hold = True
    started = time.monotonic()
    results = await check_services(targets(stand_ins), seconds=0.5)
    elapsed = time.monotonic() - started
    assert [r.status.value for r in results] == ["down"] * 4
    assert {r.error for r in results} == {"unreachable: no answer in 0.5s"}
    # Four calls of 0.5 s each, at once: well under the 2 s they would take one by one.
    assert elapsed < 1.5, elapsed


async def test_an_answer_that_is_no_health_report_is_down(
    stand_ins: dict[str, HealthStandIn],
) -> None:
    stand_ins["inbox-api"].body = "<html>502 Bad Gateway</html>"
    stand_ins["inbox-api"].http_status = 502
    [result] = await check_services({"inbox-api": stand_ins["inbox-api"].url}, seconds=5)
    assert result.status.value == "down"
    assert result.http_status == 502
    assert result.error is not None
    assert result.error.startswith("HTTP 502, not a health report")


def test_urls_and_overrides() -> None:
    assert health_url("http://h:8080") == "http://h:8080/api/health"
    assert health_url("http://h:8080/") == "http://h:8080/api/health"
    assert health_url("http://h/api/health") == "http://h/api/health"
    assert parse_overrides(["inbox-api=http://a:1"], SERVICES) == {"inbox-api": "http://a:1"}
    with pytest.raises(ValueError, match="SERVICE one of webhook-ingest, inbox-api"):
        parse_overrides(["inbox_api=http://a:1"], SERVICES)
    with pytest.raises(ValueError, match="must start with http:// or https://"):
        parse_overrides(["inbox-api=a:1"], SERVICES)


async def test_the_command_reads_its_urls_from_the_environment_and_flags(
    stand_ins: dict[str, HealthStandIn],
) -> None:
    stand_ins["maintenance"].body = report("degraded", maintenance_tasks=("degraded", "late"))
    env = {
        "WEBHOOK_INGEST_URL": stand_ins["webhook-ingest"].url,
        "INBOX_API_URL": stand_ins["inbox-api"].url,
        "RETRY_WORKER_URL": nowhere(),  # overridden by --url below
        "MAINTENANCE_URL": stand_ins["maintenance"].url,
    }
    override = f"retry-worker={stand_ins['retry-worker'].url}"
    degraded = await inbox_ops("healthcheck", "--url", override, env=env)
    assert degraded.returncode == 1, degraded.stderr
    assert "maintenance_tasks=degraded (late)" in degraded.stdout
    assert "overall: degraded" in degraded.stdout

    unreachable = await inbox_ops("healthcheck", "--json", env=env)
    assert unreachable.returncode == 2
    assert orjson.loads(unreachable.stdout)["status"] == "down"

    typo = await inbox_ops("healthcheck", "--url", "inbox_api=http://x", env=env)
    assert typo.returncode == 2
    assert "expected SERVICE=URL with SERVICE one of" in typo.stderr
