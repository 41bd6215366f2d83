"""Case (C), the one-process HTTP ceiling: aiohttp on uvloop answering 200 to the POSTs.

It reads the whole body, like the service, and answers the service's exact 200 body; it
does nothing else (no middleware, no signature check, no broker).
"""

from __future__ import annotations

from aiohttp import web

from inbox_testkit.bench.aiohttp_server import serve
from inbox_testkit.bench.cli import server_args

_ACCEPTED = b'{"status":"accepted"}'


async def receive(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=_ACCEPTED, content_type="application/json")


def main() -> None:
    args = server_args(__doc__)
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post("/webhooks/whatsapp", receive)
    serve(app, args.port)


if __name__ == "__main__":
    main()
