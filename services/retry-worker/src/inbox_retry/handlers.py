"""The jobs API: ``GET /api/jobs/campaign-retry?token=…`` (the lock, the delay tiers, the next
due retry) and ``POST`` on the same path (a pass now: 202, or 409 while another worker holds
the lock).

The token travels in the query string, as the runbook has it, and is compared in constant
time. Nothing logs a request's query: the kit's lines name ``request.path`` only, its
metrics label a request by its route template, and ``serve`` runs without an access log.
"""

from __future__ import annotations

import hmac

from aiohttp import web
from pydantic import SecretStr
from pymongo.errors import PyMongoError

from inbox_common.http import ApiError, json_response
from inbox_retry.keys import WORKER
from inbox_retry.worker import JOB

JOBS_PATH = f"/api/jobs/{JOB}"


class JobsApi:
    def __init__(self, token: SecretStr) -> None:
        self._token = token.get_secret_value().encode()

    def _authorize(self, request: web.Request) -> None:
        given = request.query.get("token")
        if not given:
            raise ApiError(
                401, "unauthorized", "a token is required: add ?token=<JOBS_API_TOKEN> to the URL"
            )
        if not hmac.compare_digest(given.encode("utf-8", "replace"), self._token):
            raise ApiError(
                401,
                "unauthorized",
                "the token is not valid: use the JOBS_API_TOKEN the retry-worker runs with",
            )

    async def status(self, request: web.Request) -> web.Response:
        self._authorize(request)
        try:
            status = await request.app[WORKER].status()
        except PyMongoError as exc:
            raise _store_unavailable(exc) from None
        return json_response(status)

    async def trigger(self, request: web.Request) -> web.Response:
        self._authorize(request)
        worker = request.app[WORKER]
        if not worker.ready:
            raise ApiError(
                503,
                "broker_unavailable",
                "this worker is not connected to RabbitMQ, so no pass can run here; see "
                "/api/health",
            )
        try:
            holder = await worker.request_pass()
        except PyMongoError as exc:
            raise _store_unavailable(exc) from None
        if holder is not None:
            since = holder.locked_at.isoformat() if holder.locked_at else "an unknown time"
            raise ApiError(
                409,
                "lock_held",
                f"{holder.locked_by} holds the {JOB} lock since {since} and runs the passes; "
                "nothing was started here",
                {
                    "lockedBy": holder.locked_by,
                    "lockedAt": since,
                    "heartbeatAgeSeconds": holder.heartbeat_age,
                },
            )
        return json_response({"status": "accepted", "worker": worker.lock.owner}, status=202)


def _store_unavailable(exc: PyMongoError) -> ApiError:
    return ApiError(
        503,
        "store_unavailable",
        f"MongoDB did not answer ({type(exc).__name__}); check /api/health and MONGODB_URL",
    )
