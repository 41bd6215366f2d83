"""The runbook's immediate actions on ``inbox-ops``: ``healthcheck``, ``readiness`` and
``incident`` (their dispatch; the work is in the modules of each)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from inbox_common.logging import configure_logging
from inbox_common.settings import load_settings
from inbox_ops.healthcheck import healthcheck, parse_overrides
from inbox_ops.incident import SNAPSHOT_JSON, SNAPSHOT_MD, take_snapshot
from inbox_ops.readiness import readiness, secret_variables
from inbox_ops.report import Redactor
from inbox_ops.settings import HealthTargets

# Not an exit status of the checks: the snapshot could not be written.
EXIT_NOT_WRITTEN = 1
EXIT_USAGE = 2


@dataclass(frozen=True, slots=True)
class RunbookRequest:
    """What ``healthcheck``, ``readiness`` or ``incident`` was asked."""

    command: str
    json: bool = False
    url: Sequence[str] = ()
    timeout: float | None = None
    out: str = "incidents"
    started: datetime | None = None


def utc_time(value: str) -> datetime:
    """``--started``: an ISO 8601 time (UTC when it has no offset)."""
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _targets(args: RunbookRequest) -> tuple[dict[str, str], float]:
    settings = load_settings(HealthTargets)
    targets = settings.urls()
    targets.update(parse_overrides(args.url, list(targets)))
    if args.timeout is not None and not 0 < args.timeout <= 60:
        raise ValueError("--timeout: give seconds between 0 and 60")
    return targets, args.timeout or settings.healthcheck_timeout_seconds


def run_runbook_command(args: RunbookRequest) -> int:
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
