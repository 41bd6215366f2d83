"""``inbox-api``: see ``inbox_api.app``."""

from __future__ import annotations

from inbox_api.app import create_app
from inbox_api.settings import InboxApiSettings
from inbox_common.service import run


def main() -> None:
    run(InboxApiSettings, create_app)


if __name__ == "__main__":
    main()
