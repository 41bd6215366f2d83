"""The errors inbox-api's services raise; the library's error middleware answers each with
the JSON error shape and its status."""

from __future__ import annotations

from typing import Any

from inbox_common.http import ApiError


class NotFoundError(ApiError):
    """Absent, or another tenant's (the same answer: a 404 never tells them apart)."""

    def __init__(self, what: str, ident: object) -> None:
        super().__init__(404, "not_found", f"no {what} with id {ident}")


class ConflictError(ApiError):
    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(409, "conflict", message, details)
