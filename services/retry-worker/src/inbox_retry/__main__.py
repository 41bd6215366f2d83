"""``retry-worker``: the daemon (see ``inbox_retry.app``), or ``--once`` for cron."""

from __future__ import annotations

import argparse
import sys

from inbox_common.service import run
from inbox_retry.app import create_app
from inbox_retry.once import main_once
from inbox_retry.settings import RetryWorkerSettings


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="retry-worker",
        description="Bring due retries of outbound sends back to their queue, under the "
        "campaign-retry job lock. Settings come from the environment.",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="take the lock, run one pass and exit (for cron): 0 clean, 1 failed, "
        "3 store or broker unreachable, 4 another live worker holds the lock",
    )
    if parser.parse_args().once:
        sys.exit(main_once())
    run(RetryWorkerSettings, create_app)


if __name__ == "__main__":
    main()
