"""``inbox-ops webhooks replay``: send ledger events through the consumer again."""

from __future__ import annotations

import sys

import orjson

from inbox_common.broker.connection import Broker
from inbox_common.broker.publisher import ConfirmedPublisher, PublishFailedError
from inbox_common.broker.topology import Names
from inbox_common.replay import replay_webhooks
from inbox_common.store.client import Database
from inbox_common.store.ledger import Ledger, LedgerFilter
from inbox_ops.settings import OpsSettings


async def webhooks_replay(
    db: Database,
    settings: OpsSettings,
    selection: LedgerFilter,
    *,
    limit: int,
    dry_run: bool,
    as_json: bool = False,
) -> int:
    ledger = Ledger(db)
    matching = await ledger.count(selection)
    if as_json and (dry_run or matching == 0):
        _print_json(matching=matching, replayed=0, dry_run=dry_run, limit=limit)
        return 0
    if dry_run or matching == 0:
        outcome = "nothing replayed (dry run)" if dry_run else "nothing to replay"
        taken = f" (a replay takes the oldest {limit})" if dry_run and matching > limit else ""
        print(f"{matching} event(s) match{taken}; {outcome}")
        return 0
    broker = Broker(settings.rabbitmq_url, name="inbox-ops")
    broker.start()
    try:
        await broker.wait_connected(timeout=10)
        publisher = ConfirmedPublisher(broker, timeout=settings.amqp_publish_timeout)
        await publisher.start()
        replayed = await replay_webhooks(
            ledger, publisher, Names(settings.amqp_namespace), selection, limit=limit
        )
    except (PublishFailedError, ConnectionError) as exc:
        print(f"replay stopped: {exc}; run it again once RabbitMQ is reachable", file=sys.stderr)
        return 4
    finally:
        await broker.close()
    if as_json:
        _print_json(matching=matching, replayed=replayed, dry_run=False, limit=limit)
        return 0
    print(f"replayed {replayed} event(s); watch GET /api/admin/webhook-logs for their new status")
    if matching > replayed:
        print(
            f"{matching - replayed} more event(s) match: run it again once these are processed "
            "(a replay takes the oldest first)"
        )
    return 0


def _print_json(*, matching: int, replayed: int, dry_run: bool, limit: int) -> None:
    """``matched``: the events of the filter; ``replayed``: published now; ``remaining``: what
    a next run would take (a run takes the oldest ``limit``)."""
    answer = {
        "matched": matching,
        "replayed": replayed,
        "remaining": matching - replayed,
        "dry_run": dry_run,
        "limit": limit,
    }
    print(orjson.dumps(answer).decode())
