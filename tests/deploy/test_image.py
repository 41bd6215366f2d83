"""What deploy/docker/Dockerfile does, without Docker: install one service from the lock
file alone (no dev tools, the workspace members as wheels) into a clean environment, and
start it from there, probed the way the image's HEALTHCHECK probes it."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from inbox_common.local.ports import free_port
from inbox_common.local.processes import ServiceProcess, wait_http
from inbox_testkit import backends

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


@pytest.fixture
def ingest_venv(repo: Path, tmp_path: Path) -> Path:
    """``uv sync --locked --no-dev --no-editable --package inbox-webhook-ingest`` into a new
    environment: the Dockerfile's build stage."""
    # Where the Makefile looks too: scripts/bootstrap.sh installs uv into .tools/bin.
    search = os.pathsep.join([str(repo / ".tools" / "bin"), os.environ.get("PATH", "")])
    uv = shutil.which("uv", path=search)
    assert uv, "uv is missing (scripts/bootstrap.sh installs it)"
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    subprocess.run(
        [
            uv,
            "sync",
            "--locked",
            "--no-dev",
            "--no-editable",
            "--package",
            "inbox-webhook-ingest",
            "--quiet",
        ],
        cwd=repo,
        env={**env, "UV_PROJECT_ENVIRONMENT": str(venv)},
        check=True,
        timeout=300,
    )
    return venv


async def _run(*argv: str, env: Mapping[str, str] | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 30)
    return await process.wait(), output.decode()


async def test_the_ingest_runs_from_a_locked_no_dev_install(
    repo: Path, ingest_venv: Path, amqp_url: str, amqp_namespace: backends.AmqpNamespace
) -> None:
    python = str(ingest_venv / "bin" / "python")
    probe_script = str(repo / "deploy" / "docker" / "probe.py")
    # The service and the shared library are installed, not linked to the checkout; no test
    # tool and no other service came along.
    status, found = await _run(python, "-c", "import inbox_ingest; print(inbox_ingest.__file__)")
    assert status == 0
    assert found.startswith(str(ingest_venv)), found
    for other in ("pytest", "inbox_testkit", "inbox_api"):
        status, _ = await _run(python, "-c", f"import {other}")
        assert status != 0, f"{other} is in the service's environment"

    amqp_namespace.track_topology()
    port = free_port()
    env = {
        "PATH": f"{ingest_venv / 'bin'}:/usr/bin:/bin",
        "RABBITMQ_URL": amqp_url,
        "AMQP_NAMESPACE": amqp_namespace.name,
        "WHATSAPP_WEBHOOK_SECRET": "image-secret",
        "WHATSAPP_WEBHOOK_VERIFY_TOKEN": "image-verify",
        "WEBHOOK_INGEST_PORT": str(port),
        "HTTP_HOST": "127.0.0.1",
        "INBOX_SERVICE": "webhook-ingest",
    }
    lines: list[str] = []
    # The image's entry point is this console script.
    service = ServiceProcess(
        "webhook-ingest",
        [str(ingest_venv / "bin" / "webhook-ingest")],
        env=env,
        sink=lambda _, line: lines.append(line),
    )
    await service.start()
    try:
        await wait_http(f"http://127.0.0.1:{port}/api/health", timeout=30, process=service)
        for which in ("livez", "health"):
            status, output = await _run(python, probe_script, which, env=env)
            assert status == 0, output
        # A port nothing listens on fails the probe.
        status, _ = await _run(python, probe_script, "livez", str(free_port()), env=env)
        assert status == 1
    except BaseException:
        print("\n".join(lines[-40:]), file=sys.stderr)
        raise
    finally:
        assert await service.stop() == 0
