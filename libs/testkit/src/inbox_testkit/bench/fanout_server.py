"""The live group's baseline: a bare aiohttp WebSocket fan-out server on uvloop.

``GET /ws`` takes any client (it checks no token) and greets it with the same ``ready``
frame as inbox-api; ``POST /publish`` sends the request's body, as it is, to every connected
client as one text frame, from the handler itself: no broker, no store, no validation, no
per-client queue. What one Python process does at least to fan an event out to N clients.
"""

from __future__ import annotations

from aiohttp import web

from inbox_testkit.bench.aiohttp_server import serve
from inbox_testkit.bench.cli import server_args

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


def main() -> None:
    args = server_args(__doc__)
    app = web.Application()
    app[CLIENTS] = set()
    app.router.add_get("/ws", connect)
    app.router.add_post("/publish", publish)
    serve(app, args.port)


if __name__ == "__main__":
    main()
