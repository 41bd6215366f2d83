"""How the report lays out its tables: shared by every group's part of the printed report."""

from __future__ import annotations


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
