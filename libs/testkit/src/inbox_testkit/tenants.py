"""The tenants, numbers and tokens the tests use."""

from __future__ import annotations

from dataclasses import dataclass

ACME_NUMBER = "106540352242922"
ACME_SECOND_NUMBER = "106540352242933"
GLOBEX_NUMBER = "209870000000001"
UNKNOWN_NUMBER = "999999999999999"
FAULTS_NUMBER = "106540352240001"
# Every number a test sends from: their send queues are deleted with the test's namespace.
SENDING_NUMBERS = (ACME_NUMBER, ACME_SECOND_NUMBER, GLOBEX_NUMBER, FAULTS_NUMBER)


@dataclass(frozen=True, slots=True)
class Tokens:
    acme_agent: str
    acme_admin: str
    globex_agent: str
    globex_admin: str
    superadmin: str


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
