"""``inbox-ops job campaign-retry``: one pass of the retry-worker, in the foreground.

The retry-worker's own pass (``inbox_retry.once``), not a copy: it takes the job lock (a
stale one too: the runbook's recovery of a stuck worker), runs one pass, prints a progress line
every ``--every`` jobs and a summary, and releases the lock. The exit statuses are those of
``retry-worker --once``: 0 the pass ran clean, 1 it failed, 2 bad settings, 3 the store or the
broker is unreachable, 4 a live worker holds the lock.
"""

from __future__ import annotations

import asyncio
import sys

from pymongo.errors import PyMongoError

from inbox_common.broker.connection import BrokerUnavailableError
from inbox_common.logging import configure_logging
from inbox_common.settings import load_settings
from inbox_ops.settings import ConsoleLogging
from inbox_retry.once import (
    EXIT_HELD,
    EXIT_UNREACHABLE,
    describe_holder,
    exit_status,
    one_pass,
    unreachable,
)
from inbox_retry.settings import RetryJobSettings
from inbox_retry.worker import JOB, PassResult


class OpsJobSettings(ConsoleLogging, RetryJobSettings):
    pass


def job_campaign_retry(*, every: int) -> int:
    settings = load_settings(OpsJobSettings)
    configure_logging(settings.log_level, settings.log_format, stream=sys.stderr)
    print(f"{JOB}: taking the lock (namespace {settings.amqp_namespace!r})")

    def progress(result: PassResult) -> None:
        if result.seen % every == 0:
            print(f"{JOB}: {result.line()}", flush=True)

    try:
        outcome = asyncio.run(one_pass(settings, name=f"inbox-ops job {JOB}", progress=progress))
    except (BrokerUnavailableError, PyMongoError) as exc:
        print(f"{JOB}: {unreachable(settings, exc)}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if outcome.result is None:
        assert outcome.holder is not None
        print(
            f"{JOB}: not run: {describe_holder(outcome.holder)}. A live worker runs the passes "
            "already; see GET /api/jobs/campaign-retry",
            file=sys.stderr,
        )
        return EXIT_HELD
    result = outcome.result
    if outcome.taken_from is not None:
        print(f"{JOB}: took over the stale lock of {outcome.taken_from}")
    if result.ok:
        print(f"{JOB}: done in {result.seconds:.2f}s: {result.line()}")
    else:
        print(f"{JOB}: FAILED after {result.seconds:.2f}s: {result.line()}; {result.error}")
    return exit_status(outcome)
