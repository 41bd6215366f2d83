"""Fixtures of the maintenance tests: the tasks' settings over the test's broker, store and
namespace, a runner of every task, ledger entries and outbound messages written as the
services write them, and the alerts as they stand."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId
from prometheus_client import CollectorRegistry

from inbox_common.alerts import ACTIVE, AlertKind
from inbox_common.broker.connection import Broker
from inbox_common.broker.topology import Names
from inbox_common.contracts.delivery import WebhookDelivery
from inbox_common.store.client import Database, Document
from inbox_common.store.collections import ALERTS
from inbox_common.store.ledger import Fate, Ledger
from inbox_common.store.outbound import Outbound, local_wamid
from inbox_maintenance import metrics
from inbox_maintenance.metrics import MaintenanceMetrics
from inbox_maintenance.service import Maintenance, Resources, TaskOutcome, build_maintenance
from inbox_maintenance.settings import MaintenanceTaskSettings


def settings_values(
    amqp_url: str, names: Names, mongo_url: str, mongo_db_name: str
) -> dict[str, Any]:
    return {
        "rabbitmq_url": amqp_url,
        "amqp_namespace": names.namespace,
        "mongodb_url": mongo_url,
        "mongodb_db": mongo_db_name,
        "mongodb_timeout_ms": 3000,
        "log_format": "console",
        "maintenance_retention_pause_seconds": 0,
        "whatsapp_api_timeout_seconds": 5,
    }


@pytest.fixture
def task_settings(
    amqp_url: str, names: Names, mongo_url: str, mongo_db_name: str
) -> MaintenanceTaskSettings:
    return MaintenanceTaskSettings.model_validate(
        settings_values(amqp_url, names, mongo_url, mongo_db_name)
    )


def new_runner(
    settings: MaintenanceTaskSettings, db: Database, names: Names, **resources: Any
) -> Maintenance:
    return build_maintenance(
        settings, Resources(db, names, **resources), MaintenanceMetrics(CollectorRegistry())
    )


@pytest.fixture
def runner(
    task_settings: MaintenanceTaskSettings, db: Database, names: Names, broker: Broker
) -> Maintenance:
    """Every task over the test's store and broker (no Cloud API, no health URLs)."""
    return new_runner(task_settings, db, names, broker=broker)


async def run_ok(runner: Maintenance, task: str) -> TaskOutcome:
    outcome = await runner.run(task, trigger="test")
    assert outcome.status == metrics.OK, outcome.line()
    return outcome


async def active(db: Database, kind: AlertKind) -> list[Document]:
    """The open and acknowledged alerts of ``kind``, oldest first."""
    query = {"kind": kind.value, "status": {"$in": list(ACTIVE)}}
    return await db[ALERTS].find(query).sort("_id", 1).to_list()


async def ledger_event(
    db: Database,
    *,
    status: str,
    age: timedelta,
    numbers: list[str] | None = None,
    error: dict[str, Any] | None = None,
) -> str:
    """A ledger entry received ``age`` ago, as the consumer records one; its sha256."""
    body = f'{{"object":"whatsapp_business_account","n":"{ObjectId()}"}}'.encode()
    delivery = WebhookDelivery(
        sha256=hashlib.sha256(body).hexdigest(),
        request_id=ObjectId().__str__(),
        received_at=datetime.now(UTC) - age,
        body=body,
    )
    await Ledger(db).record([Fate(delivery, status, numbers or [], error)])
    return delivery.sha256


async def outbound_message(
    db: Database, *, tenant: str, send_state: str, **fields: Any
) -> ObjectId:
    """An outbound message as inbox-api stores one, in ``send_state``."""
    message_id = ObjectId()
    now = datetime.now(UTC)
    doc: Document = {
        "_id": message_id,
        "wamid": local_wamid(message_id),
        "conversation_id": ObjectId(),
        "channel_id": ObjectId(),
        "tenant": tenant,
        "direction": "outbound",
        "type": "text",
        "content": {"body": "Your order ships today"},
        "timestamp": now,
        "status": "pending",
        "status_rank": 0,
        "send_state": send_state,
        "attempts": 1,
        "created_at": now,
        **fields,
    }
    stored, _ = await Outbound(db).store(doc)
    return ObjectId(stored["_id"])


def process_env(settings: MaintenanceTaskSettings) -> dict[str, str]:
    return {
        "RABBITMQ_URL": settings.rabbitmq_url,
        "AMQP_NAMESPACE": settings.amqp_namespace,
        "MONGODB_URL": settings.mongodb_url,
        "MONGODB_DB": settings.mongodb_db,
        "MONGODB_TIMEOUT_MS": "2000",
        "LOG_FORMAT": "json",
        "MAINTENANCE_RETENTION_PAUSE_SECONDS": "0",
    }


def run_command(
    argv: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """A command of the workspace as a process (``python -m …``), with ``env`` added."""
    return subprocess.run(
        [sys.executable, *argv],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
