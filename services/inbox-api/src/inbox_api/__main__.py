"""``inbox-api``: read the settings, configure logging, serve."""

from __future__ import annotations

from inbox_api.app import create_app
from inbox_api.settings import InboxApiSettings
from inbox_common.logging import configure_logging
from inbox_common.runner import serve
from inbox_common.settings import load_settings


def main() -> None:
    settings = load_settings(InboxApiSettings)
    configure_logging(settings.log_level, settings.log_format)
    serve(create_app(settings), host=settings.http_host, port=settings.inbox_api_port)


if __name__ == "__main__":
    main()
