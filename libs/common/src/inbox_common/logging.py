"""structlog configured once per process: JSON (orjson) in production, console in dev.

Every log line about a message carries the ids bound with :func:`bind_message_context`, and
the current span's ``trace_id`` and ``span_id``;
values under secret-looking keys and passwords inside URLs never reach the output.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog

from inbox_common.tracing import add_trace_ids

_SECRET_KEY = re.compile(r"secret|token|password|passwd|authorization|api_key|signature", re.I)
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]*):[^@/\s]+@", re.I)
REDACTED = "[redacted]"


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if _SECRET_KEY.search(key):
            event[key] = REDACTED
        elif isinstance(value, str) and "@" in value:
            event[key] = _URL_PASSWORD.sub(r"\g<scheme>:***@", value)
    return event


def _orjson_dumps(obj: Any, default: Any = None) -> bytes:
    return orjson.dumps(obj, default=default or str)


def configure_logging(
    level: str = "INFO", fmt: str = "json", *, stream: TextIO | None = None
) -> None:
    """Route structlog and the standard library's loggers to ``stream`` (stdout) in one format."""
    out = stream or sys.stdout
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_trace_ids,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(
            colors=out.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
        factory: Any = structlog.PrintLoggerFactory(out)
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        factory = structlog.BytesLoggerFactory(out.buffer)
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    stdlib_renderer = (
        renderer
        if fmt == "console"
        else structlog.processors.JSONRenderer(
            serializer=lambda o, **_: orjson.dumps(o, default=str).decode()
        )
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                # Library records carry exc_info (aiormq on a lost connection): render it.
                structlog.processors.format_exc_info,
                stdlib_renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Library chatter (aiormq frames, aiohttp access lines) stays below WARNING.
    root.setLevel(max(logging.getLevelName(level), logging.WARNING))


def bind_message_context(**ids: str | None) -> None:
    """Bind ids (request_id, wamid, sha256…) to every log line of the current task."""
    structlog.contextvars.bind_contextvars(**{k: v for k, v in ids.items() if v is not None})


def get_logger(name: str) -> Any:
    """A structlog logger named ``name``."""
    return structlog.get_logger(name)
