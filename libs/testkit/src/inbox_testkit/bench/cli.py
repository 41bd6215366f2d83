"""The command line every child process of the benchmark shares, both sides of it: ``--cpu``
(it pins itself to that core), ``--watch name=pid`` (processes whose CPU use it reports beside
its own) and its one result line, ``BENCH_JSON {...}``, which ``harness.run_child`` reads.

Only the standard library: the bare servers import this, and their memory is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

JSON_MARK = "BENCH_JSON "


def child_command(
    module: str, *args: str, watch: Mapping[str, int] | None = None, cpu: int | None = None
) -> list[str]:
    """``python -m inbox_testkit.bench.<module> args...``, then ``--watch`` for each process
    of ``watch`` and ``--cpu`` when given: what the child's parse_pinned() reads."""
    cmd = [sys.executable, "-m", f"inbox_testkit.bench.{module}", *args]
    cmd += [f"--watch={name}={pid}" for name, pid in (watch or {}).items()]
    if cpu is not None:
        cmd.append(f"--cpu={cpu}")
    return cmd


def parse_pinned(parser: argparse.ArgumentParser, *, watch: bool = True) -> argparse.Namespace:
    """``parser``'s arguments and ``--cpu`` (and ``--watch``), parsed; the process is pinned
    to ``--cpu`` when given."""
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one core")
    if watch:
        parser.add_argument(
            "--watch", action="append", default=[], help="name=pid: report its CPU use"
        )
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    return args


def server_args(description: str | None) -> argparse.Namespace:
    """A bench server's ``--port`` and ``--cpu``, parsed (and the process pinned)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    return parse_pinned(parser, watch=False)


def print_result(result: Any, *, default: Callable[[Any], Any] | None = None) -> None:
    """The result line (``default``: json.dumps's, for values JSON has no type for)."""
    print(JSON_MARK + json.dumps(result, default=default), flush=True)
