"""The MongoDB client (PyMongo's asyncio API), its health probe, and the store resource of
a service (:func:`store_ctx`, the database under :data:`DATABASE`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiohttp import web
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

from inbox_common.health import HEALTH_CHECKS, CheckResult, HealthCheck, Status
from inbox_common.service import CleanupCtx
from inbox_common.settings import MongoSettings, redact_url

Document = dict[str, Any]
Database = AsyncDatabase[Document]

DATABASE: web.AppKey[Database] = web.AppKey("database")

# Errors after which the same write can succeed once the store is back.
TRANSIENT_ERRORS: tuple[type[PyMongoError], ...] = (ConnectionFailure,)


def create_client(
    url: str, *, app_name: str, timeout_ms: int = 5000, socket_timeout_ms: int | None = None
) -> AsyncMongoClient[Document]:
    """A client with tz-aware datetimes; it connects lazily, so start-up never blocks on it.

    ``socket_timeout_ms`` bounds the wait for each answer (unless the URL sets
    ``socketTimeoutMS``): the services pass their setting, so a request the store accepted and
    never answered (a half-open connection, a server wedged on one connection after a restart)
    fails as a network timeout, which the services treat as an outage and retry, instead of
    holding its work forever. One-shot commands pass ``None``: an operator's index build may
    take minutes, and the operator can interrupt it.

    Writes are acknowledged only once durable (``w=majority``, journaled) unless the URL
    says otherwise: consumers ack a message after its write, so an acknowledged write that a
    crash could still lose would lose a customer's message. Retryable writes stay as the
    URL says (on by default); every write of the services is idempotent, so
    ``retryWrites=false`` is safe, and the local SecantusDB runs with it, since that
    server's retryable-write bookkeeping slows every write down as it fills.
    """
    given = {k.lower() for k in parse_qs(urlsplit(url).query)}
    durable: dict[str, Any] = {}
    if "w" not in given:
        durable["w"] = "majority"
    if "journal" not in given:
        durable["journal"] = True
    if socket_timeout_ms and "sockettimeoutms" not in given:
        durable["socketTimeoutMS"] = socket_timeout_ms
    return AsyncMongoClient(
        url,
        appname=app_name,
        tz_aware=True,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        **durable,
    )


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` says the store is unreachable rather than the request is wrong."""
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    return isinstance(exc, OperationFailure) and exc.has_error_label("RetryableWriteError")


class MongoProbe:
    """Health check: a ``ping`` round trip."""

    def __init__(self, db: Database, url: str) -> None:
        self._db = db
        self._where = redact_url(url)

    async def __call__(self) -> CheckResult:
        try:
            await self._db.command("ping")
        except PyMongoError as exc:
            return CheckResult(
                status=Status.DOWN, detail=f"MongoDB at {self._where}: {type(exc).__name__}"
            )
        return CheckResult(status=Status.OK)


def store_ctx(settings: MongoSettings, app_name: str, *, critical: bool = True) -> CleanupCtx:
    """The store resource: the client opened lazily, the database under :data:`DATABASE`,
    and the ``mongodb`` health check (``critical``: the service is down without it)."""

    async def store(app: web.Application) -> AsyncIterator[None]:
        client = create_client(
            settings.mongodb_url,
            app_name=app_name,
            timeout_ms=settings.mongodb_timeout_ms,
            socket_timeout_ms=settings.mongodb_socket_timeout_ms,
        )
        db = client[settings.mongodb_db]
        app[DATABASE] = db
        app[HEALTH_CHECKS]["mongodb"] = HealthCheck(
            MongoProbe(db, settings.mongodb_url), critical=critical
        )
        yield
        await client.close()

    return store
