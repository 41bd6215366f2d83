"""The error tree shared by consumers: a permanent error dead-letters, a transient one retries."""

from __future__ import annotations


class ProcessingError(Exception):
    """Base of the errors a message handler raises to choose the message's fate."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class PermanentError(ProcessingError):
    """The message can never succeed as it is: dead-letter it with the reason, then ack."""


class TransientError(ProcessingError):
    """A dependency failed (store or broker outage): retry later, never ack."""
