"""The runbook's immediate actions on ``inbox-ops``: ``healthcheck``, ``readiness`` and
``incident`` (their parsers and their dispatch; the work is in the modules of each)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path

from inbox_common.logging import configure_logging
from inbox_common.settings import load_settings
from inbox_ops.healthcheck import healthcheck, parse_overrides
from inbox_ops.incident import SNAPSHOT_JSON, SNAPSHOT_MD, take_snapshot
from inbox_ops.readiness import readiness, secret_variables
from inbox_ops.report import Redactor
from inbox_ops.settings import HealthTargets

RUNBOOK_COMMANDS = ("healthcheck", "readiness", "incident")
# Not an exit status of the checks: the snapshot could not be written.
EXIT_NOT_WRITTEN = 1
EXIT_USAGE = 2


def _utc_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _url_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--url",
        action="append",
        default=[],
        metavar="SERVICE=URL",
        help="a service's base URL, over WEBHOOK_INGEST_URL, INBOX_API_URL, RETRY_WORKER_URL "
        "and MAINTENANCE_URL (services: webhook-ingest, inbox-api, retry-worker, maintenance)",
    )
    command.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="seconds to wait for each /api/health (HEALTHCHECK_TIMEOUT_SECONDS, default 5)",
    )


def add_runbook_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    health = commands.add_parser(
        "healthcheck",
        help="GET every service's /api/health: exit 0 all ok, 1 one degraded, 2 one down or "
        "unreachable",
    )
    health.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _url_option(health)

    ready = commands.add_parser(
        "readiness",
        help="the go/no-go after a deploy: settings, store and migrations, broker and queues, "
        "retry lock, channels, webhook failures, alerts; exit 0 all pass, 1 a warning, 2 a "
        "failure",
    )
    ready.add_argument("--json", action="store_true", help="print JSON instead of a table")

    incident = commands.add_parser(
        "incident",
        help="write an incident snapshot (snapshot.json, snapshot.md) with a suggested "
        "severity and the communication message",
    )
    incident.add_argument(
        "--out", default="incidents", help="the folder the snapshot's folder goes in"
    )
    incident.add_argument(
        "--started",
        type=_utc_time,
        metavar="ISO8601",
        help="when the incident began (default: the oldest open alert at its severity, or now)",
    )
    _url_option(incident)


def _targets(args: argparse.Namespace) -> tuple[dict[str, str], float]:
    settings = load_settings(HealthTargets)
    targets = settings.urls()
    targets.update(parse_overrides(args.url, list(targets)))
    if args.timeout is not None and not 0 < args.timeout <= 60:
        raise ValueError("--timeout: give seconds between 0 and 60")
    return targets, args.timeout or settings.healthcheck_timeout_seconds


def run_runbook_command(args: argparse.Namespace) -> int:
    """``healthcheck``, ``readiness`` or ``incident``; what they print is masked for every
    secret of the environment."""
    # Library warnings go to stderr, so that stdout is the table (or the JSON) alone.
    configure_logging("WARNING", "console", stream=sys.stderr)
    redact = Redactor.of_environment(names=secret_variables())
    if args.command == "readiness":
        status, text = asyncio.run(readiness(as_json=args.json))
        print(redact(text))
        return status
    try:
        targets, seconds = _targets(args)
    except ValueError as exc:
        print(f"inbox-ops {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "healthcheck":
        status, text = asyncio.run(healthcheck(targets, seconds=seconds, as_json=args.json))
        print(redact(text))
        return status
    out = Path(args.out)
    try:
        folder, severity = asyncio.run(
            take_snapshot(out, targets=targets, seconds=seconds, started=args.started)
        )
    except OSError as exc:
        print(
            f"inbox-ops incident: cannot write the snapshot under {out}: {exc.strerror or exc}; "
            "pass --out with a folder this user can write",
            file=sys.stderr,
        )
        return EXIT_NOT_WRITTEN
    print(f"incident snapshot: {folder / SNAPSHOT_MD} and {folder / SNAPSHOT_JSON}")
    print(
        f"suggested severity: {severity.value if severity else 'none (no incident signal)'}; "
        f"the evidence and the message to send are in {SNAPSHOT_MD}"
    )
    return 0
