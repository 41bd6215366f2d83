"""Fixtures of the maintenance tests: the tasks' settings over the test's broker, store and
namespace, a runner of every task, ledger entries and outbound messages written as the
services write them, and the alerts as they stand."""

from __future__ import annotations

import hashlib
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
from inbox_maintenance import metrics
from inbox_maintenance.metrics import MaintenanceMetrics
from inbox_maintenance.service import Maintenance, Resources, TaskOutcome, build_maintenance
from inbox_maintenance.settings import MaintenanceTaskSettings
from inbox_testkit import services
from inbox_testkit.services import run_command as run_command
from inbox_testkit.store import record_webhook, store_outbound


def settings_values(
    amqp_url: str, names: Names, mongo_url: str, mongo_db_name: str
) -> dict[str, Any]:
    return services.settings_values(amqp_url, names, mongo_url, mongo_db_name) | {
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
    await record_webhook(db, delivery, status=status, phone_number_ids=numbers or [], error=error)
    return delivery.sha256


async def outbound_message(
    db: Database, *, tenant: str, send_state: str, **fields: Any
) -> ObjectId:
    """An outbound message as inbox-api stores one, in ``send_state``."""
    stored = await store_outbound(db, tenant=tenant, send_state=send_state, **fields)
    return ObjectId(stored["_id"])


def process_env(settings: MaintenanceTaskSettings) -> dict[str, str]:
    return services.process_env(settings, mongodb_timeout_ms=2000) | {
        "MAINTENANCE_RETENTION_PAUSE_SECONDS": "0"
    }
