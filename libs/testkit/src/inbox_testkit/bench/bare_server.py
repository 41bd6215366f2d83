"""Case (C), the one-process HTTP ceiling: aiohttp on uvloop answering 200 to the POSTs.

It reads the whole body, like the service, and answers the service's exact 200 body; it
does nothing else (no middleware, no signature check, no broker).
"""

from __future__ import annotations

import argparse
import os

import uvloop
from aiohttp import web

_ACCEPTED = b'{"status":"accepted"}'


async def receive(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=_ACCEPTED, content_type="application/json")


async def livez(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one core")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post("/webhooks/whatsapp", receive)
    app.router.add_get("/livez", livez)
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
