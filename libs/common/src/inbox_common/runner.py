"""Serving an aiohttp application the same way in every service."""

from __future__ import annotations

import uvloop
from aiohttp import web

from inbox_common.logging import get_logger

log = get_logger(__name__)


def serve(app: web.Application, *, host: str, port: int) -> None:
    """Serve ``app`` on uvloop until SIGINT/SIGTERM, then run its cleanup."""
    log.info("service.starting", host=host, port=port)
    web.run_app(
        app,
        host=host,
        port=port,
        access_log=None,
        print=None,
        shutdown_timeout=10,
        loop=uvloop.new_event_loop(),
    )
