"""``inbox-ops``: see ``inbox-ops --help``."""

from __future__ import annotations

import sys

from inbox_ops.cli import run


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
