"""The commands of ``inbox-ops`` (click) and their dispatch to the modules that do the work.

Every command returns its exit status; a wrong argument exits 2 with click's usage message,
and bad settings exit 2 naming the variables to fix.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar, cast

import click
from pymongo.errors import PyMongoError

from inbox_common.durations import parse_since
from inbox_common.logging import configure_logging
from inbox_common.replay import REPLAY_LIMIT
from inbox_common.settings import load_settings, redact_url
from inbox_common.store.client import Database, create_client
from inbox_common.store.ledger import LedgerFilter
from inbox_common.store.token_cipher import TokenCipher
from inbox_common.tokens import Role
from inbox_maintenance.settings import TASKS
from inbox_ops.channels import rotate_channel_tokens
from inbox_ops.db import db_deploy
from inbox_ops.dead_letters import DEFAULT_SAMPLE, DeadLetterRequest, run_dead_letters
from inbox_ops.jobs import job_campaign_retry
from inbox_ops.maintenance import maintenance_run
from inbox_ops.runbook import RunbookRequest, run_runbook_command, utc_time
from inbox_ops.settings import OpsSettings
from inbox_ops.tokens import token_create, token_list, token_revoke
from inbox_ops.webhooks import webhooks_replay

EXIT_UNREACHABLE = 3
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


T = TypeVar("T")


class _Parsed(click.ParamType[T]):
    """An option's value read by ``parse``, whose ValueError is the usage error's text."""

    def __init__(self, name: str, parse: Callable[[str], T]) -> None:
        self.name = name
        self._parse = parse

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> T:
        if not isinstance(value, str):
            return cast(T, value)  # a default, already of its type
        try:
            return self._parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _positive(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise ValueError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _iso_time(text: str) -> datetime:
    try:
        return utc_time(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time (2026-12-01T09:00:00Z)") from None


POSITIVE = _Parsed("N", _positive)


@click.group(context_settings=CONTEXT)
def cli() -> None:
    """Operate the WhatsApp inbox: migrations, tokens, health, readiness and incident
    snapshots, webhook and dead-letter replays, one-shot jobs and maintenance, and the local
    stack. Settings come from the environment (MONGODB_URL, MONGODB_DB, RABBITMQ_URL, ...)."""


# --- the store's commands -------------------------------------------------------------------


def _with_store(work: Callable[[Database, OpsSettings], Awaitable[int]]) -> int:
    """Run ``work`` against the store of the environment's settings; 3 when it fails."""
    settings = load_settings(OpsSettings)
    configure_logging(settings.log_level, settings.log_format, stream=sys.stderr)

    async def run() -> int:
        client = create_client(
            settings.mongodb_url, app_name="inbox-ops", timeout_ms=settings.mongodb_timeout_ms
        )
        try:
            return await work(client[settings.mongodb_db], settings)
        except PyMongoError as exc:
            click.echo(
                f"MongoDB at {redact_url(settings.mongodb_url)} failed: "
                f"{type(exc).__name__}: {exc}\ncheck MONGODB_URL and that the database is "
                "reachable",
                err=True,
            )
            return EXIT_UNREACHABLE
        finally:
            await client.close()

    return asyncio.run(run())


@cli.command("db-deploy")
@click.option(
    "--check",
    is_flag=True,
    help="Change nothing; exit 1 and name what differs when the schema is behind or ahead.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: applied, ok, problems.")
def db_deploy_command(check: bool, as_json: bool) -> int:
    """Apply the migrations (or --check them)."""
    return _with_store(lambda db, _: db_deploy(db, check=check, as_json=as_json))


@cli.group()
def token() -> None:
    """Manage API tokens."""


@token.command("create")
@click.option("--role", required=True, type=click.Choice([r.value for r in Role]))
@click.option("--tenant", required=True)
@click.option("--name", default="", help="A label to recognise the token by.")
def token_create_command(role: str, tenant: str, name: str) -> int:
    """Print a new token on stdout."""
    return _with_store(lambda db, _: token_create(db, role=role, tenant=tenant, name=name))


