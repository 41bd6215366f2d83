"""How the report lays out its tables: shared by every group's part of the printed report."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

Json = dict[str, Any]


def render(rows: list[tuple[str, ...]], left: tuple[int, ...] = (0,)) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        cells = [
            cell.ljust(widths[j]) if j in left or j == len(row) - 1 else cell.rjust(widths[j])
            for j, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def mark(good: bool, yes: str = "meets", no: str = "MISSES") -> str:
    return yes if good else no


def cpu_text(used: dict[str, dict[str, float]]) -> str:
    return (
        ", ".join(
            f"{who} run {value['run']:.2f}"
            + (f" wait {value['wait']:.2f}" if "wait" in value else "")
            for who, value in used.items()
        )
        or "-"
    )


def latency_row(
    label: str, values: dict[str, float], note: str, middle: str = "p95"
) -> tuple[str, ...]:
    """A row of a latency table: count, p50, ``middle``, p99 and max (ms), and a note."""
    return (
        label,
        str(values["count"]),
        f"{values['p50']:.1f}",
        f"{values[middle]:.1f}",
        f"{values['p99']:.1f}",
        f"{values['max']:.1f}",
        note,
    )


def case_table(
    name: str, title: str
) -> Callable[[Callable[[Json], list[str]]], Callable[[Json], list[str]]]:
    """A group's table of the one case ``name``, drawn from the case's result: nothing when
    the case did not run, ``title`` and its error when it failed."""

    def decorate(draw: Callable[[Json], list[str]]) -> Callable[[Json], list[str]]:
        @functools.wraps(draw)
        def table(report: Json) -> list[str]:
            case = report["cases"].get(name)
            if case is None:
                return []
            if "error" in case:
                return [title, f"FAILED: {case['error'][:300]}"]
            return draw(case)

        return table

    return decorate
