"""The ``X-Hub-Signature-256`` header Meta puts on every webhook POST.

Meta signs the raw body with the app secret (HMAC-SHA256). The check must run on the exact
bytes received, before any parsing, and must accept either of two secrets while the app
secret is being rotated.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence

__all__ = ["SIGNATURE_HEADER", "sign", "verify"]

SIGNATURE_HEADER = "X-Hub-Signature-256"

_PREFIX = "sha256="
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")


def sign(secret: bytes, body: bytes) -> str:
    """Return the header value Meta would send for ``body`` signed with ``secret``."""
    return _PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(body: bytes, header: str | None, secrets: Sequence[bytes]) -> bool:
    """Whether ``header`` is a valid signature of ``body`` under any of ``secrets``.

    Never raises: a missing, malformed or non-hex header is simply not valid. An empty
    secret never verifies, so a misconfigured empty secret cannot accept forged bodies.
    """
    if not header or not header.startswith(_PREFIX):
        return False
    candidate = header[len(_PREFIX) :]
    if not _HEX_DIGEST.fullmatch(candidate):
        return False
    received = bytes.fromhex(candidate)
    valid = False
    # Every secret is checked, without stopping at a match, so timing does not reveal
    # which secret of a rotation pair signed the body.
    for secret in secrets:
        if secret:
            expected = hmac.new(secret, body, hashlib.sha256).digest()
            valid |= hmac.compare_digest(expected, received)
    return valid