@token.command("list")
@click.option("--tenant", help="Only this tenant's.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def token_list_command(tenant: str | None, as_json: bool) -> int:
    """Every token (never the token itself)."""
    return _with_store(lambda db, _: token_list(db, tenant=tenant, as_json=as_json))


@token.command("revoke")
@click.argument("token_id", metavar="ID")
@click.option("--tenant", help="Refuse unless the token is this tenant's.")
def token_revoke_command(token_id: str, tenant: str | None) -> int:
    """Revoke a token by its ID (the id `token list` shows)."""
    return _with_store(lambda db, _: token_revoke(db, token_id=token_id, tenant=tenant))


@cli.group()
def channels() -> None:
    """Channel access tokens at rest."""


@channels.command("new-key")
def channels_new_key() -> int:
    """Print a new key for CHANNEL_TOKEN_KEYS (put it first to rotate)."""
    click.echo(TokenCipher.new_key())
    return 0


@channels.command("rotate-tokens")
def channels_rotate_tokens() -> int:
    """Re-encrypt every channel token with the first key of CHANNEL_TOKEN_KEYS."""
    return _with_store(lambda db, _: rotate_channel_tokens(db))


@cli.group()
def webhooks() -> None:
    """Work with the webhook ledger."""


@webhooks.command("replay")
@click.option("--status", type=click.Choice(["failed", "received"]), default="failed")
@click.option("--error-code", help="Only events that failed with this code.")
@click.option("--phone-number-id", help="Only events for this number.")
@click.option(
    "--since",
    type=_Parsed("WHEN", parse_since),
    help="Only events received at or after WHEN: a duration back from now (30m, 2h, 7d) or "
    "an ISO 8601 time (2026-12-01T09:00:00Z; without an offset, UTC).",
)
@click.option(
    "--limit", type=POSITIVE, default=REPLAY_LIMIT, help="At most this many (oldest first)."
)
@click.option("--dry-run", is_flag=True, help="Count, publish nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: matched, replayed, remaining.")
def webhooks_replay_command(
    status: str,
    error_code: str | None,
    phone_number_id: str | None,
    since: datetime | None,
    limit: int,
    dry_run: bool,
    as_json: bool,
) -> int:
    """Publish failed (or stuck) ledger events to the consumer again."""
    selection = LedgerFilter(
        status=status, error_code=error_code, phone_number_id=phone_number_id, since=since
    )
    return _with_store(
        lambda db, settings: webhooks_replay(
            db, settings, selection, limit=limit, dry_run=dry_run, as_json=as_json
        )
    )


# --- the broker's dead letters --------------------------------------------------------------


def _queue_and_json(command: Callable[..., int]) -> Callable[..., int]:
    command = click.option("--json", "as_json", is_flag=True, help="Print JSON, not text.")(command)
    return click.option(
        "--queue", metavar="Q", help="Only this .dead queue (e.g. wa.inbox.webhooks.dead)."
    )(command)


@cli.group("dead-letters")
def dead_letters() -> None:
    """Read the .dead queues, and move their messages back."""


@dead_letters.command("list")
@click.option(
    "--sample",
    type=POSITIVE,
    default=DEFAULT_SAMPLE,
    help=f"Read at most N messages of each queue for the reasons (default {DEFAULT_SAMPLE}).",
)
@_queue_and_json
def dead_letters_list(sample: int, queue: str | None, as_json: bool) -> int:
    """Every .dead queue of the namespace with its count and its messages' reasons (each
    message read is put back at the tail of its queue, never dropped)."""
    return run_dead_letters(DeadLetterRequest("list", queue=queue, json=as_json, sample=sample))


@dead_letters.command("replay")
@click.option(
    "--reason",
    metavar="TEXT",
    help="Only messages whose reason contains TEXT (its code, such as checksum_mismatch or "
    "delivery_limit, or any part of it); the others stay.",
)
@click.option("--limit", type=POSITIVE, help="Move at most N messages of each queue.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Move nothing; say what would move (with --reason, the messages are read and put "
    "back at the tail).",
)
@_queue_and_json
def dead_letters_replay(
    reason: str | None, limit: int | None, dry_run: bool, queue: str | None, as_json: bool
) -> int:
    """Move dead letters back to their work queue (the .dead queue's name less .dead), each
    once: published with a confirm, then acked."""
    return run_dead_letters(
        DeadLetterRequest(
            "replay", queue=queue, json=as_json, reason=reason, limit=limit, dry_run=dry_run
        )
    )


# --- one-shot jobs and maintenance ----------------------------------------------------------


@cli.group()
def job() -> None:
    """Run a job once, in the foreground."""


@job.command("campaign-retry")
@click.option("--every", type=POSITIVE, default=100, help="A progress line every N jobs.")
def job_campaign_retry_command(every: int) -> int:
    """One retry-worker pass: due retries back to their queue (exit 1 when it failed, 4 while
    a live worker holds the lock)."""
    return job_campaign_retry(every=every)


@cli.group()
def maintenance() -> None:
    """Run maintenance tasks now."""


@maintenance.command(
    "run",
    help="Run TASKs in the foreground (all when none is named): exit 1 when one failed, 3 "
    "when the store or broker is unreachable, 4 while a live replica runs one. "
    f"Tasks: {', '.join(TASKS)}.",
)
@click.argument("tasks", nargs=-1, type=click.Choice(TASKS), metavar="[TASK]...")
def maintenance_run_command(tasks: Sequence[str]) -> int:
    return maintenance_run(tasks)


# --- the runbook's immediate actions --------------------------------------------------------


def _health_targets(command: Callable[..., int]) -> Callable[..., int]:
    command = click.option(
        "--timeout",
        type=click.FloatRange(0, 60, min_open=True),
        metavar="SECONDS",
        help="Seconds to wait for each /api/health (HEALTHCHECK_TIMEOUT_SECONDS, default 5).",
    )(command)
    return click.option(
        "--url",
        multiple=True,
        metavar="SERVICE=URL",
        help="A service's base URL, over WEBHOOK_INGEST_URL, INBOX_API_URL, RETRY_WORKER_URL "
        "and MAINTENANCE_URL (services: webhook-ingest, inbox-api, retry-worker, maintenance).",
    )(command)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_health_targets
def healthcheck(as_json: bool, url: Sequence[str], timeout: float | None) -> int:
    """GET every service's /api/health: exit 0 all ok, 1 one degraded, 2 one down or
    unreachable."""
    return run_runbook_command(
        RunbookRequest("healthcheck", json=as_json, url=url, timeout=timeout)
    )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def readiness(as_json: bool) -> int:
    """The go/no-go after a deploy: settings, store and migrations, broker and queues, retry
    lock, channels, webhook failures, alerts; exit 0 all pass, 1 a warning, 2 a failure."""
    return run_runbook_command(RunbookRequest("readiness", json=as_json))


@cli.command()
@click.option("--out", default="incidents", help="The folder the snapshot's folder goes in.")
@click.option(
    "--started",
    type=_Parsed("ISO8601", _iso_time),
    help="When the incident began (default: the oldest open alert at its severity, or now).",
)
@_health_targets
def incident(out: str, started: datetime | None, url: Sequence[str], timeout: float | None) -> int:
    """Write an incident snapshot (snapshot.json, snapshot.md) with a suggested severity and
    the communication message."""
    return run_runbook_command(
        RunbookRequest("incident", url=url, timeout=timeout, out=out, started=started)
    )


# --- the local stack ------------------------------------------------------------------------


@cli.command()
@click.option("--state-dir", default=".run", help="Where local data and secrets live.")
def dev(state_dir: str) -> int:
    """Run the whole platform locally (what `make run` calls); Ctrl-C stops it."""
    from inbox_ops.devstack import run_dev_stack

    return run_dev_stack(state_dir)


def run(argv: Sequence[str] | None = None) -> int:
    """``inbox-ops`` with ``argv`` (the process's arguments when None); the exit status."""
    try:
        status = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="inbox-ops",
            standalone_mode=False,
        )
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("aborted", err=True)
        return 130
    return status if isinstance(status, int) else 0
