"""Job locks: one worker at a time runs a job, and a dead worker's job is taken over.

One document per job in ``job_locks``, with the runbook's field names::

    {_id: "campaign-retry", lockedBy: "host:pid:random", lockedAt, heartbeatAt,
     consecutiveFailures, lastRunAt, lastSuccessAt, lastError, lastPass, releasedAt}

The invariant: at any instant at most one live worker holds a job. Taking, renewing,
releasing and recording a run are each one compare-and-set on that document (an update whose
filter names the holder, or a free or stale lock), so two workers racing for it cannot both
win. A holder renews its heartbeat well within the stale bound; a lock whose heartbeat is
older than the bound belongs to a dead or cut-off worker and may be taken, so a new daemon or
a one-shot run recovers from a crash by itself.

**Whose clock: the store's.** Every time in the document is ``$$NOW`` of the update that wrote
it, and staleness is judged in the filter of the taking update against the same ``$$NOW``, so
workers on hosts whose clocks disagree still agree on who holds the lock. Dates are compared
as milliseconds (``$toLong``): SecantusDB answers any comparison of a stored date with
``$$NOW`` as false (and fails on date minus date), while it and MongoDB agree on ``$toLong``.

**A holder's own deadline is local.** A worker may act for the job only while its last
successful take or renewal, timed from *before* that request was sent, is younger than the
stale bound by its monotonic clock (:attr:`JobLock.held`); past that, another worker may hold
the job already, so it stops.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from inbox_common.store.client import Database, Document
from inbox_common.store.collections import JOB_LOCKS

__all__ = ["Grant", "JobLock", "LockState", "worker_id"]

ERROR_LIMIT = 500
# A password inside a URL (``scheme://user:pass@``), masked in a recorded error.
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]*):[^@/\s]+@", re.I)


def worker_id() -> str:
    """A worker's name in ``lockedBy``: ``host:pid:random`` (the random part tells apart two
    runs that reuse a pid, as containers do)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _stale(stale_ms: int) -> dict[str, Any]:
    """True where the heartbeat is older than ``stale_ms`` by the store's clock, or missing
    (``$toLong`` of a missing field is null, which sorts below every number)."""
    return {"$lt": [{"$toLong": "$heartbeatAt"}, {"$subtract": [{"$toLong": "$$NOW"}, stale_ms]}]}


def _scrub(error: str) -> str:
    """A recorded error: URL passwords masked, bounded in length."""
    return _URL_PASSWORD.sub(r"\g<scheme>:***@", error)[:ERROR_LIMIT]


@dataclass(frozen=True, slots=True)
class Grant:
    """A successful take or renewal: ``renewed`` when this worker held the lock already,
    ``taken_from`` the worker whose stale lock it took over."""

    renewed: bool
    taken_from: str | None


