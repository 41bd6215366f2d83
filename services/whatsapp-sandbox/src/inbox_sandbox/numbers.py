"""The business phone numbers the sandbox serves, each with the access token it accepts.

Numbers come from ``SANDBOX_NUMBERS`` at start and from ``POST /sandbox/numbers`` at run time;
a token is compared in constant time and never leaves the registry (listings omit it).
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_WABA_ID", "MAX_NUMBERS", "BusinessNumber", "NumberRegistry", "parse_numbers"]

DEFAULT_WABA_ID = "100000000000009"
MAX_NUMBERS = 10_000
# Meta's standard throughput tier; numbers above it are on the upgraded (1,000 mps) tier.
STANDARD_THROUGHPUT = 80

PHONE_NUMBER_ID = re.compile(r"[0-9]{1,32}")
_DISPLAY_NUMBER = re.compile(r"\+?[0-9][0-9 ()-]{3,30}")


@dataclass(slots=True)
class BusinessNumber:
    """A WhatsApp business phone number as the Cloud API knows it."""

    phone_number_id: str
    access_token: str = field(repr=False)
    waba_id: str = DEFAULT_WABA_ID
    display_phone_number: str = ""
    throughput: int = STANDARD_THROUGHPUT
    verified_name: str = "Sandbox Business"

    def __post_init__(self) -> None:
        if not self.display_phone_number:
            self.display_phone_number = f"+1 555 010 {self.phone_number_id[-4:].rjust(4, '0')}"

    @property
    def webhook_number(self) -> str:
        """The display number as webhooks carry it in ``metadata``: digits only."""
        return "".join(ch for ch in self.display_phone_number if ch.isdigit())

    @property
    def throughput_level(self) -> str:
        return "STANDARD" if self.throughput <= STANDARD_THROUGHPUT else "HIGH"

    def accepts(self, token: str) -> bool:
        """Whether ``token`` is this number's access token (constant time)."""
        return hmac.compare_digest(token.encode(), self.access_token.encode())

    def public(self) -> dict[str, Any]:
        """The number without its token, for listings."""
        return {
            "phone_number_id": self.phone_number_id,
            "waba_id": self.waba_id,
            "display_phone_number": self.display_phone_number,
            "verified_name": self.verified_name,
            "throughput": self.throughput,
        }


def parse_numbers(spec: str, *, throughput: int) -> list[BusinessNumber]:
    """Parse ``phone_number_id:access_token:waba_id:display_phone_number`` items.

    Items are comma-separated; ``waba_id`` and the display number may be left out. Raises
    ``ValueError`` naming the item that is wrong (never echoing its token).
    """
    numbers: list[BusinessNumber] = []
    seen: set[str] = set()
    for position, item in enumerate((part.strip() for part in spec.split(",")), start=1):
        if not item:
            continue
        fields = [value.strip() for value in item.split(":", 3)]
        if len(fields) < 2:
            raise ValueError(
                f"item {position} must be phone_number_id:access_token[:waba_id[:display]]"
            )
        phone_number_id, token = fields[0], fields[1]
        waba_id = fields[2] if len(fields) > 2 and fields[2] else DEFAULT_WABA_ID
        display = fields[3] if len(fields) > 3 else ""
        if not PHONE_NUMBER_ID.fullmatch(phone_number_id):
            raise ValueError(f"item {position}: phone_number_id must be digits")
        if not token:
            raise ValueError(f"item {position}: the access token must not be empty")
        if not PHONE_NUMBER_ID.fullmatch(waba_id):
            raise ValueError(f"item {position}: waba_id must be digits")
        if display and not _DISPLAY_NUMBER.fullmatch(display):
            raise ValueError(f"item {position}: the display number must look like +1 555 010 0001")
        if phone_number_id in seen:
            raise ValueError(f"item {position}: phone_number_id {phone_number_id} is listed twice")
        seen.add(phone_number_id)
        numbers.append(
            BusinessNumber(phone_number_id, token, waba_id, display, throughput=throughput)
        )
    if len(numbers) > MAX_NUMBERS:
        raise ValueError(f"at most {MAX_NUMBERS} numbers")
    return numbers


def valid_display_number(value: str) -> bool:
    return _DISPLAY_NUMBER.fullmatch(value) is not None


class NumberRegistry:
    """The numbers known now, by ``phone_number_id`` (bounded to ``MAX_NUMBERS``)."""

    def __init__(self, numbers: list[BusinessNumber]) -> None:
        self._numbers = {number.phone_number_id: number for number in numbers}

    def get(self, phone_number_id: str) -> BusinessNumber | None:
        return self._numbers.get(phone_number_id)

    def put(self, number: BusinessNumber) -> bool:
        """Register or replace ``number``; return whether it is new.

        Raises ``OverflowError`` when a new number would pass ``MAX_NUMBERS``.
        """
        new = number.phone_number_id not in self._numbers
        if new and len(self._numbers) >= MAX_NUMBERS:
            raise OverflowError(f"the sandbox holds at most {MAX_NUMBERS} numbers")
        self._numbers[number.phone_number_id] = number
        return new

    def all(self) -> list[BusinessNumber]:
        return list(self._numbers.values())
