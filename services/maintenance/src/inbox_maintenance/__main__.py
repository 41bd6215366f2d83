"""``maintenance``: the daemon (see ``inbox_maintenance.app``), or ``--once [TASK…]``."""

from __future__ import annotations

import argparse
import sys

from inbox_common.service import run
from inbox_maintenance.app import create_app
from inbox_maintenance.once import main_once
from inbox_maintenance.settings import TASKS, MaintenanceSettings, MaintenanceTaskSettings


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="maintenance",
        description="Scheduled housekeeping and alert evaluation, consumed from "
        "<namespace>.maintenance.tasks. Settings come from the environment.",
    )
    parser.add_argument(
        "--once",
        nargs="*",
        choices=TASKS,
        metavar="TASK",
        help=f"run these tasks now ({', '.join(TASKS)}; all when none is named) and exit: 0 "
        "clean, 1 a task failed, 3 store or broker unreachable, 4 a live replica runs one",
    )
    once = parser.parse_args().once
    if once is not None:
        sys.exit(main_once(once, settings_type=MaintenanceTaskSettings, prog="maintenance"))
    run(MaintenanceSettings, create_app)


if __name__ == "__main__":
    main()