@dataclass(frozen=True, slots=True)
class LockState:
    """The lock document as read at ``now`` (the store's clock)."""

    job: str
    locked_by: str | None
    locked_at: datetime | None
    heartbeat_at: datetime | None
    consecutive_failures: int
    last_run_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    last_pass: dict[str, Any] | None
    now: datetime
    stale_after: timedelta

    @classmethod
    def of(cls, job: str, doc: Document | None, now: datetime, stale_after: timedelta) -> LockState:
        doc = doc or {}
        return cls(
            job=job,
            locked_by=doc.get("lockedBy"),
            locked_at=doc.get("lockedAt"),
            heartbeat_at=doc.get("heartbeatAt"),
            consecutive_failures=int(doc.get("consecutiveFailures") or 0),
            last_run_at=doc.get("lastRunAt"),
            last_success_at=doc.get("lastSuccessAt"),
            last_error=doc.get("lastError"),
            last_pass=doc.get("lastPass"),
            now=now,
            stale_after=stale_after,
        )

    @property
    def heartbeat_age(self) -> float | None:
        """Seconds since the last heartbeat, by the store's clock."""
        if self.heartbeat_at is None:
            return None
        return max((self.now - self.heartbeat_at).total_seconds(), 0.0)

    @property
    def is_stale(self) -> bool:
        """Held, but its heartbeat is older than the bound: its worker is dead or cut off, and
        the next worker to try takes it over. A released lock is free, not stale."""
        if self.locked_by is None:
            return False
        age = self.heartbeat_age
        return age is None or age > self.stale_after.total_seconds()

    @property
    def held_by_live_worker(self) -> bool:
        return self.locked_by is not None and not self.is_stale

    def document(self) -> dict[str, Any]:
        """The runbook's view of the lock: its fields, ``isStaleLock`` and the ages."""
        return {
            "job": self.job,
            "lockedBy": self.locked_by,
            "lockedAt": self.locked_at,
            "heartbeatAt": self.heartbeat_at,
            "isStaleLock": self.is_stale,
            "heartbeatAgeSeconds": _rounded(self.heartbeat_age),
            "staleAfterSeconds": self.stale_after.total_seconds(),
            "consecutiveFailures": self.consecutive_failures,
            "lastRunAt": self.last_run_at,
            "lastSuccessAt": self.last_success_at,
            "lastError": self.last_error,
            "lastPass": self.last_pass,
            "checkedAt": self.now,
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class JobLock:
    """The lock of ``job`` as worker ``owner`` sees it; see the module docstring."""

    def __init__(self, db: Database, job: str, *, owner: str, stale_after: timedelta) -> None:
        self._locks = db[JOB_LOCKS]
        self.job = job
        self.owner = owner
        self.stale_after = stale_after
        self._stale_ms = int(stale_after.total_seconds() * 1000)
        # When the last successful take or renewal was sent (monotonic), while held.
        self._renewed: float | None = None

    @property
    def held(self) -> bool:
        """Whether this worker may still act for the job (see the module docstring)."""
        age = self.renewed_ago
        return age is not None and age < self.stale_after.total_seconds()

    @property
    def renewed_ago(self) -> float | None:
        """Seconds since the last successful take or renewal was sent; None when not held."""
        return None if self._renewed is None else time.monotonic() - self._renewed

    async def acquire(self) -> Grant | None:
        """Take the lock if it is free or stale, or renew it if this worker holds it; None
        when another live worker holds it."""
        owner = {"$literal": self.owner}
        for _ in range(2):
            sent = time.monotonic()
            before = await self._locks.find_one_and_update(
                {
                    "_id": self.job,
                    "$or": [
                        {"lockedBy": self.owner},
                        {"lockedBy": None},
                        {"$expr": _stale(self._stale_ms)},
                    ],
                },
                [
                    {
                        "$set": {
                            # Every expression of one stage reads the document as it was.
                            "lockedAt": {
                                "$cond": [{"$eq": ["$lockedBy", owner]}, "$lockedAt", "$$NOW"]
                            },
                            "lockedBy": owner,
                            "heartbeatAt": "$$NOW",
                            "consecutiveFailures": {"$ifNull": ["$consecutiveFailures", 0]},
                        }
                    }
                ],
                return_document=ReturnDocument.BEFORE,
            )
            if before is not None:
                self._renewed = sent
                previous = before.get("lockedBy")
                return Grant(
                    renewed=previous == self.owner,
                    taken_from=previous if previous not in (None, self.owner) else None,
                )
            # No match: held by a live worker, or no document yet. Create a free one (no
            # upsert: the filter's $expr and $or give an upsert nothing portable to build
            # from) and try once more; a racer that created it first is no different.
            if not await self._create():
                break
        self._renewed = None
        return None

    async def _create(self) -> bool:
        try:
            await self._locks.insert_one({"_id": self.job, "lockedBy": None})
        except DuplicateKeyError:
            return False
        return True

    async def renew(self) -> bool:
        """Move the heartbeat on, only while this worker holds the lock; False when it lost
        it (then :attr:`held` is False too)."""
        sent = time.monotonic()
        result = await self._locks.update_one(
            {"_id": self.job, "lockedBy": self.owner}, [{"$set": {"heartbeatAt": "$$NOW"}}]
        )
        self._renewed = sent if result.matched_count else None
        return self._renewed is not None

    async def release(self) -> bool:
        """Give the lock up (at shutdown): the next worker takes it at once."""
        self._renewed = None
        result = await self._locks.update_one(
            {"_id": self.job, "lockedBy": self.owner},
            [{"$set": {"lockedBy": {"$literal": None}, "releasedAt": "$$NOW"}}],
        )
        return bool(result.matched_count)

    async def record(
        self, *, ok: bool, error: str | None = None, summary: dict[str, Any] | None = None
    ) -> bool:
        """Record a run (only the holder can): a success resets ``consecutiveFailures`` and
        clears ``lastError``; a failure counts one more and keeps ``error`` (URL passwords
        masked; never pass a secret). Also a heartbeat. False when this worker lost the lock."""
        fields: dict[str, Any] = {
            "lastRunAt": "$$NOW",
            "heartbeatAt": "$$NOW",
            "lastPass": {"$literal": summary},
        }
        if ok:
            fields |= {
                "lastSuccessAt": "$$NOW",
                "consecutiveFailures": {"$literal": 0},
                "lastError": {"$literal": None},
            }
        else:
            fields |= {
                "consecutiveFailures": {"$add": [{"$ifNull": ["$consecutiveFailures", 0]}, 1]},
                "lastError": {"$literal": _scrub(error or "failed")},
            }
        sent = time.monotonic()
        result = await self._locks.update_one(
            {"_id": self.job, "lockedBy": self.owner}, [{"$set": fields}]
        )
        self._renewed = sent if result.matched_count else None
        return bool(result.matched_count)

    async def state(self) -> LockState:
        """The lock as it is now, judged by the store's clock (a missing document is a free
        lock)."""
        cursor = await self._locks.aggregate(
            [{"$match": {"_id": self.job}}, {"$set": {"storeNow": "$$NOW"}}]
        )
        docs = await cursor.to_list()
        if not docs:
            return LockState.of(self.job, None, datetime.now(UTC), self.stale_after)
        doc = docs[0]
        return LockState.of(self.job, doc, doc.pop("storeNow"), self.stale_after)
