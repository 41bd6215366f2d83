"""Case P1 (c), the peer a Python user would pick: pywa's async webhook on FastAPI + uvicorn.

``pywa_async.WhatsApp(server=FastAPI(), ...)`` registers pywa's own ``GET``/``POST`` routes
at ``/webhooks/whatsapp``: the POST reads the body, checks ``X-Hub-Signature-256`` against
the app secret (``validate_updates=True``), answers 200 and runs the update in a background
task (dedupe by body hash, parse, dispatch to the handlers). The one message handler here
only counts the messages it is given; ``GET /bench/count`` returns that count, so the
benchmark can check the handler ran once for every 200. Served by uvicorn with httptools and
uvloop, one process, no access log.
"""

from __future__ import annotations

import os
from typing import Any

# pywa, FastAPI and uvicorn come from the `bench` dependency group, which `make test` does
# not install: mypy then sees them as Any, so nothing here relies on their types.
import uvicorn  # type: ignore[import-not-found, unused-ignore]
from fastapi import FastAPI  # type: ignore[import-not-found, unused-ignore]
from pywa_async.client import WhatsApp  # type: ignore[import-not-found, unused-ignore]
from pywa_async.handlers import MessageHandler  # type: ignore[import-not-found, unused-ignore]

from inbox_testkit.bench.cli import server_args

WEBHOOK_PATH = "/webhooks/whatsapp"


class Counter:
    def __init__(self) -> None:
        self.handled = 0

    async def on_message(self, _client: Any, message: Any) -> None:
        # The update was parsed into a pywa Message and dispatched: count it (touching the
        # parsed fields, as any real handler would).
        if message.id and message.from_user is not None:
            self.handled += 1


def create_app(secret: str, verify_token: str) -> tuple[Any, Counter]:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    wa = WhatsApp(
        server=app,
        app_secret=secret,
        verify_token=verify_token,
        webhook_endpoint=WEBHOOK_PATH,
        validate_updates=True,
        skip_duplicate_updates=True,
    )
    counter = Counter()
    wa.add_handlers(MessageHandler(counter.on_message))

    async def count() -> dict[str, int]:
        return {"handled": counter.handled}

    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    app.add_api_route("/bench/count", count, methods=["GET"])
    app.add_api_route("/livez", livez, methods=["GET"])
    return app, counter


def main() -> None:
    args = server_args(__doc__)
    secret = os.environ["WHATSAPP_WEBHOOK_SECRET"]
    verify_token = os.environ["WHATSAPP_WEBHOOK_VERIFY_TOKEN"]
    app, _ = create_app(secret, verify_token)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
