"""The hostile-input tests' own fixture: every test here logs exceptions as plain
tracebacks. The store, channel, processor and consumer fixtures come from the shared
plugin (``inbox_testkit.plugin``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def plain_tracebacks() -> Iterator[None]:
    """Log exceptions as plain tracebacks while a hostile test runs.

    With Rich installed (schemathesis needs it), structlog's default console renderer draws
    every logged traceback with its local variables: seconds per crash when the locals are
    the hostile bodies themselves.
    """
    saved = structlog.get_config()
    processors = [
        structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
        if isinstance(processor, structlog.dev.ConsoleRenderer)
        else processor
        for processor in saved["processors"]
    ]
    structlog.configure(processors=processors)
    yield
    structlog.configure(**saved)
