"""``inbox-ops maintenance run [TASK…]``: maintenance tasks now, in the foreground.

The maintenance service's own runs (``inbox_maintenance.once``), not a copy: each task takes
its lock (a stale one too), runs, is recorded on its lock and releases it; a progress line per
step and a summary go to stdout. The exit statuses are those of ``maintenance --once``: 0 every
task ran clean, 1 a task failed, 2 bad settings, 3 the store or the broker is unreachable, 4 a
live maintenance replica runs one of the tasks.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from inbox_maintenance.once import main_once
from inbox_maintenance.settings import TASKS, MaintenanceTaskSettings
from inbox_ops.settings import ConsoleLogging


class OpsMaintenanceSettings(ConsoleLogging, MaintenanceTaskSettings):
    pass


def add_maintenance_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """``maintenance run [TASK…]`` on ``inbox-ops``'s sub-commands."""
    maintenance = commands.add_parser("maintenance", help="run maintenance tasks now")
    actions = maintenance.add_subparsers(
        dest="maintenance_command", required=True, metavar="ACTION"
    )
    run = actions.add_parser(
        "run",
        help="run tasks in the foreground (all when none is named): exit 1 when one failed, 3 "
        "when the store or broker is unreachable, 4 while a live replica runs one",
    )
    # Not ``choices``: Python 3.11's argparse refuses an empty positional list against them.
    run.add_argument("tasks", nargs="*", type=_task, metavar="TASK", help=", ".join(TASKS))


def _task(name: str) -> str:
    if name not in TASKS:
        raise argparse.ArgumentTypeError(
            f"invalid choice: {name!r} (choose from {', '.join(TASKS)})"
        )
    return name


def maintenance_run(tasks: Sequence[str]) -> int:
    """Run ``tasks`` (every task when empty); the exit status."""
    return main_once(tasks, settings_type=OpsMaintenanceSettings, prog="maintenance")
