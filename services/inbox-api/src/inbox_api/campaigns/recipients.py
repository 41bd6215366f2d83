"""A campaign's recipients: each row checked on its own, and the template filled in for each.

A recipient is a ``wa_id`` (the customer's phone number in international format, digits only;
a leading ``+``, spaces, dashes, dots and parentheses are dropped) and the values of the
template's placeholders. A placeholder is ``{{name}}`` anywhere in a string of the template's
``components`` (``{"type": "text", "text": "{{first_name}}"}``); every recipient must give a
value for every placeholder, or its row is refused, saying which is missing.

CSV uploads are read line by line from the request (never whole): a header row naming
``wa_id`` and one column per placeholder (more columns are ignored), then one recipient per
row. A field may be quoted, but a quoted field cannot span lines.
"""

from __future__ import annotations

import csv
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from inbox_common.http import ApiError

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]{1,64})\s*\}\}")
_SEPARATORS = re.compile(r"[\s\-.()]")
WA_ID = re.compile(r"^[1-9][0-9]{6,14}$")
MAX_VALUE = 1024  # Meta's bound on a text parameter
# Refused rows listed in a report (all are counted).
MAX_REFUSED_LISTED = 100
MAX_LINE = 64 * 1024


def placeholders(components: Any) -> set[str]:
    """Every ``{{name}}`` in the template's components."""
    found: set[str] = set()
    if isinstance(components, str):
        found.update(PLACEHOLDER.findall(components))
    elif isinstance(components, list):
        for item in components:
            found |= placeholders(item)
    elif isinstance(components, dict):
        for value in components.values():
            found |= placeholders(value)
    return found


def render(components: Any, variables: Mapping[str, str]) -> Any:
    """The components with every placeholder replaced by the recipient's value."""
    if isinstance(components, str):
        return PLACEHOLDER.sub(lambda m: variables[m.group(1)], components)
    if isinstance(components, list):
        return [render(item, variables) for item in components]
    if isinstance(components, dict):
        return {key: render(value, variables) for key, value in components.items()}
    return components


def normalize_wa_id(value: str) -> str:
    """The digits of a phone number in international format, or ValueError saying why."""
    digits = _SEPARATORS.sub("", value.strip()).removeprefix("+")
    if not WA_ID.match(digits):
        raise ValueError(
            f"wa_id {value[:40]!r} is not a phone number in international format: 7 to 15 "
            "digits with the country code, e.g. 15551234567"
        )
    return digits


@dataclass
class Report:
    """What became of the rows given: accepted (new), duplicates (given before), refused."""

    accepted: int = 0
    duplicates: int = 0
    refused: int = 0
    refused_rows: list[dict[str, Any]] = field(default_factory=list)

    def refuse(self, row: int, reason: str, wa_id: str | None = None) -> None:
        self.refused += 1
        if len(self.refused_rows) < MAX_REFUSED_LISTED:
            self.refused_rows.append({"row": row, "wa_id": wa_id, "reason": reason})

    def document(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "refused": self.refused,
            "refused_rows": self.refused_rows,
        }


class RowChecker:
    """Checks rows against one template's placeholders."""

    def __init__(self, components: Any) -> None:
        self.needed = sorted(placeholders(components))

    def check(self, wa_id: Any, variables: Any) -> dict[str, Any]:
        """The recipient to store, or ValueError saying what is wrong with the row."""
        if not isinstance(wa_id, str) or not wa_id.strip():
            raise ValueError("wa_id is missing")
        number = normalize_wa_id(wa_id)
        if variables is None:
            variables = {}
        if not isinstance(variables, Mapping):
            raise ValueError("variables must be an object of placeholder names to values")
        values: dict[str, str] = {}
        for name in self.needed:
            value = variables.get(name)
            if value is None or (isinstance(value, str) and not value.strip()):
                raise ValueError(f"no value for the template's placeholder {{{{{name}}}}}")
            text = str(value)
            if len(text) > MAX_VALUE:
                raise ValueError(f"the value of {{{{{name}}}}} is over {MAX_VALUE} characters")
            values[name] = text
        return {"wa_id": number, "variables": values}


async def csv_rows(lines: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, dict[str, str]]]:
    """(row number, {column: value}) for each data row of a CSV read line by line; the
    header must name ``wa_id``. Row numbers count the header as row 1."""
    header: list[str] | None = None
    number = 0
    async for raw in lines:
        number += 1
        if len(raw) > MAX_LINE:
            raise ApiError(413, "csv_line_too_long", f"line {number} is over {MAX_LINE} bytes")
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise ApiError(
                400, "csv_not_utf8", f"line {number} is not UTF-8: save the file as UTF-8 CSV"
            ) from None
        if not line.strip():
            continue
        cells = next(csv.reader([line]))
        if header is None:
            header = [cell.strip() for cell in cells]
            if "wa_id" not in header:
                raise ApiError(
                    400,
                    "csv_without_wa_id",
                    "the CSV's first line must be a header naming a wa_id column (and one "
                    f"column per placeholder); it reads {line[:200]!r}",
                )
            continue
        yield number, dict(zip(header, (cell.strip() for cell in cells), strict=False))
    if header is None:
        raise ApiError(400, "csv_empty", "the CSV is empty: send a header line and rows")
