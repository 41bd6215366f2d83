"""What the bare aiohttp servers (``bare_server.py``, ``fanout_server.py``) share: their
``GET /livez`` and how they serve, on uvloop without an access log."""

from __future__ import annotations

import uvloop
from aiohttp import web


async def livez(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def serve(app: web.Application, port: int) -> None:
    """Serve ``app`` (with ``GET /livez`` added) on 127.0.0.1:``port`` until stopped."""
    app.router.add_get("/livez", livez)
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )
