"""``inbox-ops maintenance run [TASK…]``: maintenance tasks now, in the foreground.

The maintenance service's own runs (``inbox_maintenance.once``), not a copy: each task takes
its lock (a stale one too), runs, is recorded on its lock and releases it; a progress line per
step and a summary go to stdout. The exit statuses are those of ``maintenance --once``: 0 every
task ran clean, 1 a task failed, 2 bad settings, 3 the store or the broker is unreachable, 4 a
live maintenance replica runs one of the tasks.
"""

from __future__ import annotations

from collections.abc import Sequence

from inbox_maintenance.once import main_once
from inbox_maintenance.settings import MaintenanceTaskSettings
from inbox_ops.settings import ConsoleLogging


class OpsMaintenanceSettings(ConsoleLogging, MaintenanceTaskSettings):
    pass


def maintenance_run(tasks: Sequence[str]) -> int:
    """Run ``tasks`` (every task when empty); the exit status."""
    return main_once(tasks, settings_type=OpsMaintenanceSettings, prog="maintenance")
