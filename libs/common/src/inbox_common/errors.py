"""What happens to work that fails: one error tree for every consumer.

A handler raises one of these to choose the fate of the work it was given:

- :class:`TransientError`: retry later. The dependency is unavailable (the store is down, the
  Cloud API answers 5xx or times out, a rate limit). The work is never dead-lettered for a
  transient cause: it waits (in process, or the consumer pauses, or it moves to the delay
  tier named by ``tier``) until the dependency is back.
- :class:`PermanentError`: the input can never succeed as it is (a broken body, a recipient
  Meta refuses for good). Dead-lettered, or recorded failed, at once with the reason.
- :class:`ChannelStoppedError`: the channel cannot send at all (token expired, account
  restricted): the channel is marked disconnected with the reason, its sends are held and an
  alert is raised.

Anything else a handler raises (``TypeError``, ``KeyError``...) is a bug, not a property of
the input: it is logged with its traceback and counted, and the work is returned to its
queue, never turned into a dead letter as if it were bad input.
"""

from __future__ import annotations


class ProcessingError(Exception):
    """Base of the errors a handler raises to choose the fate of its work.

    ``reason`` is a short machine code (a metric label, a dead-letter header); the message
    says what was wrong and what to do.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class PermanentError(ProcessingError):
    """The work can never succeed as it is: dead-letter it (or record it failed) with the
    reason."""


class TransientError(ProcessingError):
    """A dependency is unavailable: retry later, never dead-letter.

    ``tier`` names the delay tier to wait in (``"5s"``, ``"30s"``, ...); ``None`` means the
    consumer retries in place (and pauses while the outage lasts).
    """

    def __init__(self, reason: str, message: str, *, tier: str | None = None) -> None:
        super().__init__(reason, message)
        self.tier = tier


class ChannelStoppedError(ProcessingError):
    """The channel cannot send (190, 368, 131048, 131031): disconnect it, hold its sends."""

    def __init__(self, reason: str, message: str, *, channel_id: str) -> None:
        super().__init__(reason, message)
        self.channel_id = channel_id
