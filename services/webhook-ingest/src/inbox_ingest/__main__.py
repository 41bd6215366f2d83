"""``webhook-ingest``: see ``inbox_ingest.app``."""

from __future__ import annotations

from inbox_common.service import run
from inbox_ingest.app import create_app
from inbox_ingest.settings import IngestSettings


def main() -> None:
    run(IngestSettings, create_app)


if __name__ == "__main__":
    main()
