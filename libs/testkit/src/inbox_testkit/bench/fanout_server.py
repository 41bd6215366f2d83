"""The live group's baseline: a bare aiohttp WebSocket fan-out server on uvloop.

``GET /ws`` takes any client (it checks no token) and greets it with the same ``ready``
frame as inbox-api; ``POST /publish`` sends the request's body, as it is, to every connected
client as one text frame, from the handler itself: no broker, no store, no validation, no
per-client queue. What one Python process does at least to fan an event out to N clients.
"""

from __future__ import annotations

import argparse
import os

import uvloop
from aiohttp import web

CLIENTS = web.AppKey("clients", set[web.WebSocketResponse])
READY = '{"type":"ready","last_event_id":null}'


async def connect(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    await ws.send_str(READY)
    clients = request.app[CLIENTS]
    clients.add(ws)
    try:
        async for _ in ws:
            pass  # clients only ever close
    finally:
        clients.discard(ws)
    return ws


async def publish(request: web.Request) -> web.Response:
    frame = await request.text()
    clients = request.app[CLIENTS]
    sent = 0
    for ws in list(clients):
        if not ws.closed:
            await ws.send_str(frame)
            sent += 1
    return web.json_response({"sent": sent})


async def livez(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one core")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    app = web.Application()
    app[CLIENTS] = set()
    app.router.add_get("/ws", connect)
    app.router.add_post("/publish", publish)
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
