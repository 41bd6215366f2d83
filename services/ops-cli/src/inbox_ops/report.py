"""What the runbook commands print: verdicts, plain-text tables (rich), and the masking of every
secret this process can see (a second line of defence: the commands never read a secret's
value into what they print in the first place)."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from urllib.parse import urlsplit

from rich.console import Console
from rich.table import Table
from rich.text import Text

MASK = "***"
# A table is never wrapped to a terminal's width: its lines are grepped and logged.
_UNBOUNDED = 10_000
# Environment variables whose values are secrets by their name.
_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|_KEYS?$|^KEY", re.I)
# A password inside a URL (``scheme://user:pass@``).
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]*):[^@/\s]+@", re.I)
# Shorter values are not masked everywhere (they would mask ordinary words); the commands
# never print a secret's value anyway.
MIN_MASKED = 8


class Verdict(StrEnum):
    """One readiness check's result."""

    PASS = "pass"  # noqa: S105 - a verdict, not a password
    WARN = "warn"
    FAIL = "fail"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, the last one running free: plain text (no
    colour, no markup read in the cells), the same in a terminal, a pipe or a log."""
    grid = Table(box=None, pad_edge=False, header_style="", show_edge=False)
    for _ in headers:
        grid.add_column(no_wrap=True, overflow="ignore")
    grid.add_row(*(Text(h) for h in headers))
    for row in rows:
        grid.add_row(*(Text(str(cell)) for cell in row))
    grid.show_header = False
    console = Console(
        file=io.StringIO(), width=_UNBOUNDED, color_system=None, highlight=False, emoji=False
    )
    console.print(grid)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    return "\n".join(line.rstrip() for line in text.splitlines())


class Redactor:
    """Masks the secret values of an environment in any text: the values of variables named
    like a secret (each comma-separated part too: two secrets during a rotation), the passwords
    of URLs, and any ``scheme://user:password@`` it meets."""

    def __init__(self, secrets: Iterable[str]) -> None:
        unique = {s for s in secrets if len(s) >= MIN_MASKED}
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted(unique, key=len, reverse=True)

    @classmethod
    def of_environment(
        cls, env: Mapping[str, str] | None = None, *, names: Iterable[str] = ()
    ) -> Redactor:
        """Secrets of ``env`` (the process's environment): variables named like a secret or
        listed in ``names``, and URL passwords in any variable."""
        env = os.environ if env is None else env
        listed = {name.upper() for name in names}
        found: list[str] = []
        for name, value in env.items():
            if name.upper() in listed or _SECRET_NAME.search(name):
                found.append(value)
                found.extend(part.strip() for part in value.split(","))
            if "://" in value:
                found.extend(_url_passwords(value))
        return cls(found)

    def __call__(self, text: str) -> str:
        text = _URL_PASSWORD.sub(rf"\g<scheme>:{MASK}@", text)
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text


def _url_passwords(value: str) -> list[str]:
    passwords = []
    for part in value.split(","):
        try:
            password = urlsplit(part.strip()).password
        except ValueError:
            continue
        if password:
            passwords.append(password)
    return passwords
