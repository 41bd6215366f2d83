"""The MongoDB client (PyMongo's asyncio API) and its health probe."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

from inbox_common.health import CheckResult, Status
from inbox_common.settings import redact_url

Document = dict[str, Any]
Database = AsyncDatabase[Document]

# Errors after which the same write can succeed once the store is back.
TRANSIENT_ERRORS: tuple[type[PyMongoError], ...] = (ConnectionFailure,)


def create_client(url: str, *, app_name: str, timeout_ms: int = 5000) -> AsyncMongoClient[Document]:
    """A client with tz-aware datetimes; it connects lazily, so start-up never blocks on it.

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
