"""The argument parser and the dispatch of ``inbox-ops``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from datetime import datetime

from pymongo.errors import PyMongoError

from inbox_common.durations import parse_since
from inbox_common.logging import configure_logging
from inbox_common.replay import REPLAY_LIMIT
from inbox_common.settings import load_settings, redact_url
from inbox_common.store.client import create_client
from inbox_common.store.ledger import LedgerFilter
from inbox_common.store.token_cipher import TokenCipher
from inbox_common.tokens import Role
from inbox_ops.channels import rotate_channel_tokens
from inbox_ops.db import db_deploy
from inbox_ops.dead_letters import add_dead_letter_commands, run_dead_letters
from inbox_ops.jobs import job_campaign_retry
from inbox_ops.maintenance import add_maintenance_commands, maintenance_run
from inbox_ops.runbook import RUNBOOK_COMMANDS, add_runbook_commands, run_runbook_command
from inbox_ops.settings import OpsSettings
from inbox_ops.tokens import token_create, token_list, token_revoke
from inbox_ops.webhooks import webhooks_replay


def _since(value: str) -> datetime:
    try:
        return parse_since(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(value: str) -> int:
    if not value.isascii() or not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of at least 1")
    return int(value)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="inbox-ops",
        description="Operate the WhatsApp inbox: migrations, tokens, health, readiness and "
        "incident snapshots, webhook and dead-letter replays, one-shot jobs and maintenance, "
        "and the local stack. "
        "Settings come from the environment (MONGODB_URL, MONGODB_DB, ...).",
    )
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    deploy = commands.add_parser("db-deploy", help="apply the migrations (or --check them)")
    deploy.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 1 and name what differs when the schema is behind or ahead",
    )

    token = commands.add_parser("token", help="manage API tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = token_commands.add_parser("create", help="print a new token on stdout")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", default="", help="a label to recognise the token by")
    listing = token_commands.add_parser("list", help="every token (never the token itself)")
    listing.add_argument("--tenant", help="only this tenant's")
    revoke = token_commands.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("token_id", metavar="ID", help="the id `token list` shows")
    revoke.add_argument("--tenant", help="refuse unless the token is this tenant's")

    channels = commands.add_parser("channels", help="channel access tokens at rest")
    channel_commands = channels.add_subparsers(
        dest="channels_command", required=True, metavar="ACTION"
    )
    channel_commands.add_parser(
        "new-key", help="print a new key for CHANNEL_TOKEN_KEYS (put it first to rotate)"
    )
    channel_commands.add_parser(
        "rotate-tokens",
        help="re-encrypt every channel token with the first key of CHANNEL_TOKEN_KEYS",
    )

    webhooks = commands.add_parser("webhooks", help="work with the webhook ledger")
    webhook_commands = webhooks.add_subparsers(
        dest="webhooks_command", required=True, metavar="ACTION"
    )
    replay = webhook_commands.add_parser(
        "replay", help="publish failed (or stuck) ledger events to the consumer again"
    )
    replay.add_argument("--status", choices=["failed", "received"], default="failed")
    replay.add_argument("--error-code", help="only events that failed with this code")
    replay.add_argument("--phone-number-id", help="only events for this number")
    replay.add_argument(
        "--since",
        type=_since,
        metavar="WHEN",
        help="only events received at or after WHEN: a duration back from now (30m, 2h, 7d) "
        "or an ISO 8601 time (2026-12-01T09:00:00Z; without an offset, UTC)",
    )
    replay.add_argument(
        "--limit", type=_positive, default=REPLAY_LIMIT, help="at most this many (oldest first)"
    )
    replay.add_argument("--dry-run", action="store_true", help="count, publish nothing")
    add_dead_letter_commands(commands)

    job = commands.add_parser("job", help="run a job once, in the foreground")
    jobs = job.add_subparsers(dest="job", required=True, metavar="JOB")
    retry = jobs.add_parser(
        "campaign-retry",
        help="one retry-worker pass: due retries back to their queue (exit 1 when it failed, "
        "4 while a live worker holds the lock)",
    )
    retry.add_argument("--every", type=int, default=100, help="a progress line every N jobs")
    add_maintenance_commands(commands)

    add_runbook_commands(commands)

    dev = commands.add_parser(
        "dev", help="run the whole platform locally (what `make run` calls); Ctrl-C stops it"
    )
    dev.add_argument("--state-dir", default=".run", help="where local data and secrets live")
    return root


async def _with_store(args: argparse.Namespace, settings: OpsSettings) -> int:
    client = create_client(
        settings.mongodb_url, app_name="inbox-ops", timeout_ms=settings.mongodb_timeout_ms
    )
    db = client[settings.mongodb_db]
    try:
        if args.command == "db-deploy":
            return await db_deploy(db, check=args.check)
        if args.command == "webhooks":
            selection = LedgerFilter(
                status=args.status,
                error_code=args.error_code,
                phone_number_id=args.phone_number_id,
                since=args.since,
            )
            return await webhooks_replay(
                db, settings, selection, limit=args.limit, dry_run=args.dry_run
            )
        if args.command == "channels":
            return await rotate_channel_tokens(db)
        action = args.token_command
        if action == "list":
            return await token_list(db, tenant=args.tenant)
        if action == "revoke":
            return await token_revoke(db, token_id=args.token_id, tenant=args.tenant)
        return await token_create(db, role=args.role, tenant=args.tenant, name=args.name)
    except PyMongoError as exc:
        print(
            f"MongoDB at {redact_url(settings.mongodb_url)} failed: {type(exc).__name__}: {exc}\n"
            "check MONGODB_URL and that the database is reachable",
            file=sys.stderr,
        )
        return 3
    finally:
        await client.close()


def run(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command in RUNBOOK_COMMANDS:
        return run_runbook_command(args)
    if args.command == "dev":
        from inbox_ops.devstack import run_dev_stack

        return run_dev_stack(args.state_dir)
    if args.command == "job":
        return job_campaign_retry(every=max(args.every, 1))
    if args.command == "maintenance":
        return maintenance_run(args.tasks)
    if args.command == "dead-letters":
        return run_dead_letters(args)
    if args.command == "channels" and args.channels_command == "new-key":
        print(TokenCipher.new_key())
        return 0
    settings = load_settings(OpsSettings)
    configure_logging(settings.log_level, settings.log_format, stream=sys.stderr)
    return asyncio.run(_with_store(args, settings))
