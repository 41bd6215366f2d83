"""``whatsapp-sandbox``: see ``inbox_sandbox.app``."""

from __future__ import annotations

from inbox_common.service import run
from inbox_sandbox.app import create_app
from inbox_sandbox.settings import SandboxSettings


def main() -> None:
    run(SandboxSettings, create_app)


if __name__ == "__main__":
    main()
