"""The workspace's services as the cases start them: webhook-ingest and inbox-api as
processes on free ports, in the run's broker namespace, logging warnings only.

Each ``start_*`` returns at once with the service and its base URL; the caller waits for its
health check (``wait_http``), so that several services can start side by side.
"""

from __future__ import annotations

import os
import secrets
from typing import TYPE_CHECKING

from inbox_common.broker.topology import Names
from inbox_common.local.ports import free_port
from inbox_testkit.bench.harness import Service, venv_command
from inbox_testkit.bench.store_state import DB_NAME

if TYPE_CHECKING:
    from inbox_testkit.bench.p1 import Context


def service_env(ctx: Context, names: Names) -> dict[str, str]:
    """What every service of a case reads: the broker, the case's namespace, loopback only,
    and warnings only (the logs cost CPU the case would measure)."""
    return {
        **os.environ,
        "AMQP_NAMESPACE": names.namespace,
        "RABBITMQ_URL": ctx.args.rabbitmq_url,
        "HTTP_HOST": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
    }


def start_ingest(
    ctx: Context, env: dict[str, str], *, log: str, cpu: int | None = None
) -> tuple[Service, str]:
    """webhook-ingest with ``env`` (see service_env), checking the run's webhook secret."""
    port = free_port()
    service = ctx.processes.start(
        "webhook-ingest",
        venv_command("webhook-ingest", "inbox_ingest"),
        cpu=cpu,
        log=ctx.workdir / log,
        env={
            **env,
            "WHATSAPP_WEBHOOK_SECRET": ctx.secret,
            "WHATSAPP_WEBHOOK_VERIFY_TOKEN": secrets.token_hex(8),
            "WEBHOOK_INGEST_PORT": str(port),
        },
    )
    return service, f"http://127.0.0.1:{port}"


def start_inbox_api(
    ctx: Context,
    env: dict[str, str],
    store_url: str,
    *,
    log: str,
    name: str = "inbox-api",
    db: str = DB_NAME,
    cpu: int | None = None,
    extra: dict[str, str] | None = None,
) -> tuple[Service, str]:
    """inbox-api with ``env`` (see service_env) on database ``db`` of ``store_url``;
    ``extra``: more of its settings."""
    port = free_port()
    service = ctx.processes.start(
        name,
        venv_command("inbox-api", "inbox_api"),
        cpu=cpu,
        log=ctx.workdir / log,
        env={
            **env,
            "MONGODB_URL": store_url,
            "MONGODB_DB": db,
            "INBOX_API_PORT": str(port),
            **(extra or {}),
        },
    )
    return service, f"http://127.0.0.1:{port}"
